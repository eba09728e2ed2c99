"""What the pages ask the service for: every /api/v1 path the scripts (static/js) and templates name,
with their `${...}` parts filled in, so a test can ask each one as a browser would (tests/test_unprivileged.py
as a non-root user, tests/test_compose.py in the shipped container)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("/", "/results", "/talk", "/talk?follow", "/class")


def templates() -> list[str]:
    """Every API path the pages' scripts and templates name, as written (`${...}` parts included)."""
    found: set[str] = set()
    for f in [*(ROOT / "static/js").glob("*.js"), *(ROOT / "templates").rglob("*.html")]:
        found |= set(re.findall(r'["`](/api/v1/[^"`\s]*)["`]', f.read_text()))
    return sorted(found)


def paths(values: Mapping[str, Sequence[str]]) -> list[str]:
    """Every template with each `${expr}` filled from values[expr] (encodeURIComponent(x) reads x); an id
    nobody made (`id`, `*.id`) is one that does not exist: it must answer < 500 too. AssertionError for a
    new part: teach the caller a value for it."""
    out: list[str] = []
    for template in templates():
        expanded = [template]
        for expr in re.findall(r"\$\{([^}]*)\}", template):
            key = re.sub(r"^encodeURIComponent\((.*)\)$", r"\1", expr)
            known = values.get(key) or (["0" * 12] if key == "id" or key.endswith(".id") else None)
            assert known, f"a new data request {template}: teach this test a value for {expr}"
            expanded = [p.replace("${" + expr + "}", v) for p in expanded for v in known]
        out += expanded
    return out
