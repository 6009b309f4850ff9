"""Every relative link in the README and in ``docs/`` reaches a file that exists, and every ``#anchor`` in such a
link names a heading of the file it points to (GitHub's anchors: lower case, spaces to '-', punctuation other
than '-' and '_' dropped, a repeated heading numbered ``-1``, ``-2``, ...)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\n[ \t]*\n).)+?\1", re.S)  # may wrap, never across a blank line
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose(text: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked: neither holds a link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(lines))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stands for the link
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_' (Unicode ones too)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of a markdown file, numbered as GitHub numbers repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The targets of the markdown links and images of a file (code excluded)."""
    return [m.group(1) for m in LINK.finditer(prose(path.read_text(encoding="utf-8")))]


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file is missing, or whose anchor is no heading of its target."""
    broken = []
    for target in links(path):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading '#{anchor}' in {destination.name}")
    return broken


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_documents_link_to_each_other():
    targets = {target.partition("#")[0] for target in links(ROOT / "README.md")}
    for name in ("compatibility", "benchmarks", "how-it-works", "development"):
        assert f"docs/{name}.md" in targets
        assert (ROOT / "docs" / f"{name}.md").exists()


def test_slugs_follow_github():
    assert slug("Branch ↔ layers") == "branch--layers"
    assert slug("AUTOMATIC1111 1.8 and 1.9") == "automatic1111-18-and-19"
    assert slug("Split cond/uncond, NGMS, skip_early") == "split-conduncond-ngms-skip_early"
    assert slug("The `DeepCache error` line") == "the-deepcache-error-line"


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section) [ok](other.md#a-section-1) [ok](#here) [web](https://example.com)\n"
                    "## Here\n\n```\n[not a link](missing.md)\n```\n"
                    "`[not a link](missing.md)` and `a span\n[that wraps](missing.md)`\n"
                    "[gone](missing.md) [no anchor](other.md#nowhere) ![img](missing.png)\n")
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        "other.md#nowhere: no heading '#nowhere' in other.md",
        f"missing.png: no file {tmp_path / 'missing.png'}",
    ]
