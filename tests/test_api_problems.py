"""One error shape (RFC 9457 problem+json) for every 4xx; CSRF guards; HEAD; /api/v1 and its alias."""

from __future__ import annotations

import pytest
from apiutil import FAST, client_for, serve, start_run, wait_final

PROBLEM_KEYS = {"type", "code", "status", "title", "detail", "instance", "errors"}


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path, queue_size=2, workers=1, max_servers=1, max_body_bytes=4096)


def problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body = r.json()
    assert set(body) == PROBLEM_KEYS | ({"limit"} if code in ("limit-reached", "never-fits") else set()), body
    assert body["type"] == f"tag:fastzero-lab,2026:{code}" and body["code"] == code and body["status"] == status
    assert body["detail"] and body["title"]
    return body


def test_every_kind_of_4xx_is_a_problem(api):
    problem(api.get("/api/v1/runs/nope"), 404, "not-found")
    problem(api.get("/api/v1/no-such-path"), 404, "not-found")
    r = api.put("/api/v1/runs", json={})
    assert problem(r, 405, "method-not-allowed")["instance"] == "/api/v1/runs"
    assert r.headers["allow"] == "GET, HEAD, POST"
    big = b'{"label": "' + b"x" * 5000 + b'"}'
    problem(api.post("/api/v1/runs", content=big, headers={"content-type": "application/json"}), 413,
            "body-too-large")
    problem(api.post("/api/v1/runs", content=(b" " * 1024 for _ in range(8)),
                     headers={"content-type": "application/json"}), 413, "body-too-large")
    problem(api.post("/api/v1/runs", content=b'{"label": "\xff"}', headers={"content-type": "application/json"}),
            400, "bad-request")
    r = api.post("/api/v1/runs", json={"server": {"size": "8M", "delay_write": "1000ms"}, "label": "slow"})
    assert r.status_code == 202
    api.post("/api/v1/runs", json={"server": FAST})
    api.post("/api/v1/runs", json={"server": FAST})
    full = api.post("/api/v1/runs", json={"server": FAST})
    assert "queue" in problem(full, 429, "limit-reached")["detail"]
    assert full.headers["retry-after"].isdigit()
    api.post(f"/api/v1/runs/{r.json()['id']}/cancel")
    final = wait_final(api, r.json()["id"])
    problem(api.post(f"/api/v1/runs/{final['id']}/cancel"), 409, "already-finished")


@pytest.mark.parametrize(("body", "loc", "value"), [
    ({"server": {"size": "999999999999999T"}}, ["body", "server", "size"], "999999999999999T"),
    ({"server": {"size": "0"}}, ["body", "server", "size"], "0"),
    ({"server": {"size": 10**30}}, ["body", "server", "size"], 10**30),
    ({"server": {"delay_write": "5parsecs"}}, ["body", "server", "delay_write"], "5parsecs"),
    ({"server": {"maxdata": "1k"}}, ["body", "server", "maxdata"], "1k"),
    ({"server": {}, "server_id": "abc"}, ["body", "server_id"], "abc"),
    ({"queue_depth": "2"}, ["body", "queue_depth"], "2"),
])
def test_422_echoes_the_value_as_sent(api, body, loc, value):
    p = problem(api.post("/api/v1/runs", json=body), 422, "invalid-request")
    item = p["errors"][0]
    assert item["loc"] == loc and item["value"] == value, p
    assert set(item) == {"loc", "message", "code", "value"}, "no ctx, no input"
    assert not item["message"].startswith("Value error"), item
    assert p["detail"].startswith(".".join(loc) + ":"), p["detail"]


def test_query_and_missing_values(api):
    p = problem(api.get("/api/v1/runs", params={"limit": "lots"}), 422, "invalid-request")
    assert p["errors"][0]["loc"] == ["query", "limit"] and p["errors"][0]["value"] == "lots"
    p = problem(api.post("/api/v1/runs", content=b"", headers={"content-type": "application/json"}), 422,
                "invalid-request")
    assert "value" not in p["errors"][0], "nothing was sent, nothing is echoed"


def test_cross_site_posts_are_refused(api):
    """A form or no-cors fetch from another site can only send text/plain, form data or multipart."""
    for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = api.post("/api/v1/runs", content=b'{"client": "qemu-img"}', headers={"content-type": ct})
        problem(r, 415, "unsupported-media-type")
    problem(api.post("/api/v1/runs", content=b'{"client": "qemu-img"}', headers={"content-type": ""}),
            415, "unsupported-media-type")
    r = api.post("/api/v1/runs", json={"server": FAST}, headers={"Origin": "https://evil.example"})
    problem(r, 403, "cross-origin")
    problem(api.post("/api/v1/runs", json={"server": FAST}, headers={"Origin": "null"}), 403, "cross-origin")
    problem(api.delete("/api/v1/servers/x", headers={"Origin": "http://testserver.evil"}), 403, "cross-origin")
    assert api.get("/api/v1/runs").json()["total"] == 0, "nothing started"
    # the page's own origin, and scripts (no Origin), are fine; a bodyless POST needs no Content-Type
    r = api.post("/api/v1/runs", json={"server": FAST}, headers={"Origin": "http://testserver"})
    assert r.status_code == 202, r.text
    assert wait_final(api, r.json()["id"])["status"] == "succeeded"
    assert api.post("/api/v1/runs/nope/cancel").status_code == 404


def test_allowed_origins_for_a_page_served_elsewhere(tmp_path):
    with client_for(tmp_path / "data", allowed_origins="https://lab.example.org, http://x:8080/") as api:
        for origin in ("https://lab.example.org", "http://x:8080"):
            assert api.post("/api/v1/runs/nope/cancel", headers={"Origin": origin}).status_code == 404
        problem(api.post("/api/v1/runs/nope/cancel", headers={"Origin": "https://lab.example.org.evil"}), 403,
                "cross-origin")


def test_wrong_token_is_invalid_token(tmp_path):
    with client_for(tmp_path / "data", token="s3cret") as api:
        r = api.post("/api/v1/runs", json={})
        p = problem(r, 401, "missing-token")
        assert r.headers["www-authenticate"] == 'Bearer realm="fastzero-lab"'
        r = api.post("/api/v1/runs", json={}, headers={"Authorization": "Bearer wrong"})
        p2 = problem(r, 401, "invalid-token")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert p["detail"] != p2["detail"]


def test_head_where_allow_says_so(api):
    for path in ("/api/v1/health", "/api/v1/runs", "/api/v1/results.csv", "/api/health"):
        get, head = api.get(path), api.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"]
    assert api.head("/api/v1/runs/nope").status_code == 404
    r = api.head("/api/v1/events")  # an endless stream: HEAD ends after its headers
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


def test_finished_stream_is_204_so_eventsource_stops(api):
    run = wait_final(api, start_run(api, "qemu-img")["id"])
    with api.stream("GET", f"/api/v1/runs/{run['id']}/events") as r:
        text = "".join(r.iter_text())
    assert r.status_code == 200 and "event: done" in text
    last = max(int(line[3:]) for line in text.splitlines() if line.startswith("id:"))
    r = api.get(f"/api/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(last)})
    assert r.status_code == 204 and r.content == b""


def test_legacy_prefix_is_an_alias_marked_deprecated(api):
    old, new = api.get("/api/clients"), api.get("/api/v1/clients")
    assert old.json() == new.json()
    assert old.headers["deprecation"].startswith("@") and "deprecation" not in new.headers
    assert old.headers["link"] == '</api/v1/clients>; rel="successor-version"'
