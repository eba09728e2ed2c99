"""The pages' JavaScript shares one `$` (static/js/format.js) and one request helper (api.js's
`request`: the presenter's token, errors as sentences). A page that defines its own, or calls
fetch() itself, fails here."""

from __future__ import annotations

import re

from testkit import REPO

JS = REPO / "static" / "js"
# fetch() outside api.js, left to move onto `request` (the list only shrinks).
KNOWN_FETCH: set[str] = set()


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(JS.glob("*.js"))}


def test_one_dollar():
    own = re.compile(r"^\s*(?:export\s+)?(?:const|let|var|function)\s+\$\s*(?:=|\()", re.M)
    defined = sorted(name for name, text in _sources().items() if own.search(text))
    assert defined == ["format.js"], f"`$` is defined in {defined}: import it from format.js"


def test_one_request_helper():
    call = re.compile(r"(?<![\w.])fetch\(")
    calling = {name for name, text in _sources().items() if call.search(text)} - {"api.js"}
    assert calling <= KNOWN_FETCH, f"fetch() outside api.js: {sorted(calling - KNOWN_FETCH)}; use api.js's request()"
    assert not KNOWN_FETCH - calling, f"no longer calls fetch(): drop from KNOWN_FETCH: {sorted(KNOWN_FETCH - calling)}"
