"""Durability: a result is committed before anyone hears of it; a kill between result and
event loses nothing announced; old progress events are pruned, state and done never."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
from apiutil import FAST, client_for, sse_events, wait_for

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service.manager import Manager, ManagerConfig, parse_fault
from lab.service.store import Store
from testkit import descendants, mentioning


def _fresh_row(db: Path, run_id: str) -> dict | None:
    """The run's row as another process would read it: a new connection, nothing cached."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None
    finally:
        conn.close()


def test_result_is_committed_before_it_is_announced(tmp_path):
    store = Store(tmp_path / "data")
    m = Manager(store, ManagerConfig(workers=2, run_timeout_s=60)).start()
    seen: list[tuple[str, str, dict | None]] = []
    sub = m.subscribe(after=0)
    stop = threading.Event()

    def watch() -> None:  # checks the database the moment each event arrives
        while not stop.is_set():
            for ev in sub.get(timeout=0.2):
                if ev.type == "done" or (ev.type == "state" and ev.data.get("phase") == "finished"):
                    seen.append((ev.type, ev.run_id, _fresh_row(store.path, ev.run_id)))

    t = threading.Thread(target=watch)
    t.start()
    try:
        runs = [m.new_run(c, FAST) for c in ("qemu-img", "qemu-4.2")]
        for r in runs:
            m.submit(r)
        rows = {r.id: m.wait(r.id, 60) for r in runs}
        wait_for(lambda: len(seen) == 4, 10)
    finally:
        stop.set()
        t.join()
        sub.close()
        m.shutdown()
        store.close()
    for _type, rid, row in seen:
        assert row is not None and row == rows[rid], "announced before the database had it"
        assert row["status"] == "succeeded" and row["verified"] is True


def test_kill_between_result_and_done_loses_nothing_announced(tmp_path, live_service):
    """LAB_FAULT=kill-after-commit: the service dies right after a run's final row (and its
    `state finished` event) is committed, before `done`. Everything a watcher had received is
    in the database after the restart, the run's stream still ends with `done`, and its sweep
    (all of whose runs had finished) is finished too, not `interrupted`."""
    received: list[dict] = []
    svc = live_service(LAB_FAULT="kill-after-commit")
    with svc.http() as http:
        db = tmp_path / "data" / "lab.sqlite3"
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

        def watch() -> None:
            try:
                with httpx.Client(base_url=svc.base, timeout=None) as h, \
                        h.stream("GET", "/api/events", params={"last_event_id": 0}) as resp:
                    for ev in sse_events(resp.iter_lines()):
                        if "id" in ev:
                            received.append(ev)
            except httpx.HTTPError:
                pass  # the service died under us: expected

        watcher = threading.Thread(target=watch)
        watcher.start()
        wait_for(lambda: http.get("/api/health").json()["manager"]["subscribers"] == 1, 10)
        r = http.post("/api/scenarios/reference/runs", json={"only": ["ref-none"], "server": FAST})
        assert r.status_code == 202, r.text
        sweep = r.json()
        rid = sweep["run_ids"][0]
        tree = wait_for(lambda: descendants(svc.proc.pid) or None, 30)
        assert svc.proc.wait(60) == -signal.SIGKILL, svc.log_text()[-2000:]
        watcher.join(30)
        wait_for(lambda: not any(p.alive() for p in tree) and not mentioning(tmp_path / "run"), 5)
    assert "FAULT INJECTION ACTIVE" in svc.log_text()
    # The watcher got events up to the run's copy at least; `state finished` was committed and
    # handed to the stream, but whether its bytes left before the kill is a race: either way
    # the run's final row and that event are on disk (below), and no `done` went out.
    assert received and not any(e["event"] == "done" for e in received), "killed before done"
    last = received[-1]

    with client_for(tmp_path / "data") as api:
        store = api.app.state.manager.store
        assert store.announced == [rid]
        stored = {e.id: e.json for e in store.events_after(0, limit=100_000)}
        for ev in received:  # every announced event is there, byte for byte
            assert stored[int(ev["id"])] == json.dumps(ev["data"], separators=(",", ":")), ev["id"]
        row = api.get(f"/api/runs/{rid}").json()
        assert row["status"] == "succeeded" and row["verified"] is True
        finished = [e for e in store.events_after(0, run_id=rid) if e.type == "state"][-1]
        assert finished.data["phase"] == "finished" and finished.data["status"] == "succeeded"
        with api.stream("GET", f"/api/runs/{rid}/events", headers={"Last-Event-ID": last["id"]}) as resp:
            tail = [e for e in sse_events(resp.iter_lines()) if "id" in e]
        assert [e["event"] for e in tail][-1] == "done" and tail[-1]["data"]["run"] == row
        final = api.get(f"/api/sweeps/{sweep['id']}").json()
        assert final["status"] == "succeeded" and final["counts"] == {"succeeded": 1}
    with client_for(tmp_path / "data") as api:  # and it is said once only
        assert api.app.state.manager.store.announced == []


def test_fault_names_are_explicit():
    assert parse_fault(None) is None and parse_fault("") is None
    assert parse_fault("kill-after-commit") == ("kill-after-commit", None)
    assert parse_fault("pause-at:verify") == ("pause-at", "verify")
    for bad in ("kill", "pause-at:lunch", "pause-at"):
        try:
            parse_fault(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def _finished(store: Store, finished_at: float, progress: int, status: str = "succeeded") -> str:
    run = Run(client="qemu-img", server=build_spec({"size": "8M"}))
    rid = run.id
    store.append_event("state", rid, None, {"status": "queued", "phase": "queued"}, run=run.to_dict())
    for i in range(progress):
        store.append_event("progress", rid, None, {"n": i})
    run.status, run.finished_at = status, finished_at
    row = run.to_dict()
    store.append_event("state", rid, None, {"status": status, "phase": "finished"}, run=row)
    store.append_event("done", rid, None, {"status": status, "run": row})
    return rid


def test_progress_of_long_finished_runs_is_pruned(tmp_path):
    store = Store(tmp_path)
    now = time.time()
    old = _finished(store, now - 3 * 86400, 120)
    recent = _finished(store, now - 60, 120)
    active = Run(client="qemu-img", server=build_spec({"size": "8M"}))
    active.status = "running"
    store.append_event("state", active.id, None, {"status": "running", "phase": "copy"}, run=active.to_dict())
    for i in range(50):
        store.append_event("progress", active.id, None, {"n": i})
    top = store.last_event_id

    def kinds(rid: str) -> list[str]:
        return [e.type for e in store.events_after(0, run_id=rid, limit=10_000)]

    assert store.prune_progress(finished_before=now - 86400) == 120
    assert kinds(old) == ["state", "state", "done"], "state and done are kept forever"
    assert kinds(recent).count("progress") == 120
    # the row cap: oldest finished runs' progress first, never an active run's
    assert store.prune_progress(keep_at_most=100) == 70
    assert kinds(recent).count("progress") == 50 and kinds(active.id).count("progress") == 50
    assert store.prune_progress(keep_at_most=0) == 50
    assert kinds(active.id).count("progress") == 50
    store.close()
    store = Store(tmp_path, recover=False)  # ids keep growing after deletes
    assert store.last_event_id == top
    assert store.append_event("progress", active.id).id == top + 1
    store.close()


def test_manager_prunes_at_start_with_the_configured_retention(tmp_path):
    store = Store(tmp_path)
    old = _finished(store, time.time() - 7200, 30)
    keep = _finished(store, time.time() - 60, 30)
    m = Manager(store, ManagerConfig(workers=1, progress_retention_s=3600, max_progress_events=None)).start()
    try:
        count = {rid: sum(e.type == "progress" for e in store.events_after(0, run_id=rid)) for rid in (old, keep)}
        assert count == {old: 0, keep: 30}
    finally:
        m.shutdown()
        store.close()
