"""The docs a newcomer reads first: a README that starts with the two commands and stays short, and links that lead
somewhere (every relative link names an existing file, and every ``#anchor`` a heading in it)."""

import re
from pathlib import Path

import pytest

from tests.support import ROOT

README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024  # what people write; the results section bench.summary generates has its own budget
GENERATED_MAX_BYTES = 2560
FIRST_COMMANDS = ("./dev loadtest --concurrency 10000", "./dev test")
DOCS = [README, *(ROOT / "results" / name for name in ("README.md", "SUMMARY.md", "TREND.md")),
        *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target), not inside inline code; [label]: target definitions.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DEFINITION = re.compile(r"^\[[^\]]+\]:\s*(\S+)", re.M)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def links(text: str) -> list[str]:
    text = CODE.sub("", text)
    return INLINE_LINK.findall(text) + DEFINITION.findall(text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links as their text), lowercased, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no such heading")
    return broken


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[0].startswith("# ")
    block = lines[lines.index("```sh") + 1 :]
    assert lines.index("```sh") == 2, "the command block comes right after the title"
    assert [line.split("#")[0].strip() for line in block[:2]] == list(FIRST_COMMANDS)


def test_readme_is_short():
    from bench.summary import END, START

    text = README.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    generated = len(text[start:end].encode())
    size = len(text.encode()) - generated
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes: move reference material to docs/"
    assert generated <= GENERATED_MAX_BYTES, f"the generated results section is {generated} bytes: trim bench.summary"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(path):
    assert links(path.read_text()), "a doc the README points to links back"
    assert broken_links(path) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Some section, `here`\n\n```sh\n# not a heading\n```\n")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md) [ok](a.md#some-section-here) [ok](#local) [gone](missing.md) [bad](a.md#nowhere)\n"
        "`[code](x.md)` [web](https://example.com) [bad](a.md#not-a-heading)\n\n## Local\n\n[ref]: nothere.md\n"
    )
    assert broken_links(doc) == [
        "missing.md: no such file",
        "a.md#nowhere: no such heading",
        "a.md#not-a-heading: no such heading",
        "nothere.md: no such file",
    ]


def test_the_readme_example_is_a_config_the_relay_starts_with(tmp_path) -> None:
    """README's complete example: the TOML loads and validates, its deployments and fallbacks are what it says, and
    the keys-file line it shows parses with every limit."""
    from proxy.config import load
    from proxy.limits import parse_keys_file

    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Exposing the relay.*?```toml\n(.*?)```", text, re.S)
    assert block is not None
    path = tmp_path / "moonrelay.toml"
    path.write_text(block.group(1))
    settings = load({}, {}, str(path))
    assert settings.state.startswith("redis://") and settings.workers == 2
    configs = {c.name: c for c in settings.routes}
    assert [configs["moonshot-a"].weight, configs["moonshot-b"].weight] == [3, 1]
    assert configs["moonshot-a"].fallbacks == ("openai",) and configs["moonshot-a"].max_concurrent == 1000
    line = re.search(r"# lines: KEY (.*)", block.group(1))
    assert line is not None
    [(key, limits)] = parse_keys_file("mr-example-key " + line.group(1))
    assert key == "mr-example-key"
    assert (limits.rpm, limits.tpm, limits.concurrent, limits.budget) == (60, 40000, 5, 2000000)
