"""The SQLite store: WAL, ids that survive restarts, atomic run+event writes, crash recovery."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service.store import INTERRUPTED_ERROR, Store


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
        "from lab.service.store import Store\n"
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


# A database as schema version 1 (fastzero-lab before migrations existed) left it: a fixture,
# frozen here on purpose, so a change to the lab's own baseline cannot hide a broken migration.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
    client TEXT NOT NULL, sweep_id TEXT, server_id TEXT, label TEXT, created_at REAL, finished_at REAL,
    data TEXT NOT NULL);
CREATE INDEX runs_status ON runs(status);
CREATE INDEX runs_sweep ON runs(sweep_id);
CREATE INDEX runs_client ON runs(client);
CREATE TABLE sweeps (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL, finished_at REAL, data TEXT NOT NULL);
CREATE INDEX sweeps_status ON sweeps(status);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, type TEXT NOT NULL, run_id TEXT,
    sweep_id TEXT, data TEXT NOT NULL);
CREATE INDEX events_run ON events(run_id, id);
CREATE INDEX events_sweep ON events(sweep_id, id);
INSERT INTO meta(key, value) VALUES ('schema_version', '1');
"""


def _v1_database(tmp_path: Path) -> dict:
    row = _run("succeeded", label="ref-none")
    tmp_path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(tmp_path / "lab.sqlite3")
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO runs(id, status, client, label, created_at, finished_at, data) VALUES (?,?,?,?,?,?,?)",
                 (row["id"], "succeeded", "qemu-img", "ref-none", row["created_at"], 1.0, json.dumps(row)))
    conn.execute("INSERT INTO events(ts, type, run_id, data) VALUES (1.0, 'done', ?, '{}')", (row["id"],))
    conn.commit()
    conn.close()
    return row


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()


def test_an_older_database_is_migrated_on_open(tmp_path: Path):
    from lab.service.store import SCHEMA_VERSION

    row = _v1_database(tmp_path)
    store = Store(tmp_path)
    try:
        version = store._w.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION >= 2
        assert store.get_run(row["id"]) == row, "the history survives the migration"
        assert store.list_runs(label="ref-none")[1] == 1
        plan = store._w.execute("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM events WHERE type = 'progress'").fetchall()
        assert "events_type" in str(plan), plan
        assert store.last_event_id == 1
    finally:
        store.close()
    assert {"runs_label", "sweeps_name", "events_type"} <= _indexes(tmp_path / "lab.sqlite3")
    Store(tmp_path).close()  # a second open finds nothing to do


def test_a_new_database_gets_every_migration(tmp_path: Path):
    Store(tmp_path).close()
    fresh = _indexes(tmp_path / "lab.sqlite3")
    _v1_database(tmp_path / "old")
    Store(tmp_path / "old").close()
    assert _indexes(tmp_path / "old" / "lab.sqlite3") == fresh, "migrated and new databases have one schema"


def test_a_newer_database_is_refused_untouched(tmp_path: Path):
    from lab.service.store import SCHEMA_VERSION, StoreError

    _v1_database(tmp_path)
    conn = sqlite3.connect(tmp_path / "lab.sqlite3")
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    before = _indexes(tmp_path / "lab.sqlite3")
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than .* \({SCHEMA_VERSION}\)"):
        Store(tmp_path)
    assert _indexes(tmp_path / "lab.sqlite3") == before


def test_a_failing_migration_changes_nothing(tmp_path: Path, monkeypatch):
    from lab.service import store as store_mod

    _v1_database(tmp_path)
    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, "CREATE INDEX x ON no_such_table(a)"))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 1 + len(store_mod.MIGRATIONS))
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path)
    conn = sqlite3.connect(tmp_path / "lab.sqlite3")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    conn.close()
    assert "runs_label" not in _indexes(tmp_path / "lab.sqlite3"), "no half-applied migration"


def test_open_keeps_queued_runs_with_their_jobs_and_their_sweeps(tmp_path: Path):
    """A queued run whose job was kept stays queued (the next service queues it again), and so does
    its sweep; a queued run on a managed server, or without a kept job, is interrupted."""
    store = Store(tmp_path)
    done = _run("succeeded", sweep_id="s1")
    waiting = _run("queued", sweep_id="s1")
    on_server = {**_run("queued"), "server_id": "srv1"}
    lost = _run("queued")
    store.append_event("state", done["id"], "s1", {"status": "succeeded"}, run=done)
    for row in (waiting, on_server):
        store.append_event("state", row["id"], row.get("sweep_id"), {"status": "queued"}, run=row,
                           job={"id": row["id"], "kind": "run", "payload": {}, "who": {"lane": "teacher"}})
    store.append_event("state", lost["id"], None, {"status": "queued"}, run=lost)
    store.save_sweep({"id": "s1", "name": "reference", "status": "running", "run_ids": [done["id"], waiting["id"]]})
    store.close()

    store = Store(tmp_path)
    try:
        assert sorted(store.recovered) == sorted([on_server["id"], lost["id"]])
        assert store.get_run(waiting["id"])["status"] == "queued"
        assert [j["id"] for j in store.queued_jobs()] == [waiting["id"]]
        assert store.get_sweep("s1")["status"] == "running", "its sweep goes on"
        row = {**waiting, "status": "running"}
        store.append_event("state", row["id"], "s1", {"status": "running"}, run=row)
        assert store.queued_jobs() == [], "a job leaves the table when its run leaves the queue"
    finally:
        store.close()
