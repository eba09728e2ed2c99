"""Server-Sent Events: ids, types, history replay, resume with Last-Event-ID, keepalive."""

from __future__ import annotations

import pytest
from apiutil import FAST, SLOW, client_for, serve, sse_events, start_run, wait_final, wait_for


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


def _read(api, url: str, headers: dict[str, str] | None = None, stop_after: int | None = None,
          until=None) -> list[dict]:
    """Events with ids from a stream; disconnects after `stop_after` of them, or when until(event)."""
    got: list[dict] = []
    with api.stream("GET", url, headers=headers or {}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for ev in sse_events(resp.iter_lines()):
            if "id" not in ev:
                continue
            got.append(ev)
            if (stop_after is not None and len(got) >= stop_after) or (until is not None and until(ev)):
                break
    return got


def test_every_event_has_id_and_type_matching_its_data(api):
    run = start_run(api)
    events = _read(api, f"/api/runs/{run['id']}/events")
    assert events, "the stream replayed nothing"
    for ev in events:
        assert ev["event"] == ev["data"]["type"] and int(ev["id"]) == ev["data"]["id"]
        assert ev["data"]["run_id"] == run["id"]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids))
    assert {e["event"] for e in events} <= {"state", "progress", "done"}
    assert events[-1]["event"] == "done"


def test_disconnect_mid_run_and_resume_without_gap_or_repeat(api):
    run = start_run(api, **SLOW)
    url = f"/api/runs/{run['id']}/events"
    first = _read(api, url, until=lambda e: e["event"] == "progress" and e["data"]["backend"]["write_ops"] >= 3)
    assert first[-1]["event"] == "progress"
    assert api.get(f"/api/runs/{run['id']}").json()["status"] == "running", "the cut must come mid-run"
    wait_for(lambda: api.app.state.manager.bus.subscriber_count == 0, 10)  # the server noticed the disconnect
    rest = _read(api, url, headers={"Last-Event-ID": first[-1]["id"]})
    assert rest[-1]["event"] == "done"
    whole = _read(api, url)  # a late subscriber gets the whole history, then the stream ends
    ids = [int(e["id"]) for e in first + rest]
    assert len(ids) == len(set(ids)), "an event was repeated"
    assert ids == [int(e["id"]) for e in whole], "an event was missed"
    assert sum(e["event"] == "progress" for e in rest) >= 1
    # resuming after the end: 204, nothing more (an EventSource stops reconnecting)
    r = api.get(url, headers={"Last-Event-ID": whole[-1]["id"]})
    assert r.status_code == 204 and r.content == b""


def test_query_parameter_resumes_too_and_header_wins(api):
    run = start_run(api)
    wait_final(api, run["id"])
    whole = _read(api, f"/api/runs/{run['id']}/events")
    mid = whole[len(whole) // 2]["id"]
    by_query = _read(api, f"/api/runs/{run['id']}/events?last_event_id={mid}")
    assert [e["id"] for e in by_query] == [e["id"] for e in whole if int(e["id"]) > int(mid)]
    by_header = _read(api, f"/api/runs/{run['id']}/events?last_event_id=0", headers={"Last-Event-ID": mid})
    assert by_header == by_query
    r = api.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": "x1"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["header", "Last-Event-ID"]


def test_global_stream_history_of_active_runs_then_live(api):
    before = api.get("/api/runs").json()["last_event_id"]
    finished = start_run(api)
    wait_final(api, finished["id"])
    active = start_run(api, **SLOW)
    wait_for(lambda: api.get(f"/api/runs/{active['id']}").json()["status"] == "running")
    # a late watcher without an id sees the active run from its start (not the finished one's past)
    events = _read(api, "/api/events", until=lambda e: e["event"] == "done" and e["data"]["run_id"] == active["id"])
    mine = [e for e in events if e["data"]["run_id"] == active["id"]]
    assert mine[0]["data"]["status"] == "queued", "history of the active run is replayed"
    assert all(e["data"]["run_id"] != finished["id"] for e in events if int(e["id"]) < int(mine[0]["id"]))
    # with an id, it gets everything after it, in order, finished run included
    everything = _read(api, f"/api/events?last_event_id={before}",
                       until=lambda e: e["event"] == "done" and e["data"]["run_id"] == active["id"])
    assert {e["data"]["run_id"] for e in everything} >= {finished["id"], active["id"]}
    assert [int(e["id"]) for e in everything] == list(range(before + 1, int(everything[-1]["id"]) + 1))


def test_sweep_events_and_stream_end(api):
    r = api.post("/api/scenarios/reference/runs", json={"only": ["ref-none", "ref-plugin-default"], "server": FAST})
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["total"] == 2 and len(sweep["runs"]) == 2
    events = _read(api, f"/api/sweeps/{sweep['id']}/events")
    assert events[0]["event"] == "sweep" and events[0]["data"]["status"] == "queued"
    assert events[-1]["event"] == "sweep_done"
    final = events[-1]["data"]["sweep"]
    assert final["status"] == "succeeded" and final["counts"] == {"succeeded": 2} and final["finished"] == 2
    dones = [e["data"]["run"]["label"] for e in events if e["event"] == "done"]
    assert sorted(dones) == ["ref-none", "ref-plugin-default"]
    progress = [e["data"] for e in events if e["event"] == "sweep"]
    assert [p["finished"] for p in progress] == sorted(p["finished"] for p in progress)
    assert api.get(f"/api/sweeps/{sweep['id']}").json()["status"] == "succeeded"
    assert api.post(f"/api/sweeps/{sweep['id']}/cancel").status_code == 409


def test_idle_stream_gets_keepalive_comments(tmp_path):
    with client_for(tmp_path / "data", sse_keepalive_s=0.2) as api:
        comments = []
        with api.stream("GET", "/api/events") as resp:
            for ev in sse_events(resp.iter_lines()):
                if "comment" in ev and "id" not in ev:
                    comments.append(ev)
                if len(comments) >= 3:
                    break
        assert comments[0] == {"comment": "fastzero-lab events"}, "the opening block is a comment, not an event"
        assert [c["comment"] for c in comments[1:]] == ["keepalive", "keepalive"]


def test_a_frame_is_encoded_once_per_event(tmp_path):
    """The web layer frames events (storage knows no wire format), once per event: every live
    subscriber and a replay of the same event get the same bytes object."""
    from app.api.events import frame
    from lab.service.store import Store

    store = Store(tmp_path)
    try:
        ev = store.append_event("progress", "r1", None, {"n": 1})
        first = frame(ev)
        assert first == f"event: progress\ndata: {ev.json}\nid: {ev.id}\n\n".encode()
        assert frame(ev) is first
        (replayed,) = store.events_after(ev.id - 1)
        assert replayed is not ev and frame(replayed) is first
    finally:
        store.close()
