"""Never a 5xx from input: every route of the app (API, its legacy alias, pages, docs) is sent
arbitrary Unicode (lone surrogates included) and arbitrary bytes in its path parameters, query
string, headers and body, and must answer below 500 (hypothesis).

The app is driven in-process through ASGI (the TestClient's lifespan and event loop), stopping
at the response's first body chunk, so endless event streams are sent the same input as the
rest. What is generated is what uvicorn could hand the app: a path percent-decoded as UTF-8
with replacement, header values of visible Latin-1, any bytes in the query string and body.
POST /calibration is left out: it starts a minute of measurement whatever it is sent; POST /audits too:
a valid body starts a zero audit (tests/test_api_audits.py sends it bad ones).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, unquote

import pytest
from apiutil import serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LEFT_OUT = {("POST", "/api/v1/calibration"), ("POST", "/api/calibration"), ("POST", "/api/v1/audits"),
            ("POST", "/api/audits")}


def all_routes(app: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path template, query parameter names) of every route the app serves."""
    out = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for ctx in contexts:
            path = getattr(ctx, "path", None)
            if path is None or not getattr(ctx, "methods", None):
                continue
            dependant = getattr(ctx, "dependant", None)
            names = _query_names(dependant) if dependant is not None else ()
            out += [(m, path, names) for m in sorted(ctx.methods) if m != "HEAD" and (m, path) not in LEFT_OUT]
    return sorted(set(out))


def _query_names(dependant: Any) -> tuple[str, ...]:
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names += _query_names(sub)
    return tuple(names)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    # 1 MiB images at most: the defaults (100 MiB) are refused, so no generated body starts a run
    yield from serve(tmp_path_factory.mktemp("property"), max_size=1 << 20, queue_size=2, workers=1)


def _routes() -> list[tuple[str, str, tuple[str, ...]]]:
    from apiutil import make_settings

    from app.main import create_app

    return all_routes(create_app(make_settings(__import__("pathlib").Path("/nonexistent"))))


ROUTES = _routes()


def _vocabulary() -> list[str]:
    """Every property name of the OpenAPI document's schemas: the keys bodies are made of."""
    from apiutil import make_settings

    from app.main import create_app

    names: set[str] = set()
    stack: list[Any] = [create_app(make_settings(__import__("pathlib").Path("/nonexistent"))).openapi()]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                names.update(node["properties"])
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return sorted(names)


KEYS = _vocabulary()

# Text as JSON carries it: any code point, lone surrogates included (json.dumps escapes them).
TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
VISIBLE_LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                         max_size=60)
# Numbers at the edges: SQLite's 64-bit integers, floats that are whole, huge or not finite.
NUMBERS = st.integers() | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**40, 16777216.0, 1.5, -0.0]) | st.floats()
# A cursor is base64url of JSON: forge ones with edge keys.
CURSORS = st.builds(lambda parts: __import__("base64").urlsafe_b64encode(json.dumps(parts).encode()).decode()
                    .rstrip("="), st.tuples(st.sampled_from(["-created_at", "created_at", "duration_s"]) | TEXT,
                                            NUMBERS, NUMBERS))
ORIGINS = st.builds(lambda scheme, host, port: f"{scheme}://{host}:{port}", st.sampled_from(["http", "https", "x"]),
                    st.sampled_from(["testserver", "a", "[::1", "[::1]", "", "rb.evil.example"]),
                    st.integers(-5, 10**6).map(str) | VISIBLE_LATIN1)
LEAVES = st.none() | st.booleans() | NUMBERS | TEXT
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | TEXT, inner, max_size=5),
    max_leaves=12)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, min_size=1, max_size=4)


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["json", "json-utf8", "bytes", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return b""
    value = draw(OBJECTS | JSON_VALUES)
    if kind == "json":
        return json.dumps(value).encode()  # ASCII, surrogates as \\u escapes
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw: invalid UTF-8


@st.composite
def requests(draw: Any, method: str, template: str, query_names: tuple[str, ...]) -> dict[str, Any]:
    def param(m: re.Match[str]) -> str:
        text = draw(TEXT.filter(bool))
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    raw_path = re.sub(r"\{[^}]+\}", param, template)
    names = draw(st.lists(st.sampled_from(query_names) | TEXT, max_size=4)) if query_names else \
        draw(st.lists(TEXT, max_size=2))
    values = TEXT | CURSORS | NUMBERS.map(str)
    query = "&".join(quote(n.encode("utf-8", "surrogatepass"), safe="") + "=" +
                     quote(draw(values).encode("utf-8", "surrogatepass"), safe="") for n in names)
    if draw(st.booleans()):
        query = quote(draw(st.binary(max_size=40)), safe="=&")
    headers = []
    for name in draw(st.lists(st.sampled_from(
            ["origin", "last-event-id", "idempotency-key", "if-none-match", "content-type", "authorization",
             "host", "accept"]), max_size=4, unique=True)):
        value = draw(ORIGINS if name == "origin" else VISIBLE_LATIN1)
        headers.append((name.encode(), value.encode("latin-1", "replace")))
    if not any(k == b"host" for k, _ in headers):
        headers.append((b"host", b"testserver"))
    if not any(k == b"content-type" for k, _ in headers):
        headers.append((b"content-type", b"application/json"))
    body = draw(bodies()) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {"method": method, "raw_path": raw_path, "query": query, "headers": headers, "body": body}


async def _status(app: Any, req: dict[str, Any]) -> int:
    """Send one request through the app's ASGI interface; the status, once the response starts
    (and its first body chunk is out: a stream is then told the client left)."""
    import anyio

    started = anyio.Event()
    status: list[int] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": req["body"], "more_body": False}
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            started.set()

    path = unquote(req["raw_path"], errors="replace")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": req["method"],
             "scheme": "http", "path": path, "raw_path": req["raw_path"].encode("ascii"), "root_path": "",
             "query_string": req["query"].encode("ascii"), "headers": req["headers"],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80), "state": {}}
    with anyio.fail_after(30):
        await app(scope, receive, send)
    assert status, "no response started"
    return status[0]


def _examples(template: str) -> int:
    """Most for the API itself; its legacy alias (the same handlers) and pages get fewer."""
    if template.startswith("/api/v1/scenarios"):
        return 15  # each answer builds every row's spec with this machine's availability: ~0.5 s
    return 60 if template.startswith("/api/v1/") else 15


@pytest.mark.parametrize(("method", "template", "names"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_no_input_makes_a_5xx(api, method, template, names):
    app = api.app
    if api.portal is None:
        pytest.fail("the TestClient has no event loop")

    @settings(max_examples=_examples(template), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(req=requests(method, template, names))
    def check(req: dict[str, Any]) -> None:
        status = api.portal.call(_status, app, req)
        assert status < 500, (status, req)

    check()


def test_the_walk_finds_every_kind_of_route():
    paths = {(m, p) for m, p, _ in ROUTES}
    assert ("POST", "/api/v1/runs") in paths and ("GET", "/api/v1/events") in paths
    assert ("GET", "/api/runs/{run_id}") in paths  # the legacy alias
    assert ("GET", "/") in paths  # a page
    assert len(paths) > 60, len(paths)


def test_nothing_was_started(api):
    assert api.get("/api/v1/runs").json()["total"] == 0
    assert api.get("/api/v1/servers").json()["servers"] == []
    assert api.get("/api/v1/sweeps").json()["total"] == 0
