"""Unknown query parameters are a 400 naming them: a misspelt filter (`?zeromod=`) must not
silently answer everything. Each API route's own parameters (its dependencies' too) are the
known ones; pages keep theirs (the browser's scripts read `?kiosk`, `?presenter` themselves).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.http.errors import Problem

_KNOWN: dict[int, frozenset[str]] = {}


def _names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _names(sub)
    return names


def known(route: Any) -> frozenset[str]:
    """The query parameters a route (an APIRoute) declares, directly or through its dependencies."""
    key = id(route)
    if key not in _KNOWN:
        _KNOWN[key] = frozenset(_names(route.dependant))
    return _KNOWN[key]


def only_known_query(request: Request) -> None:
    """A dependency of every API route: 400 `unknown-parameter` listing what the route does not take."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    names = known(route)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in names]
    if not unknown:
        return
    listed = ", ".join(repr(k[:40]) for k in unknown[:5])
    takes = ", ".join(sorted(names)) or "none"
    raise Problem("unknown-parameter", f"unknown query parameter {listed}: this operation takes {takes}",
                  errors=[{"loc": ["query", k], "message": "not a parameter of this operation",
                           "code": "unknown_parameter", "value": request.query_params.get(k)} for k in unknown])
