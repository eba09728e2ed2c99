"""LAB_TOKEN: every mutating route needs the bearer token; reads and streams stay open."""

from __future__ import annotations

import pytest
from apiutil import FAST, client_for
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.http.auth import token_ok
from app.http.identity import OPEN_WRITES

TOKEN = "s3cret-presenter-token"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def guarded(tmp_path):
    with client_for(tmp_path / "data", token=TOKEN) as api:
        yield api


def _routes(routes, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route, descending into included routers (FastAPI >= 0.16x keeps them nested)."""
    out = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            context = getattr(r, "include_context", None)
            out += _routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(r, APIRoute | Route):
            out += [(m, prefix + r.path) for m in (r.methods or ())]
    return out


def _concrete(path: str) -> str:
    return path.replace("{name}", "reference").replace("{run_id}", "x").replace("{server_id}", "x") \
        .replace("{sweep_id}", "x").replace("{act}", "baseline").replace("{canonical}", "ana") \
        .replace("{guess_id}", "x")


def test_every_mutating_route_refuses_a_missing_or_wrong_token(guarded):
    routes = [(m, p) for m, p in _routes(guarded.app.routes) if m in MUTATING]
    documented = {(m.upper(), p) for p, ops in guarded.get("/openapi.json").json()["paths"].items() for m in ops}
    assert {(m, p) for m, p in documented if m in MUTATING} <= set(routes), "the walk missed a route"
    assert ("POST", "/api/runs") in routes and ("DELETE", "/api/servers/{server_id}") in routes
    # Joining the class and checking a form change nothing and need no token; a student's key opens
    # a few more (tests/test_classroom.py); nothing else is open.
    open_posts = {p for _, p in routes if any(rx.match(p) for rx in OPEN_WRITES)}
    assert {(m, p) for m, p in routes if p in open_posts} == \
        {(m, p + q) for m in ("POST",) for p in ("/api", "/api/v1") for q in ("/class/join", "/validate")}
    for method, path in routes:
        if path in open_posts:
            continue
        url = _concrete(path)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
            r = guarded.request(method, url, json={}, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
        # with the token the route itself answers (a body it refuses, so nothing starts)
        r = guarded.request(method, url, json={"surprise": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code != 401, (method, path)
    # also paths no route knows and mounted apps: refused before anything else
    assert guarded.post("/static/anything").status_code == 401
    assert guarded.put("/api/nothing-here").status_code == 401


def test_reads_and_streams_stay_open(guarded):
    assert guarded.get("/api/health").status_code == 200
    assert guarded.get("/api/runs").status_code == 200
    assert guarded.get("/api/results.csv").status_code == 200
    r = guarded.post("/api/runs", json={"server": FAST}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 202
    with guarded.stream("GET", f"/api/runs/{r.json()['id']}/events") as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    assert "event: done" in text


def test_no_token_configured_means_open(tmp_path):
    with client_for(tmp_path / "data") as api:
        assert api.post("/api/scenarios/nope/runs").status_code == 404


def test_token_compare():
    assert token_ok(f"Bearer {TOKEN}", TOKEN)
    assert token_ok(f"bearer   {TOKEN}  ", TOKEN)
    assert not token_ok(None, TOKEN)
    assert not token_ok("Bearer ", TOKEN)
    assert not token_ok(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_ok("Bearer \udcff", TOKEN)


def test_openapi_documents_the_bearer_scheme(guarded):
    spec = guarded.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # anonymous or bearer, once for the document (a per-operation requirement makes generated clients
    # demand a token); where the token is needed, the operation documents 401 with its challenge
    assert spec["security"] == [{}, {"bearer": []}]
    assert "security" not in spec["paths"]["/api/v1/runs"]["post"]
    assert "WWW-Authenticate" in spec["paths"]["/api/v1/runs"]["post"]["responses"]["401"]["headers"]
    assert "401" not in spec["paths"]["/api/v1/runs"]["get"]["responses"], "reads stay open"
