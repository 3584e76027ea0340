"""report.html: the Markdown report as one self-contained page, checked as text and in a real browser."""

from __future__ import annotations

import re

import trio

from loadtest import report
from loadtest.reporthtml import CSP, render_html
from tests.loadtest.test_report import make_run
from tests.support.browser import browser_test, chromium


def test_markdown_becomes_one_page_with_its_images_inline_and_text_escaped(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG fake")
    md = ("# Run <script>alert(1)</script>\n\n> [!WARNING]\n> ⚠ 3 of 6 sessions failed  \n\n| Metric | relay |\n"
          "|---|---:|\n| Completed | 3 |\n\n![a](a.png)\n![gone](missing.png)\n![up](../up.png)\n")
    page = render_html(md, title="t <1>", folder=tmp_path)
    assert page.startswith("<!doctype html>") and f'content="{CSP}"' in page
    assert "<title>t &lt;1&gt;</title>" in page
    assert "&lt;script&gt;" in page and "<script" not in page  # raw HTML in the text is escaped
    assert '<img src="data:image/png;base64,iVBORyBmYWtl" alt="a"' in page
    assert 'src="missing.png"' in page and 'src="../up.png"' in page  # only files of the folder are read
    assert "[!WARNING]" not in page and "<blockquote>" in page
    assert '<td style="text-align:right">3</td>' in page


def test_a_run_writes_report_html_beside_report_md(tmp_path):
    result = report.write_outputs(tmp_path, make_run())
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(report.PLOT_FILES)
    assert result["command_line"] in page.replace("&quot;", '"')
    machine, versions = result["machine"], result["versions"]
    for fact in (machine["python"], machine["hostname"], f"trio {versions['trio']}", "Environment"):
        assert fact in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing fetched from elsewhere


def _open(path) -> dict:
    """Blocking: the page in chromium; what a reader sees of it."""
    from selenium.webdriver.common.by import By

    with chromium(logs=True) as driver:
        driver.get(path.as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        return {
            "title": driver.title,
            "h2": [h.text for h in driver.find_elements(By.TAG_NAME, "h2")],
            "images": [(i.get_attribute("alt"), driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", i)) for i in images],
            "cells": [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td")],
            "console": [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")],
        }


@browser_test
async def test_report_html_in_a_real_browser(tmp_path):
    report.write_outputs(tmp_path, make_run(slo={"ttfc_ms": 500}))
    seen = await trio.to_thread.run_sync(_open, tmp_path / "report.html")
    assert seen["title"].startswith("moonrelay load test")
    assert {"Reproduce", "Headline", "Per token", "Environment", "Plots", "Metric definitions"} <= set(seen["h2"])
    assert [alt for alt, _ in seen["images"]] == [f.removesuffix(".png") for f in report.PLOT_FILES]
    assert all(width and width > 100 for _, width in seen["images"]), seen["images"]  # decoded, drawn
    assert "Completed" in seen["cells"]
    assert seen["console"] == []  # no blocked fetch, no error
