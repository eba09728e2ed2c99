"""405 answers list every method the path supports (RFC 9110), not just one route's.

A path such as /api/v1/runs is served by two operations (GET list, POST create); Starlette's
405 names only the methods of the first route that matched the path. The 405 handler
(app/http/errors.py) asks `Allowed` for the path's methods, from the OpenAPI paths (and their
/api aliases). Not a middleware: one wrapping every `send` cost each event of every stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class Allowed:
    """The methods of each documented path; `paths` is read once, on the first 405."""

    def __init__(self, paths: Callable[[], dict[str, dict]]) -> None:
        self._paths = paths
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def __call__(self, path: str) -> str | None:
        if self._table is None:
            table = []
            for template, ops in self._paths().items():
                methods = {m.upper() for m in ops if m in ("get", "post", "put", "patch", "delete")}
                if "GET" in methods:
                    methods.add("HEAD")
                table.append((template.count("{"), _compile(template), ", ".join(sorted(methods))))
            # literal segments first: /runs/cancel is its own path, not /runs/{run_id}
            self._table = [(pattern, methods) for _, pattern, methods in sorted(table, key=lambda t: t[0])]
        for pattern, methods in self._table:
            if pattern.match(path):
                return methods
        return None
