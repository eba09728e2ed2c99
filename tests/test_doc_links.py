"""Every `docs/*.md#anchor` the code, tests and docs cite names a heading that exists (GitHub's slug rules)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"(docs/[\w.-]+\.md)#([\w-]+)")
SEARCHED = ("lab", "app", "tests", "docs", "bench", "scripts", "templates", "static")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", heading.strip().lower())  # emphasis marks; a_name keeps its _
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", doc.read_text(), re.M)}


def citations() -> list[tuple[Path, str, str]]:
    files = [ROOT / "README.md"] + [p for d in SEARCHED for p in (ROOT / d).rglob("*") if p.is_file()]
    found = []
    for path in files:
        if path.suffix not in {".py", ".md", ".js", ".html", ".sh"}:
            continue
        for m in CITE.finditer(path.read_text(errors="replace")):
            found.append((path, m.group(1), m.group(2)))
    return found


def test_slug_follows_github() -> None:
    assert slug("libnbd's rules") == "libnbds-rules"
    assert slug("Emulation moved into the core") == "emulation-moved-into-the-core"
    assert slug("The `nozero` filter: modes") == "the-nozero-filter-modes"
    assert slug("expected_s for copies: _two_ ways") == "expected_s-for-copies-two-ways"


def test_every_cited_anchor_exists() -> None:
    cited = citations()
    assert any(doc == "docs/design.md" for _, doc, _ in cited), "the code should cite docs/design.md"
    missing = [f"{p.relative_to(ROOT)} -> {doc}#{a}" for p, doc, a in cited
               if not (ROOT / doc).exists() or a not in anchors(ROOT / doc)]
    assert not missing, "citations of headings that do not exist:\n" + "\n".join(missing)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_in_the_docs_leads_somewhere() -> None:
    """README.md and docs/*.md: each relative link names a file that exists and, with #anchor, a heading in it
    (a section moved out of the README must leave its links true)."""
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in LINK.finditer(doc.read_text()):
            target = m.group(1)
            if re.match(r"^[a-z][a-z+]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_stays_a_guide() -> None:
    """A user's guide of at most about 250 lines; the lab notebook lives in docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
