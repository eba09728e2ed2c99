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
    assert r.status_code == 409 and r.json()["code"] == "idempotency-key-reused"
    r = api.post("/api/v1/servers", json={}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 409, "a key is bound to its path too"
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
    assert r.status_code == 404 and r.json()["errors"][0]["loc"] == ["query", "cursor"]
    # results: the same pages, JSON and CSV (the CSV's next page in Link and X-Next-Cursor)
    r = api.get("/api/v1/results.csv", params={"label": "page", "limit": 4})
    assert r.text.count("\n") == 5 and r.headers["x-next-cursor"]
    rest = api.get("/api/v1/results.json", params={"label": "page", "limit": 4,
                                                   "cursor": r.headers["x-next-cursor"]}).json()
    assert rest["count"] == 2 and rest["next_cursor"] is None
    wait_final(api, extra["id"])


def test_custom_grid_sweep_with_repeats_grouped_per_row(api):
    body = {"name": "grid", "grid": {"zeromode": ["plugin", "none"], "client": ["qemu-img", "qemu-4.2"]},
            "server": FAST, "repeats": 2, "parallelism": 1, "priority": 3}
    r = api.post("/api/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["kind"] == "custom" and sweep["total"] == 8 and sweep["repeats"] == 2
    assert [run["label"] for run in sweep["runs"][:4]] == ["qemu-img/plugin", "qemu-img/none", "qemu-4.2/plugin",
                                                           "qemu-4.2/none"], "axes in one order (client first)"
    done = api.get(f"/api/v1/sweeps/{sweep['id']}", params={"wait": 60}).json()
    assert done["status"] == "succeeded", done
    res = api.get(f"/api/v1/sweeps/{sweep['id']}/results").json()
    assert [row["key"] for row in res["rows"]] == ["qemu-img/plugin", "qemu-img/none", "qemu-4.2/plugin",
                                                  "qemu-4.2/none"]
    for row in res["rows"]:
        assert row["runs"] == row["succeeded"] == 2
        st = row["stats"]["duration_s"]
        assert st["n"] == 2 and st["min"] <= st["p50"] <= st["max"] and st["spread"] == st["max"] - st["min"]
        assert row["stats"]["backend.write_ops"]["spread"] == 0, "the same row writes the same"
    none_img = next(r for r in res["rows"] if r["key"] == "qemu-img/none")
    assert none_img["stats"]["backend.write_ops"]["p50"] == 32
    # re-run: a new sweep made the same way
    again = api.post(f"/api/v1/sweeps/{sweep['id']}/rerun")
    assert again.status_code == 202 and again.json()["definition"] == sweep["definition"]
    assert again.json()["id"] != sweep["id"]
    api.post(f"/api/v1/sweeps/{again.json()['id']}/cancel")


def test_custom_sweep_errors_name_the_place(api):
    cases = [
        ({"grid": {"size": ["8M", "0"]}}, ["body", "grid", "size", 1], "0"),
        ({"grid": {"delay_write": ["1ms", "9s"]}, "server": {"size": "8M"}}, ["body", "grid", "delay_write", 1], "9s"),
        ({"rows": [{"client": "qemu-img", "server": FAST}, {"server": {"size": "3k"}}]},
         ["body", "rows", 1, "server", "size"], "3k"),
        ({"grid": {"client": ["qemu-9"]}}, ["body", "grid", "client", 0], "qemu-9"),
        ({"grid": {"colour": ["red"]}}, ["body", "grid", "colour"], ["red"]),
        ({"rows": [], "grid": {"zeromode": ["none"]}}, ["body", "rows"], []),
        ({"grid": {"zeromode": ["none"]}, "rows": [{"client": "qemu-img"}]}, None, None),
        ({}, None, None),
        ({"grid": {}}, ["body", "grid"], {}),
        ({"grid": {"zeromode": ["none"]}, "repeats": 21}, ["body", "repeats"], 21),
    ]
    for body, loc, value in cases:
        r = api.post("/api/v1/sweeps", json=body)
        assert r.status_code == 422, (body, r.text)
        item = r.json()["errors"][0]
        if loc is not None:
            assert item["loc"] == loc and item["value"] == value, (body, item)
    assert api.get("/api/v1/sweeps").json()["total"] == 0, "nothing queued"


def test_an_abandoned_server_is_stopped_at_its_ttl(api, no_leftovers):
    srv = api.post("/api/v1/servers", json={"size": "8M", "ttl_s": 1.5}).json()
    assert srv["ttl_s"] == 1.5 and abs(srv["expires_at"] - srv["created_at"] - 1.5) < 1e-6
    kept = api.post("/api/v1/servers", json={"size": "8M"}).json()
    assert kept["ttl_s"] == 3600, "LAB_SERVER_TTL_S by default"
    queued = api.post("/api/v1/runs", json={"server_id": srv["id"]}).json()
    time.sleep(0.3)
    t0 = time.monotonic()
    while api.get(f"/api/v1/servers/{srv['id']}").status_code == 200:
        assert time.monotonic() - t0 < 10, "still running long after its TTL"
        time.sleep(0.1)
    assert [s["id"] for s in api.get("/api/v1/servers").json()["servers"]] == [kept["id"]]
    run = wait_final(api, queued["id"])
    assert run["status"] in ("succeeded", "cancelled")  # it may have finished before the TTL
    # recorded: the server's stop is an event with its reason
    with api.stream("GET", "/api/v1/events", params={"last_event_id": 0}) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"reason":"expired"' in line and srv["id"] in line:
                break
    api.delete(f"/api/v1/servers/{kept['id']}")


def test_clean_up_after_a_crashed_script(api, no_leftovers):
    servers = [api.post("/api/v1/servers", json={"size": "8M"}).json() for _ in range(2)]
    slow = api.post("/api/v1/runs", json={"server": SLOW, "label": "left"}).json()
    queued = [api.post("/api/v1/runs", json={"server": FAST, "label": "left"}).json() for _ in range(2)]
    other = api.post("/api/v1/runs", json={"server": FAST, "label": "keep"}).json()
    r = api.post("/api/v1/runs/cancel", json={"label": "left", "status": "queued"})
    assert r.status_code == 200 and r.json()["count"] == 2
    assert {x["id"] for x in r.json()["runs"]} == {q["id"] for q in queued}
    assert all(x["status"] == "cancelled" for x in r.json()["runs"])
    r = api.post("/api/v1/runs/cancel", json={"label": "left"})
    assert [x["id"] for x in r.json()["runs"]] == [slow["id"]]
    assert wait_final(api, other["id"])["status"] == "succeeded", "the filter spares the rest"
    gone = api.delete("/api/v1/servers").json()["servers"]
    assert {s["id"] for s in gone} == {s["id"] for s in servers} and not any(s["running"] for s in gone)
    assert api.get("/api/v1/servers").json()["servers"] == []
    wait_final(api, slow["id"])


def test_overrides_equal_to_the_talk_keep_the_reference_figures(api):
    talk = {"size": "100M", "delay_write": "20ms", "delay_zero": 5, "maxdata": "256k"}
    r = api.post("/api/v1/scenarios/reference/runs", json={"only": ["ref-none"], "server": talk})
    assert r.status_code == 202, r.text
    run = r.json()["runs"][0]
    assert run["reference"]["write_ops"] == 400, "the talk's geometry: the 2019 figures still hold"
    api.post(f"/api/v1/sweeps/{r.json()['id']}/cancel")
    small = api.post("/api/v1/scenarios/reference/runs", json={"only": ["ref-none"], "server": FAST}).json()
    assert small["runs"][0].get("reference") is None, "another geometry: no 2019 figures"
    api.get(f"/api/v1/sweeps/{small['id']}", params={"wait": 60})
