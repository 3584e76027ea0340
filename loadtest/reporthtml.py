"""report.html: one self-contained file per run (and per sweep) that people open in a browser and pass around.

It is the Markdown report (the one source of the layout: :mod:`loadtest.reportmd`, :mod:`loadtest.sweepreport`)
rendered by markdown-it-py (CommonMark plus tables, raw HTML in the text escaped), with every image the report
names read from its folder and inlined as a ``data:`` URI, and a small stylesheet. No script, no font, nothing
fetched: a Content-Security-Policy allows only inline styles and ``data:`` images, so a browser shows exactly
what the file holds (and a missing plot shows as missing, not as a request elsewhere). Pure, apart from reading
the images.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["CSP", "inline_images", "render_html"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.(png|svg))\)")
_MIME = {"png": "image/png", "svg": "image/svg+xml"}
_ALERT = re.compile(r"^> \[!WARNING\]\n", re.MULTILINE)

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.6rem; margin-top: 0; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; display: block;
  overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; } th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
code, pre { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
blockquote { margin: 1rem 0; padding: 0.5rem 1rem; border-left: 4px solid #bf8700; background: #fff8c5; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1.25rem; border: 1px solid #d0d7de; }
"""


def inline_images(markdown: str, folder: Path) -> str:
    """``![alt](name.png)`` for each image in ``folder`` becomes ``![alt](data:image/png;base64,...)``; an image
    that is not there keeps its name (and shows as missing)."""

    def inline(m: re.Match[str]) -> str:
        path = folder / m.group(2)
        if "/" in m.group(2) or not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{m.group(1)}](data:{_MIME[m.group(3)]};base64,{data})"

    return _IMAGE.sub(inline, markdown)


def render_html(markdown: str, *, title: str, folder: Path | None = None) -> str:
    """The whole HTML document for a Markdown report; its images inlined from ``folder``."""
    if folder is not None:
        markdown = inline_images(markdown, folder)
    markdown = _ALERT.sub("", markdown)  # GitHub's alert marker: every blockquote of a report is a warning
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
