"""The documentation holds together: every relative Markdown link in README.md, SECURITY.md and docs/*.md
points at a file of the repository (and, with a ``#fragment``, at a heading of that file, by GitHub's
anchor rule); README.md stays a front door (at most 220 lines) that links the domain page; and nothing
points outside the repository at ``../shared`` but optional validation data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted([README, ROOT / "SECURITY.md", *(ROOT / "docs").glob("*.md")])

#: [text](target) and ![alt](target), outside code; the target ends at whitespace or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`]*`")


def _unfenced(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are examples, not links)."""
    return "\n".join(_INLINE_CODE.sub("", line) for line in _unfenced(text))


def relative_links(path: Path) -> list[str]:
    """The link targets of ``path`` that are relative: no scheme (``https:``, ``mailto:``); a link to a
    heading of the same page is kept as ``#anchor``."""
    targets = _LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation except ``-`` and ``_`` dropped,
    spaces turned into ``-``."""
    text = _INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of the headings of ``path`` (code blocks skipped)."""
    return {github_anchor(line.lstrip("#")) for line in _unfenced(path.read_text(encoding="utf-8"))
            if re.match(r"^#{1,6} ", line)}


def broken_links(path: Path) -> list[str]:
    """The relative links of ``path`` whose file, or whose heading anchor, does not exist."""
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    return broken


def test_the_link_checker_finds_a_dead_link_and_a_dead_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with punctuation\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#a-code-heading-with-punctuation) [gone](missing.md)\n"
                    "[bad](other.md#nowhere) [web](https://example.com/x.md) `[code](nowhere.md)`\n"
                    "```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(page) == [f"missing.md (no file {tmp_path / 'missing.md'})",
                                  "other.md#nowhere (no heading #nowhere in other.md)"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_readme_is_a_front_door_that_links_every_docs_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail to docs/"
    assert (ROOT / "docs" / "domain.md").is_file()
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in DOCS if p != README and p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_quickstart_keeps_its_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/cs-pipeline demo" in text
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest" in ci


def test_docs_point_at_shared_only_for_optional_validation_data():
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
                 for p in DOCS for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if "../shared" in line and "../shared/data/" not in line]
    assert offenders == []
