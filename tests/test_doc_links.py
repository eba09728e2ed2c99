"""Every `docs/*.md#anchor` the code, tests and docs cite names a heading that exists (GitHub's slug rules)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITE = re.compile(r"(docs/[\w.-]+\.md)#([\w-]+)")
SEARCHED = ("lab", "app", "tests", "docs", "bench", "scripts", "templates", "static")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
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


def test_every_cited_anchor_exists() -> None:
    cited = citations()
    assert any(doc == "docs/design.md" for _, doc, _ in cited), "the code should cite docs/design.md"
    missing = [f"{p.relative_to(ROOT)} -> {doc}#{a}" for p, doc, a in cited
               if not (ROOT / doc).exists() or a not in anchors(ROOT / doc)]
    assert not missing, "citations of headings that do not exist:\n" + "\n".join(missing)
