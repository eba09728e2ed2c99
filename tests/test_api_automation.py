"""Scripting the lab: Idempotency-Key, ?wait=, queue position, cursor pages, ETag."""

from __future__ import annotations

import time

import pytest
from apiutil import FAST, SLOW, serve, wait_final


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path, workers=1, queue_size=8)


def _runs(api, **params):
    return api.get("/api/v1/runs", params=params).json()


def test_a_retried_post_with_the_same_key_starts_one_run(api):
    body = {"client": "qemu-img", "server": FAST, "label": "once"}
    first = api.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = api.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.headers["location"] == first.headers["location"]
    assert _runs(api, label="once")["total"] == 1, "one run, however often it is retried"
    # the same key with another body is refused; another key starts another run
    r = api.post("/api/v1/runs", json={**body, "label": "twice"}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency-key-reused"
    r = api.post("/api/v1/servers", json={}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 422, "a key is bound to its path too"
    assert api.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "k-2"}).json()["id"] != first.json()["id"]
    assert api.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "bad key"}).status_code == 422
    wait_final(api, first.json()["id"])


def test_a_refused_post_is_not_remembered(tmp_path):
    with next(serve(tmp_path, workers=1, queue_size=1)) as api:
        slow = api.post("/api/v1/runs", json={"server": SLOW}).json()
        api.post("/api/v1/runs", json={"server": FAST})  # fills the queue once the slow one runs
        key = {"Idempotency-Key": "retry-me"}
        assert api.post("/api/v1/runs", json={"server": FAST}, headers=key).status_code == 429
        api.post(f"/api/v1/runs/{slow['id']}/cancel")
        wait_final(api, slow["id"])
        r = api.post("/api/v1/runs", json={"server": FAST}, headers=key)
        assert r.status_code == 202 and "idempotent-replayed" not in r.headers, "a 429 may be retried"
        wait_final(api, r.json()["id"])


def test_scenario_sweeps_and_servers_are_idempotent_too(api):
    key = {"Idempotency-Key": "sweep-1"}
    body = {"only": ["ref-none"], "server": FAST}
    a = api.post("/api/v1/scenarios/reference/runs", json=body, headers=key)
    b = api.post("/api/v1/scenarios/reference/runs", json=body, headers=key)
    assert a.status_code == b.status_code == 202 and a.json()["id"] == b.json()["id"]
    assert api.get("/api/v1/sweeps").json()["total"] == 1
    s1 = api.post("/api/v1/servers", json={"size": "8M"}, headers={"Idempotency-Key": "srv"})
    s2 = api.post("/api/v1/servers", json={"size": "8M"}, headers={"Idempotency-Key": "srv"})
    assert s1.status_code == s2.status_code == 201 and s1.json()["id"] == s2.json()["id"]
    assert len(api.get("/api/v1/servers").json()["servers"]) == 1
    api.delete(f"/api/v1/servers/{s1.json()['id']}")
    api.get(f"/api/v1/sweeps/{a.json()['id']}", params={"wait": 30})


def test_wait_queue_position_and_etag(api):
    slow = api.post("/api/v1/runs", json={"server": SLOW}).json()
    queued = [api.post("/api/v1/runs", json={"server": FAST}).json() for _ in range(2)]
    assert [q["queue_position"] for q in queued] in ([2, 3], [1, 2])
    t0 = time.monotonic()
    r = api.get(f"/api/v1/runs/{queued[1]['id']}", params={"wait": 0.3})
    assert 0.25 < time.monotonic() - t0 < 5 and r.json()["status"] == "queued" and r.json()["queue_position"] >= 1
    assert "etag" not in r.headers, "an unfinished run has no ETag"
    done = api.get(f"/api/v1/runs/{queued[1]['id']}", params={"wait": 60})
    assert done.json()["status"] == "succeeded" and "queue_position" not in done.json()
    tag = done.headers["etag"]
    r = api.get(f"/api/v1/runs/{queued[1]['id']}", headers={"If-None-Match": tag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == tag
    assert api.get(f"/api/v1/runs/{queued[1]['id']}", headers={"If-None-Match": '"other"'}).status_code == 200
    assert wait_final(api, slow["id"])["status"] == "succeeded"


def test_cursor_pages_newest_first_with_filters(api):
    ids = []
    for zeromode in ("plugin", "none", "plugin", "none", "plugin"):
        r = api.post("/api/v1/runs", json={"server": {**FAST, "zeromode": zeromode}, "label": "page"})
        ids.append(r.json()["id"])
    for rid in ids:
        wait_final(api, rid)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "label": "page", **({"cursor": cursor} if cursor else {})}
        r = api.get("/api/v1/runs", params=params)
        body = r.json()
        assert body["total"] == (5 if pages == 0 else 6)
        seen += [x["id"] for x in body["runs"]]
        pages += 1
        # a run created meanwhile does not shift the pages
        if pages == 1:
            extra = api.post("/api/v1/runs", json={"server": FAST, "label": "page"}).json()
            assert r.headers["link"].endswith('rel="next"') and "cursor=" in r.headers["link"]
        cursor = body["next_cursor"]
        if cursor is None:
            assert "link" not in r.headers
            break
    assert seen[:5] == ids[::-1], "newest first, nothing missed or repeated"
    oldest = api.get("/api/v1/runs", params={"label": "page", "sort": "created_at", "limit": 5}).json()["runs"]
    assert [x["id"] for x in oldest] == ids
    plugin = api.get("/api/v1/runs", params={"label": "page", "zeromode": "plugin"}).json()
    assert plugin["total"] == 3 and all(x["server"]["zeromode"] == "plugin" for x in plugin["runs"])
    assert api.get("/api/v1/runs", params={"size": 8 << 20, "label": "page"}).json()["total"] == 6
    first = api.get(f"/api/v1/runs/{ids[0]}").json()
    later = api.get("/api/v1/runs", params={"label": "page", "since": first["created_at"] + 1e-6}).json()
    assert ids[0] not in [x["id"] for x in later["runs"]] and later["total"] == 5
    # a cursor is opaque but checked: another sort's cursor, or garbage, is a 422 naming it
    c = api.get("/api/v1/runs", params={"limit": 1}).json()["next_cursor"]
    r = api.get("/api/v1/runs", params={"cursor": c, "sort": "duration_s"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "cursor"]
    # results: the same pages, JSON and CSV (the CSV's next page in Link and X-Next-Cursor)
    r = api.get("/api/v1/results.csv", params={"label": "page", "limit": 4})
    assert r.text.count("\n") == 5 and r.headers["x-next-cursor"]
    rest = api.get("/api/v1/results.json", params={"label": "page", "limit": 4,
                                                   "cursor": r.headers["x-next-cursor"]}).json()
    assert rest["count"] == 2 and rest["next_cursor"] is None
    wait_final(api, extra["id"])
