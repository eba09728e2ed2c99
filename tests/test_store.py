"""The SQLite store: WAL, ids that survive restarts, atomic run+event writes, crash recovery."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from lab.runs import Run
from lab.spec import build_spec
from lab.store import INTERRUPTED_ERROR, Store


def _run(status: str, **kw) -> dict:
    run = Run(client="qemu-img", server=build_spec({"size": "8M"}), **kw)
    run.status = status
    return run.to_dict()


def test_wal_mode_and_full_sync(tmp_path: Path):
    store = Store(tmp_path)
    try:
        conn = sqlite3.connect(store.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
        assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_event_ids_increase_and_continue_after_reopen(tmp_path: Path):
    store = Store(tmp_path)
    ids = [store.append_event("progress", "r1", None, {"n": i}).id for i in range(5)]
    store.close()
    assert ids == [1, 2, 3, 4, 5]
    store = Store(tmp_path)
    try:
        ev = store.append_event("progress", "r1", None, {"n": 5})
        assert ev.id == 6
        data = ev.data
        assert (data["id"], data["type"], data["run_id"], data["n"]) == (6, "progress", "r1", 5)
        assert [e.id for e in store.events_after(2, run_id="r1")] == [3, 4, 5, 6]
        assert [e.id for e in store.events_after(2, upto=4)] == [3, 4]
    finally:
        store.close()


def test_ids_are_never_reused_after_deletes(tmp_path: Path):
    store = Store(tmp_path)
    for _ in range(3):
        store.append_event("progress", "r1")
    store._w.execute("DELETE FROM events")  # as a future retention policy might
    store.close()
    store = Store(tmp_path)
    try:
        assert store.append_event("progress", "r1").id == 4
    finally:
        store.close()


def test_run_row_and_its_event_commit_together(tmp_path: Path):
    store = Store(tmp_path)
    try:
        row = _run("succeeded")
        ev = store.append_event("done", row["id"], None, {"status": "succeeded", "run": row}, run=row)
        # another connection (another process would be the same) sees both
        conn = sqlite3.connect(store.path)
        assert json.loads(conn.execute("SELECT data FROM runs WHERE id=?", (row["id"],)).fetchone()[0]) == row
        assert conn.execute("SELECT type FROM events WHERE id=?", (ev.id,)).fetchone()[0] == "done"
        conn.close()
        # a failing write leaves neither behind
        bad = {**_run("succeeded"), "client": None}
        with contextlib.suppress(sqlite3.IntegrityError):
            store.append_event("done", bad["id"], None, {}, run=bad)
        assert store.get_run(bad["id"]) is None
        assert store.last_event_id == ev.id
        assert store.events_after(ev.id) == []
    finally:
        store.close()


def test_open_marks_active_runs_and_sweeps_interrupted(tmp_path: Path):
    store = Store(tmp_path)
    done = _run("succeeded", sweep_id="s1")
    running = _run("running", sweep_id="s1")
    queued = _run("queued")
    for row in (done, running, queued):
        store.append_event("state", row["id"], row.get("sweep_id"), {"status": row["status"]}, run=row)
    store.save_sweep({"id": "s1", "name": "reference", "status": "running", "run_ids": [done["id"], running["id"]]})
    last = store.last_event_id
    store.close()

    store = Store(tmp_path)
    try:
        assert sorted(store.recovered) == sorted([running["id"], queued["id"], "s1"])
        assert store.get_run(done["id"]) == done, "a finished run is untouched"
        for rid in (running["id"], queued["id"]):
            row = store.get_run(rid)
            assert row["status"] == "interrupted" and row["error"] == INTERRUPTED_ERROR
            assert row["finished_at"] is not None
            types = [(e.type, e.data["status"]) for e in store.events_after(last, run_id=rid)]
            assert types == [("state", "interrupted"), ("done", "interrupted")]
            assert store.closing_event_id("run", rid) > last
        sweep = store.get_sweep("s1")
        assert sweep["status"] == "interrupted" and sweep["counts"] == {"succeeded": 1, "interrupted": 1}
        assert [e.type for e in store.events_after(last, sweep_id="s1") if e.run_id is None] == ["sweep", "sweep_done"]
        assert store.active_ids() == ([], [])
    finally:
        store.close()
    # a second open has nothing more to recover
    store = Store(tmp_path)
    assert store.recovered == []
    store.close()


def test_filters_and_order(tmp_path: Path):
    store = Store(tmp_path)
    try:
        rows = [_run("succeeded", sweep_id="a"), _run("failed", sweep_id="a"), _run("succeeded")]
        for r in rows:
            store.save_run(r)
        got, total = store.list_runs()
        assert total == 3 and [r["id"] for r in got] == [r["id"] for r in reversed(rows)]
        got, total = store.list_runs(sweep_id="a", newest_first=False)
        assert total == 2 and [r["id"] for r in got] == [rows[0]["id"], rows[1]["id"]]
        got, total = store.list_runs(status="succeeded", limit=1)
        assert total == 2 and len(got) == 1
        assert store.list_runs(client="nbdcopy")[1] == 0
    finally:
        store.close()


def test_committed_event_survives_kill_9(tmp_path: Path):
    """A writer killed right after append_event returns: the row and its event are on disk."""
    script = (
        "import os, signal, sys\n"
        "from lab.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "row = {'id': 'r1', 'status': 'succeeded', 'client': 'qemu-img', 'server': {}}\n"
        "ev = s.append_event('done', 'r1', None, {'status': 'succeeded', 'run': row}, run=row)\n"
        "print(ev.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=60)
    assert out.returncode == -9, out.stderr
    store = Store(tmp_path)
    try:
        assert store.get_run("r1")["status"] == "succeeded"
        assert [e.type for e in store.events_after(0)] == ["done"]
        assert store.last_event_id == int(out.stdout)
    finally:
        store.close()
