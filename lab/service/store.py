"""SQLite persistence: runs, sweeps and the event log, under $LAB_DATA_DIR (default ./var).

- WAL mode, synchronous=FULL: a commit survives a kill -9 and a power cut (about 0.3 ms
  a commit on this machine's disk, cheap next to 20 progress events a second).
- One writer connection behind a lock; readers use one connection per thread, so a
  long history replay never waits behind a write and vice versa.
- Event ids are global, monotonic and never reused (AUTOINCREMENT + explicit allocation
  under the write lock), so `Last-Event-ID` means the same thing across restarts.
- A run's row and the event announcing it can be written in one transaction: nothing
  is announced that a crash could lose.
- Opening the store turns runs left `running` by a dead service into `interrupted`, with
  the events a watcher expects (state, then done); a `queued` run whose job is kept (the
  jobs table) stays queued for the next service to queue again (queued_jobs()); sweeps
  with no run left queued are closed. A run whose
  final row was committed but whose `done` event was not (the service died in between)
  gets its `done` then, carrying the committed row: a run stream always ends.
- Opening checks the recorded schema version: an older database is migrated (MIGRATIONS,
  in order, in one transaction), a newer one is refused (StoreError) and left untouched.
- prune_progress() deletes progress events of long-finished runs (state, done and sweep
  events are kept forever); ids stay unique, a resume past a pruned range just skips it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.domain.run import ACTIVE, FINAL
from lab.service.classbook import ClassBook

log = logging.getLogger("lab.service.store")

INTERRUPTED_ERROR = "the service stopped before this run finished"

# The schema as version 1 created it. Never edit it: change the schema by appending a migration.
_BASELINE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    client TEXT NOT NULL,
    sweep_id TEXT,
    server_id TEXT,
    label TEXT,
    created_at REAL,
    finished_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep_id);
CREATE INDEX IF NOT EXISTS runs_client ON runs(client);
CREATE TABLE IF NOT EXISTS sweeps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL,
    finished_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sweeps_status ON sweeps(status);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    run_id TEXT,
    sweep_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE INDEX IF NOT EXISTS events_sweep ON events(sweep_id, id);
"""

# Ordered migrations: MIGRATIONS[i] takes a database from version i + 1 to i + 2, in one
# transaction with the version bump. To change the schema, append one entry (SQL statements
# separated by ';'); never edit or reorder a landed one. Run fields need none: a run's row is
# its JSON `data`; a column is only for what queries filter or sort on.
MIGRATIONS: tuple[str, ...] = (
    # 2: the label and name filters (GET /api/runs?label=, /api/sweeps?name=), and prune's count
    #    of progress events, without a scan of the whole table.
    """CREATE INDEX IF NOT EXISTS runs_label ON runs(label);
       CREATE INDEX IF NOT EXISTS sweeps_name ON sweeps(name);
       CREATE INDEX IF NOT EXISTS events_type ON events(type, id)""",
    # 3: Idempotency-Key answers of the API's creating POSTs (replayed on a retry), and the
    #    creation time of runs for cursor pages and since/until.
    """CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
           created_at REAL NOT NULL, status INTEGER, response TEXT);
       CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created_at);
       CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at, seq)""",
    # 4: students (GET /api/runs?student=, the class view) and their guesses before the talk's
    #    acts (lab.service.classbook).
    """ALTER TABLE runs ADD COLUMN student TEXT;
       UPDATE runs SET student = json_extract(data, '$.student');
       CREATE INDEX IF NOT EXISTS runs_student ON runs(student, created_at);
       CREATE TABLE IF NOT EXISTS guesses (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
           student TEXT NOT NULL, target TEXT NOT NULL, created_at REAL NOT NULL, data TEXT NOT NULL);
       CREATE INDEX IF NOT EXISTS guesses_target ON guesses(target, created_at)""",
    # 5: the scheduler's queued jobs (lab.service.jobs.Job.to_dict(): who asked, what it needs, its sweep's
    #    parallelism), so a restart queues them again; a row lives while its run is queued.
    """CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data TEXT NOT NULL)""",
    # 6: the class session (its join code), its members (canonical name, display name, key's hash),
    #    each act's guessing state, and guesses bound to a session and a member (lab.service.classbook).
    """CREATE TABLE IF NOT EXISTS class_sessions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
           code TEXT NOT NULL, started_at REAL NOT NULL);
       CREATE TABLE IF NOT EXISTS class_members (session TEXT NOT NULL, canonical TEXT NOT NULL,
           display TEXT NOT NULL, key_hash TEXT UNIQUE, joined_at REAL NOT NULL, PRIMARY KEY (session, canonical));
       CREATE TABLE IF NOT EXISTS class_acts (session TEXT NOT NULL, act TEXT NOT NULL, reopened_at REAL,
           revealed_at REAL, PRIMARY KEY (session, act));
       ALTER TABLE guesses ADD COLUMN session TEXT;
       ALTER TABLE guesses ADD COLUMN canonical TEXT;
       CREATE INDEX IF NOT EXISTS guesses_member ON guesses(session, canonical, target)""",
)
SCHEMA_VERSION = 1 + len(MIGRATIONS)


class StoreError(RuntimeError):
    """The database cannot be used by this version of the lab."""


def _statements(script: str) -> list[str]:
    return [st.strip() for st in script.split(";") if st.strip()]


def _stored_version(conn: sqlite3.Connection) -> int | None:
    """The schema version a database records; None for a new, empty one."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None


def migrate(conn: sqlite3.Connection, path: Path | str = "the database") -> tuple[int, int]:
    """Bring the database to SCHEMA_VERSION; returns (version found, version now). A new
    database gets the baseline, then every migration. StoreError for a newer version."""
    conn.execute("BEGIN IMMEDIATE")  # one opener migrates; the others then see the result
    try:
        found = _stored_version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(f"{path} has schema version {found}, newer than this fastzero-lab knows "
                             f"({SCHEMA_VERSION}): run a newer lab, or point LAB_DATA_DIR at another directory")
        if found is None:
            for st in _statements(_BASELINE):
                conn.execute(st)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '1')")
        for version, script in enumerate(MIGRATIONS[(found or 1) - 1:], start=(found or 1) + 1):
            for st in _statements(script):
                conn.execute(st)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return (found or 0), SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Event:
    """One published event. `json` is its data as stored (it includes id and type); how it
    travels (Server-Sent Events) is the web layer's business (app/api/events.py)."""

    id: int
    type: str
    run_id: str | None
    sweep_id: str | None
    json: str

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.json)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Store(ClassBook):
    """The lab's database. Thread-safe; close() when done.

    Queries run on the calling thread's own read-only connection (`_r()`), so a long replay never waits
    behind a write; writes go through one writer connection (`_transaction()`). Opening it recovers
    what a dead service left queued or running (`recover`)."""

    def __init__(self, data_dir: str | os.PathLike[str], recover: bool = True) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "lab.sqlite3"
        self._wlock = threading.Lock()
        self._w = _connect(self.path)
        mode = self._w.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {self.path} (got {mode})")
        self._w.execute("PRAGMA synchronous=FULL")
        try:
            found, now = migrate(self._w, self.path)
        except BaseException:
            self._w.close()
            raise
        if found and found != now:
            log.warning("migrated %s from schema version %d to %d", self.path, found, now)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._last_event_id = self._max_event_id()
        self.announced: list[str] = []  # finished runs whose `done` recover() sent late
        self.recovered: list[str] = self.recover() if recover else []

    # -- connections ---------------------------------------------------------------------
    def _r(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._w.close()

    def _max_event_id(self) -> int:
        row = self._w.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        top = self._w.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
        return max(int(row[0]) if row else 0, int(top))

    @property
    def last_event_id(self) -> int:
        return self._last_event_id

    # -- writes ----------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection, under the write lock; rolled back
        (and the event id counter re-read) if anything in it fails."""
        with self._wlock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._w.execute("BEGIN IMMEDIATE")
            try:
                yield self._w
                self._w.execute("COMMIT")
            except BaseException:
                self._w.execute("ROLLBACK")
                self._last_event_id = self._max_event_id()
                raise

    def _upsert_job(self, job: dict[str, Any]) -> None:
        self._w.execute("INSERT OR REPLACE INTO jobs(id, seq, data) VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 "
                        "FROM jobs), ?)", (job["id"], _dumps(job)))

    def queued_jobs(self) -> list[dict[str, Any]]:
        """The jobs of queued runs a previous service left (lab.service.jobs.Job.to_dict()), in queue order."""
        return [json.loads(text) for (text,) in self._r().execute(
            "SELECT data FROM jobs WHERE id IN (SELECT id FROM runs WHERE status = 'queued') ORDER BY seq")]

    def _upsert_run(self, run: dict[str, Any]) -> None:
        if run["status"] != "queued":  # its job has left the queue
            self._w.execute("DELETE FROM jobs WHERE id = ?", (run["id"],))
        self._w.execute(
            """INSERT INTO runs(id, status, client, sweep_id, server_id, label, student, created_at, finished_at,
                 data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET status=excluded.status, client=excluded.client,
                 sweep_id=excluded.sweep_id, server_id=excluded.server_id, label=excluded.label,
                 student=excluded.student, created_at=excluded.created_at, finished_at=excluded.finished_at,
                 data=excluded.data""",
            (run["id"], run["status"], run["client"], run.get("sweep_id"), run.get("server_id"), run.get("label"),
             run.get("student"), run.get("created_at"), run.get("finished_at"), _dumps(run)),
        )

    def _upsert_sweep(self, sweep: dict[str, Any]) -> None:
        self._w.execute(
            """INSERT INTO sweeps(id, name, status, created_at, finished_at, data) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET name=excluded.name, status=excluded.status,
                 created_at=excluded.created_at, finished_at=excluded.finished_at, data=excluded.data""",
            (sweep["id"], sweep["name"], sweep["status"], sweep.get("created_at"), sweep.get("finished_at"),
             _dumps(sweep)),
        )

    def _insert_event(self, type_: str, run_id: str | None, sweep_id: str | None, fields: dict[str, Any]) -> Event:
        eid = self._last_event_id + 1
        ts = time.time()
        payload = {"id": eid, "type": type_, "ts": round(ts, 6), "run_id": run_id, "sweep_id": sweep_id, **fields}
        text = _dumps(payload)
        self._w.execute("INSERT INTO events(id, ts, type, run_id, sweep_id, data) VALUES (?, ?, ?, ?, ?, ?)",
                        (eid, ts, type_, run_id, sweep_id, text))
        return Event(eid, type_, run_id, sweep_id, text)

    def append_event(
        self,
        type_: str,
        run_id: str | None = None,
        sweep_id: str | None = None,
        fields: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        sweep: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
    ) -> Event:
        """Write an event (and the run/sweep it announces, and a queued run's job) in one transaction;
        return it with its id."""
        with self._transaction():
            if run is not None:
                self._upsert_run(run)
            if job is not None:
                self._upsert_job(job)
            if sweep is not None:
                self._upsert_sweep(sweep)
            ev = self._insert_event(type_, run_id, sweep_id, fields or {})
        self._last_event_id = ev.id  # after the commit: a reader's cut-off never runs ahead of the database
        return ev

    def save_run(self, run: dict[str, Any]) -> None:
        with self._transaction():
            self._upsert_run(run)

    def save_sweep(self, sweep: dict[str, Any]) -> None:
        with self._transaction():
            self._upsert_sweep(sweep)

    # -- reads -----------------------------------------------------------------------------
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._r().execute("SELECT data FROM runs WHERE id=?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list_runs(
        self,
        status: str | None = None,
        client: str | None = None,
        sweep_id: str | None = None,
        server_id: str | None = None,
        label: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], int]:
        """Runs matching the filters (None = any) and the total count before limit/offset."""
        w = _Where.equal(status=status, client=client, sweep_id=sweep_id, server_id=server_id, label=label)
        conn = self._r()
        total = conn.execute(f"SELECT COUNT(*) FROM runs{w}", w.args).fetchone()[0]
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT data FROM runs{w} ORDER BY seq {order} LIMIT ? OFFSET ?"
        rows = conn.execute(sql, [*w.args, -1 if limit is None else limit, offset]).fetchall()
        return [json.loads(r[0]) for r in rows], total

    def page(self, table: str, filters: dict[str, Any], sort: str = "-created_at",
             after: tuple[Any, int] | None = None, limit: int = 100, since: float | None = None,
             until: float | None = None) -> tuple[list[dict[str, Any]], int, tuple[Any, int] | None]:
        """One page of `table` (runs or sweeps) by keyset: rows, total matching (all pages), and
        the key of the last row when more follow (the next page starts after it).

        `filters`: column or `server.FIELD` (a field of the run's server) -> value; None = any.
        `sort`: a SORT_KEYS name, `-` first for descending (the default: newest first).
        `since`/`until`: created_at bounds (epoch seconds, until exclusive)."""
        if table not in ("runs", "sweeps"):
            raise ValueError(table)
        desc = sort.startswith("-")
        key = SORT_KEYS[sort.lstrip("-")]
        w = _page_filters(filters, since, until)
        conn = self._r()
        total = conn.execute(f"SELECT COUNT(*) FROM {table}{w}", w.args).fetchone()[0]
        if after is not None:  # keyset: rows past the last one shown, in sort order
            op = "<" if desc else ">"
            w.add(f"({key} {op} ? OR ({key} = ? AND seq {op} ?))", after[0], after[0], after[1])
        order = "DESC" if desc else "ASC"
        rows = conn.execute(f"SELECT data, {key}, seq FROM {table}{w} ORDER BY {key} {order}, seq {order} "
                            "LIMIT ?", [*w.args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        last = (rows[-1][1], rows[-1][2]) if more and rows else None
        return [json.loads(r[0]) for r in rows], total, last

    def latest_by_label(self, labels: Sequence[str], status: str) -> dict[str, dict[str, Any]]:
        """{label: its newest run with `status`} for those of `labels` that have one (one query)."""
        if not labels:
            return {}
        marks = ", ".join("?" * len(labels))
        rows = self._r().execute(
            "SELECT label, data FROM (SELECT label, data, ROW_NUMBER() OVER (PARTITION BY label "
            "ORDER BY COALESCE(created_at, 0) DESC, seq DESC) AS n FROM runs "
            f"WHERE status = ? AND label IN ({marks})) WHERE n = 1", [status, *labels]).fetchall()
        return {label: json.loads(data) for label, data in rows}

    def runs_measuring(self, client: str, matches: list[dict[str, Any]], label: str,
                       limit: int) -> tuple[list[dict[str, Any]], int]:
        """Runs of `client` whose server agrees with one of `matches` (server field -> value), or that
        carry `label` with one of their zero modes (lab.domain.scenarios.rows_of, in SQL): the newest
        `limit`, and how many in all."""
        def agree(fields: dict[str, Any]) -> tuple[str, list[Any]]:
            if not all(k.isidentifier() for k in fields):  # names go into the SQL text
                raise ValueError(fields)
            return (" AND ".join(f"json_extract(data, '$.server.{k}') IS ?" for k in fields) or "1",
                    [int(v) if isinstance(v, bool) else v for v in fields.values()])
        either, args = [], []
        for match in matches:
            sql, values = agree(match)
            modes = {k: match.get(k) for k in ("zeromode", "fastzeromode")}
            label_sql, label_values = agree(modes)
            either += [f"({sql})", f"(label = ? AND {label_sql})"]
            args += [*values, label, *label_values]
        if not either:
            return [], 0
        where = f" WHERE client = ? AND ({' OR '.join(either)})"
        conn = self._r()
        total = conn.execute(f"SELECT COUNT(*) FROM runs{where}", [client, *args]).fetchone()[0]
        rows = conn.execute(f"SELECT data FROM runs{where} ORDER BY COALESCE(created_at, 0) DESC, seq DESC LIMIT ?",
                            [client, *args, limit]).fetchall()
        return [json.loads(r[0]) for r in rows], total

    def run_counts(self) -> dict[str, int]:
        """How many runs there are in each status (the runs_status index answers it)."""
        return dict(self._r().execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())

    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        row = self._r().execute("SELECT data FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def list_sweeps(self, status: str | None = None, name: str | None = None, limit: int = 100,
                    offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        w = _Where.equal(status=status, name=name)
        conn = self._r()
        total = conn.execute(f"SELECT COUNT(*) FROM sweeps{w}", w.args).fetchone()[0]
        rows = conn.execute(f"SELECT data FROM sweeps{w} ORDER BY seq DESC LIMIT ? OFFSET ?",
                            [*w.args, limit, offset]).fetchall()
        return [json.loads(r[0]) for r in rows], total

    def events_after(
        self,
        after: int,
        upto: int | None = None,
        run_id: str | None = None,
        sweep_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events with after < id <= upto (oldest first), optionally for one run or sweep."""
        w = _Where().add("id > ?", after).add("id <= ?", upto).add("run_id = ?", run_id).add("sweep_id = ?", sweep_id)
        sql = f"SELECT id, type, run_id, sweep_id, data FROM events{w} ORDER BY id LIMIT ?"
        rows = self._r().execute(sql, [*w.args, limit]).fetchall()
        return [Event(*r) for r in rows]

    def closing_event_id(self, kind: str, key: str) -> int | None:
        """The id of the event that ends a run's stream (`done`) or a sweep's (`sweep_done`)."""
        if kind == "run":
            sql = "SELECT MIN(id) FROM events WHERE run_id = ? AND type = 'done'"
        else:
            sql = "SELECT MIN(id) FROM events WHERE sweep_id = ? AND type = 'sweep_done'"
        row = self._r().execute(sql, (key,)).fetchone()
        return row[0] if row and row[0] is not None else None

    def first_event_id(self, run_ids: Iterable[str] = (), sweep_ids: Iterable[str] = ()) -> int | None:
        """The id of the oldest event of any of these runs or sweeps."""
        best: int | None = None
        conn = self._r()
        for col, ids in (("run_id", list(run_ids)), ("sweep_id", list(sweep_ids))):
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                row = conn.execute(f"SELECT MIN(id) FROM events WHERE {col} IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchone()
                if row and row[0] is not None:
                    best = row[0] if best is None else min(best, row[0])
        return best

    def active_ids(self) -> tuple[list[str], list[str]]:
        """Ids of runs and sweeps still queued or running."""
        conn = self._r()
        marks = ",".join("?" * len(ACTIVE))
        runs = [r[0] for r in conn.execute(f"SELECT id FROM runs WHERE status IN ({marks})", ACTIVE)]
        sweeps = [r[0] for r in conn.execute(f"SELECT id FROM sweeps WHERE status IN ({marks})", ACTIVE)]
        return runs, sweeps

    # -- recovery at open: what a dead service left queued or running ends `interrupted` --
    def recover(self) -> list[str]:
        """Runs and sweeps a dead service left active become `interrupted` (with events); ids returned.

        Finished runs missing their `done` event get it (ids in self.announced)."""
        now = time.time()
        with self._transaction():
            changed = self._interrupt_runs(now)
            self.announced += self._announce_orphans()
            changed += self._close_sweeps(now)
        return changed

    def _event(self, type_: str, run_id: str | None, sweep_id: str | None, fields: dict[str, Any]) -> None:
        """An event inside an open transaction (recovery runs alone, at open)."""
        self._last_event_id = self._insert_event(type_, run_id, sweep_id, fields).id

    def _interrupt_runs(self, now: float) -> list[str]:
        """Running runs, and queued ones that cannot be queued again (no job kept, or on a managed
        server: those stopped with the service)."""
        rows = self._w.execute(
            """SELECT data FROM runs WHERE status = 'running' OR (status = 'queued' AND (server_id IS NOT NULL
               OR id NOT IN (SELECT id FROM jobs))) ORDER BY seq""").fetchall()
        changed = []
        for (text,) in rows:
            run = json.loads(text)
            run.update(status="interrupted", error=run.get("error") or INTERRUPTED_ERROR,
                       finished_at=run.get("finished_at") or now)
            self._upsert_run(run)
            rid, sid = run["id"], run.get("sweep_id")
            self._event("state", rid, sid, {"status": "interrupted", "phase": "finished"})
            self._event("done", rid, sid, {"status": "interrupted", "run": run})
            changed.append(rid)
        return changed

    def _announce_orphans(self) -> list[str]:
        """Runs committed final whose service died before announcing `done` (a run's last event)."""
        marks = ",".join("?" * len(FINAL))
        orphans = self._w.execute(
            f"""SELECT id, sweep_id, data FROM runs WHERE status IN ({marks}) AND COALESCE(
                (SELECT type FROM events WHERE events.run_id = runs.id ORDER BY id DESC LIMIT 1), '')
                != 'done' ORDER BY seq""", FINAL).fetchall()
        for rid, sid, text in orphans:
            run = json.loads(text)
            self._event("done", rid, sid, {"status": run["status"], "run": run})
        return [rid for rid, _sid, _text in orphans]

    def _close_sweeps(self, now: float) -> list[str]:
        rows = self._w.execute(
            f"SELECT data FROM sweeps WHERE status IN ({','.join('?' * len(ACTIVE))}) ORDER BY seq", ACTIVE).fetchall()
        changed = []
        for (text,) in rows:
            sweep = json.loads(text)
            statuses = self._run_statuses(sweep.get("run_ids", []))
            if "queued" in statuses:  # its queued runs are queued again: it goes on
                continue
            done = [s for s in statuses if s in FINAL]
            # Every run had finished: the sweep had too, it only missed its last event.
            whole = len(done) == len(sweep.get("run_ids", [])) and "interrupted" not in done
            status = sweep_status(done) if whole else "interrupted"
            sweep.update(status=status, finished_at=sweep.get("finished_at") or now,
                         counts=count_statuses(statuses), finished=len(done))
            self._upsert_sweep(sweep)
            self._event("sweep", None, sweep["id"], sweep_event_fields(sweep))
            self._event("sweep_done", None, sweep["id"], {"status": status, "sweep": sweep})
            changed.append(sweep["id"])
        return changed

    def _run_statuses(self, run_ids: Sequence[str]) -> list[str]:
        out = []
        for rid in run_ids:
            row = self._w.execute("SELECT status FROM runs WHERE id=?", (rid,)).fetchone()
            if row:
                out.append(row[0])
        return out

    # -- idempotency keys (the API's retried POSTs) -------------------------------------------
    def idem_claim(self, key: str, fingerprint: str, keep_s: float,
                   stale_s: float = 120.0) -> tuple[str, int | None, str | None] | None:
        """Claim `key` for a request: None when claimed now (then idem_complete or idem_release
        it); else the earlier use's (fingerprint, status, response), status None while that
        request is still being answered. Keys older than `keep_s` are forgotten; a claim left
        unanswered for `stale_s` (its service died) is taken over."""
        now = time.time()
        with self._transaction() as w:
            w.execute("DELETE FROM idempotency WHERE created_at < ? OR (status IS NULL AND created_at < ?)",
                      (now - keep_s, now - stale_s))
            row = w.execute("SELECT fingerprint, status, response FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is None:
                w.execute("INSERT INTO idempotency(key, fingerprint, created_at) VALUES (?, ?, ?)",
                          (key, fingerprint, now))
        return None if row is None else (row[0], row[1], row[2])

    def idem_complete(self, key: str, status: int, response: str) -> None:
        with self._transaction() as w:
            w.execute("UPDATE idempotency SET status = ?, response = ? WHERE key = ?", (status, response, key))

    def idem_release(self, key: str) -> None:
        """Forget a claim whose request was refused: a retry may try again."""
        with self._transaction() as w:
            w.execute("DELETE FROM idempotency WHERE key = ? AND status IS NULL", (key,))

    def prune_progress(self, finished_before: float | None = None, keep_at_most: int | None = None) -> int:
        """Delete progress events of finished runs: those finished before `finished_before`
        (epoch s), then the oldest beyond `keep_at_most` progress rows. Returns how many."""
        marks = ",".join("?" * len(FINAL))
        deleted = 0
        with self._transaction() as w:
            if finished_before is not None:
                deleted += w.execute(
                    f"""DELETE FROM events WHERE type = 'progress' AND run_id IN
                        (SELECT id FROM runs WHERE status IN ({marks}) AND finished_at < ?)""",
                    (*FINAL, finished_before)).rowcount
            if keep_at_most is not None:
                total = w.execute("SELECT COUNT(*) FROM events WHERE type = 'progress'").fetchone()[0]
                if total > keep_at_most:
                    deleted += w.execute(
                        f"""DELETE FROM events WHERE id IN (SELECT e.id FROM events e JOIN runs r ON r.id = e.run_id
                            WHERE e.type = 'progress' AND r.status IN ({marks}) ORDER BY e.id LIMIT ?)""",
                        (*FINAL, total - keep_at_most)).rowcount
        return deleted



class _Where:
    """A WHERE clause and its arguments, one condition at a time. A None argument means "any":
    its condition is left out. Renders as "" (no conditions) or " WHERE a AND b"."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    @classmethod
    def equal(cls, **columns: Any) -> _Where:
        w = cls()
        for col, value in columns.items():
            w.add(f"{col} = ?", value)
        return w

    def add(self, sql: str, *args: Any) -> _Where:
        """`sql` with one `?` per argument."""
        if all(a is not None for a in args):
            self.clauses.append(sql)
            self.args.extend(args)
        return self

    def __str__(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def _page_filters(filters: dict[str, Any], since: float | None, until: float | None) -> _Where:
    """The conditions of Store.page: columns, `server.FIELD` (in the run's JSON), created_at bounds."""
    w = _Where()
    for name, value in filters.items():
        if value is None:
            continue
        field = name.split(".", 1)[1] if name.startswith("server.") else None
        if not (field or name).isidentifier():  # names go into the SQL text: nothing but identifiers
            raise ValueError(name)
        if field:
            w.add(f"json_extract(data, '$.server.{field}') = ?", int(value) if isinstance(value, bool) else value)
        elif name == "contended":  # a run field, not a column; not measured (null) counts as not contended
            w.add("COALESCE(json_extract(data, '$.contended'), 0) = ?", int(bool(value)))
        else:
            w.add(f"{name} = ?", value)
    return w.add("created_at >= ?", since).add("created_at < ?", until)


# Sort orders of Store.page: name -> SQL (never NULL, so keyset pages are exact).
SORT_KEYS = {
    "created_at": "COALESCE(created_at, 0)",
    "finished_at": "COALESCE(finished_at, 0)",
    "duration_s": "COALESCE(json_extract(data, '$.duration_s'), -1)",
}


def sweep_status(statuses: Iterable[str]) -> str:
    """A finished sweep's status from its runs': the worst of them (shared with the manager)."""
    found = set(statuses)
    for status in ("interrupted", "cancelled", "failed"):
        if status in found:
            return status
    return "succeeded"


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


def sweep_event_fields(sweep: dict[str, Any]) -> dict[str, Any]:
    """The fields of a `sweep` event (a sweep's progress), shared with the manager."""
    return {"status": sweep["status"], "name": sweep.get("name"), "total": sweep.get("total"),
            "finished": sweep.get("finished"), "counts": sweep.get("counts", {})}
