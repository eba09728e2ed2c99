"""Hostile input, aimed rather than generated (scripts/fuzz_api.py generates): huge and
negative numbers, NaN, strings for numbers, unknown enums, unknown ids, path tricks in ids,
oversized and malformed bodies. Never a 5xx, never a run or a server started by mistake.
The event streams' parameters are here too (the fuzzer leaves the endless /api/events out)."""

from __future__ import annotations

import pytest
from apiutil import FAST, serve

ID_ROUTES = [("GET", "/api/runs/{}"), ("POST", "/api/runs/{}/cancel"), ("GET", "/api/runs/{}/events"),
             ("GET", "/api/servers/{}"), ("DELETE", "/api/servers/{}"), ("GET", "/api/sweeps/{}"),
             ("POST", "/api/sweeps/{}/cancel"), ("GET", "/api/sweeps/{}/events"), ("GET", "/api/scenarios/{}"),
             ("POST", "/api/scenarios/{}/runs")]
TRICKS = ["%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc", "%00", "a%00b", "%C0%AE%C0%AE", "%ff%fe",
          "x" * 4000, "%252e%252e", "reference%00", "~root", "%5c..%5c..", "*", "'%20OR%201=1--"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("input"))


def _nothing_started(api) -> None:
    assert api.get("/api/runs").json()["total"] == 0
    assert api.get("/api/servers").json()["servers"] == []
    assert api.get("/api/sweeps").json()["total"] == 0


@pytest.mark.parametrize("trick", TRICKS)
def test_path_tricks_in_ids_are_404(api, trick):
    for method, template in ID_ROUTES:
        r = api.request(method, "http://testserver" + template.format(trick))
        assert r.status_code in (404, 405), (method, template, trick, r.status_code, r.text[:200])
        assert r.headers["content-type"] == "application/problem+json"
        assert "root:" not in r.text
    _nothing_started(api)


@pytest.mark.parametrize(("server", "field"), [
    ({"size": 2**63}, "size"), ({"size": 2**64 + 1}, "size"), ({"size": -(2**63)}, "size"), ({"size": -1}, "size"),
    ({"size": 1.5e9}, "size"), ({"size": "1e9"}, "size"), ({"size": "NaN"}, "size"), ({"size": "-4M"}, "size"),
    ({"size": "99999999999999999999M"}, "size"), ({"size": [8]}, "size"), ({"size": {"bytes": 8}}, "size"),
    ({"size": None, "maxdata": "0"}, "maxdata"), ({"maxdata": 2**70}, "maxdata"),
    ({"delay_write": -5}, "delay_write"), ({"delay_write": "-5ms"}, "delay_write"),
    ({"delay_write": "inf"}, "delay_write"), ({"delay_write": 1e308}, "delay_write"),
    ({"delay_write": "NaN"}, "delay_write"), ({"delay_zero": "5 parsecs"}, "delay_zero"),
    ({"delay_zero": True}, "delay_zero"), ({"delay_zero": "0.5ms"}, "delay_zero"),
    ({"zeromode": "PLUGIN"}, "zeromode"), ({"zeromode": ""}, "zeromode"),
    ({"fastzeromode": None, "plugin": "nbd"}, "plugin"),
    ({"plugin": "file", "source_format": "vmdk"}, "source_format"), ({"pattern": "alternate:1M:2M:3M"}, "pattern"),
    ({"pattern": "alternate:1000"}, "pattern"), ({"pattern": "../../etc/passwd"}, "pattern"),
    ({"pattern": "alternate:1M\u0000"}, "pattern"), ({"pattern": "x" * 5000}, "pattern"),
    ({"noextents": 1}, "noextents"), ({"noextents": "true"}, "noextents"),
])
def test_bad_server_fields_are_422_everywhere(api, server, field):
    for path, body, loc in [("/api/runs", {"server": {**FAST, **server}}, ["body", "server", field]),
                            ("/api/servers", {**FAST, **server}, ["body", field])]:
        r = api.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["loc"] == loc, r.json()
    _nothing_started(api)


@pytest.mark.parametrize("body", [
    {"client": "qemu-9.9"}, {"client": ""}, {"client": None}, {"client": 42}, {"client": "QEMU-IMG"},
    {"queue_depth": 0}, {"queue_depth": 65}, {"queue_depth": 2**64}, {"queue_depth": -1}, {"queue_depth": "2"},
    {"queue_depth": 2.5}, {"queue_depth": True}, {"label": "x" * 81}, {"label": 7},
    {"server_id": ""}, {"server_id": "x" * 65}, {"server": "8M"}, {"server": [FAST]}, {"extra": 1},
])
def test_bad_run_fields_are_422(api, body):
    r = api.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    _nothing_started(api)


def test_unknown_ids_anywhere_are_404(api):
    assert api.post("/api/runs", json={"server_id": "../../etc/passwd"}).status_code == 404
    assert api.post("/api/runs", json={"server_id": "nope"}).status_code == 404
    r = api.post("/api/scenarios/reference/runs", json={"only": ["ref-none", "no-such-row"]})
    assert r.status_code == 404 and r.json()["code"] == "not-found", r.text
    assert r.json()["errors"][0] == {"loc": ["body", "only", 1], "message": "no such row", "code": "not_found",
                                     "value": "no-such-row"}
    r = api.get("/api/runs", params={"cursor": "bm9wZQ"})
    assert r.status_code == 404 and r.json()["errors"][0]["loc"] == ["query", "cursor"], "no page for it"
    r = api.post("/api/scenarios/reference/runs", json={"only": []})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "only"], "an empty list is no rows"
    assert r.json()["errors"][0]["value"] == []
    assert api.post("/api/scenarios/reference/runs", json={"only": ["x"] * 201}).status_code == 422
    assert api.post("/api/scenarios/reference/runs", json={"server": {"zeromode": "plugin"}}).status_code == 422
    _nothing_started(api)


@pytest.mark.parametrize(("path", "query"), [
    *[(p, q) for p in ("/api/runs", "/api/sweeps", "/api/results.json", "/api/results.csv")
      for q in ("limit=nan", "limit=1e400", "limit=-1", "limit=0", "limit=ten", "limit=99999999999999999999",
                "status=exploded", "status=")],
    *[(p, q) for p in ("/api/runs", "/api/sweeps", "/api/results.json", "/api/results.csv")
      for q in ("cursor=%%%", "sort=size", "since=-1", "until=nan", "cursor=" + "A" * 401)],
    *[("/api/runs", q) for q in ("limit=1001", "zeromode=sometimes", "size=-1", "noextents=maybe", "client=qemu-9.9",
                                 "sweep_id=" + "x" * 65, "server_id=" + "x" * 65, "label=" + "x" * 81)],
    ("/api/sweeps", "name=" + "x" * 65), ("/api/results.csv", "client=nbd"),
    ("/api/results.json", "sweep_id=" + "x" * 65),
])
def test_bad_list_queries_are_422(api, path, query):
    r = api.get(f"{path}?{query}")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text


def test_filters_are_values_not_sql(api):
    for value in ("' OR '1'='1", "x\"; DROP TABLE runs; --", "%", "_"):
        r = api.get("/api/runs", params={"label": value, "sweep_id": value})
        assert r.status_code == 200 and r.json()["total"] == 0
    assert api.get("/api/runs").status_code == 200  # the table is still there


@pytest.mark.parametrize("path", ["/api/events", "/api/runs/nope/events", "/api/sweeps/nope/events"])
@pytest.mark.parametrize("query", ["last_event_id=-1", "last_event_id=NaN", "last_event_id=1e3", "last_event_id=",
                                   "last_event_id=99999999999999999999999", "last_event_id=0x10"])
def test_bad_resume_query_is_422_before_any_stream(api, path, query):
    r = api.get(f"{path}?{query}")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("header", ["abc", "1\x01", "99999999999999999999", "-1", " 5 x", "1.5", "0x10", "\x7f"])
def test_bad_last_event_id_header_is_422(api, header):
    for path in ("/api/events", "/api/runs/nope/events"):
        r = api.get(path, headers={"Last-Event-ID": header})
        assert r.status_code == 422, (path, header, r.status_code)


@pytest.mark.parametrize("text", [
    '{"server": {"delay_zero": NaN}}', '{"server": {"size": Infinity}}', '{"server": {"size": -Infinity}}',
    '{"server": ', "[]", "7", '"run"', "{" * 5000 + "}" * 5000, "[" * 50_000, '{"client": "qemu-img", }',
    '{"client": "qemu-img", "client": "nbdcopy", "server": {"size": 1e999}}',
])
def test_malformed_bodies_are_refused_not_500(api, text):
    for path in ("/api/runs", "/api/servers", "/api/scenarios/reference/runs"):
        r = api.post(path, content=text, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (path, text[:40], r.status_code, r.text[:200])
    _nothing_started(api)


def test_oversized_and_odd_bodies(api):
    big = b'{"label": "' + b"x" * 70_000 + b'"}'
    for path in ("/api/runs", "/api/servers", "/api/scenarios/reference/runs", "/api/runs/nope/cancel"):
        r = api.post(path, content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)

    def chunks():  # no Content-Length: the limit still holds as the body streams in
        for _ in range(100):
            yield b" " * 1024

    assert api.post("/api/runs", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    r = api.post("/api/runs", content=b'{"label": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = api.post("/api/runs", content=b'{"client": "qemu-img"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["code"] == "unsupported-media-type"
    _nothing_started(api)
