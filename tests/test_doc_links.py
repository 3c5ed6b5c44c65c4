"""Every relative link in README.md and docs/*.md points at a file of this repository (and, into a Markdown page,
at a heading that exists): a clone has nothing outside the repository, so a link that leaves it is broken."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")
# [text](target) with an optional "title"; the text may itself hold a code span such as [`docs/x.md`](docs/x.md).
_INLINE = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def links(text: str) -> list[str]:
    """The link targets of a Markdown text, outside code: fenced blocks are dropped, and code spans lose their
    brackets and parentheses (so a code span can be a link's text, never a link)."""
    text = _FENCE.sub("", text)
    text = _CODE.sub(lambda m: re.sub(r"[\[\]()]", "", m.group(0)), text)
    return [m.group(1) for m in _INLINE.finditer(text)] + [m.group(1) for m in _REFERENCE.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code marks and punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The heading anchors of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(page: Path) -> list[str]:
    """Why each relative link of ``page`` is broken (empty when all resolve inside the repository)."""
    problems = []
    for target in links(page.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT):
            problems.append(f"{target}: leaves the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_into_the_repository(page):
    assert broken(page) == []


def test_the_readme_links_the_design_notes_in_the_repository():
    targets = links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/design.md" in targets
    assert (ROOT / "docs" / "design.md").is_file()
    assert not any("shared/DESIGN" in t for t in targets)


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    """The checker itself: each kind of broken link is reported, good ones and code are left alone."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The `serve` section (issue 8)\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "See [the other page](other.md), [its section](other.md#the-serve-section-issue-8), [top](#a-title),\n"
        "[`missing.md`](missing.md), [outside](../../shared/DESIGN.md), [bad anchor](other.md#nope),\n"
        "[web](https://example.com/x.md) and `[not a link](nowhere.md)`.\n\n"
        "```\n[in a fence](fenced.md)\n```\n\n# A title\n\n[ref]: gone.md\n"
    )
    assert broken(page) == [
        "missing.md: no such file",
        "../../shared/DESIGN.md: leaves the repository",
        "other.md#nope: no heading #nope in docs/other.md",
        "gone.md: no such file",
    ]
