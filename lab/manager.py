"""The run manager: a bounded queue, a fixed set of worker threads, sweeps, managed servers.

No web imports: the web service owns one Manager, and a headless tool could too.

- submit() puts a run in a bounded queue (QueueFull when it is full); workers take runs
  in order, skipping those whose managed server is busy with another run.
- cancel(): a queued run is cancelled at once; a running one has its cancel event set
  (execute() stops its processes); a finished one is a Conflict.
- A sweep is a group of runs made from a scenario, with its own id and status.
- Managed servers are long-lived nbdkit instances runs can target by `server_id`.
- Every change goes through the event bus, which persists it before anyone sees it; a
  run's final row is committed before (with) the event that announces it.
- shutdown() interrupts queued and running runs, stops every server, and leaves no
  process behind.
- Progress events of runs that finished long ago are pruned (state and done events stay
  forever): at start and then at most every PRUNE_EVERY_S, as runs finish.
- Fault injection, for the reliability tests and bench only, and only when the environment
  says so explicitly (LAB_FAULT, logged loudly at start):
    kill-after-commit   SIGKILL the service right after a run's final row is committed,
                        before its `done` event (a power cut between result and event);
    pause-at:PHASE      hold every run at PHASE (setup, copy, verify) until it is cancelled
                        (at most PAUSE_MAX_S), so a cancel can land in that phase for sure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lab import procs
from lab.events import EventBus, Subscription
from lab.runs import FINAL, Run, execute, new_id
from lab.scenarios import get_scenario
from lab.servers import Server
from lab.spec import DEFAULT_LIMITS, Limits, ServerSpec, build_spec
from lab.store import Store, count_statuses, sweep_event_fields, sweep_status

log = logging.getLogger("lab.manager")

SHUTDOWN_ERROR = "the service shut down during this run"
FAULT_ENV = "LAB_FAULT"
FAULT_PHASES = ("setup", "copy", "verify")
PAUSE_MAX_S = 120.0
PRUNE_EVERY_S = 600.0


class ManagerError(Exception):
    """Base of the errors the API maps to status codes."""


class NotFound(ManagerError):
    pass


class Conflict(ManagerError):
    pass


class LimitExceeded(ManagerError):
    """A configured limit (queue size, number of servers) is reached: try again later."""


class QueueFull(LimitExceeded):
    pass


class ShuttingDown(ManagerError):
    pass


@dataclass(frozen=True)
class ManagerConfig:
    workers: int = 2
    queue_size: int = 64
    run_timeout_s: float | None = 600.0
    image_cache_bytes: int | None = None
    max_servers: int = 8
    subscriber_queue: int = 1000
    limits: Limits = DEFAULT_LIMITS
    shutdown_grace_s: float = 10.0
    # Progress events of runs finished longer ago than this are deleted (None: keep all) ...
    progress_retention_s: float | None = 24 * 3600.0
    # ... and beyond this many progress rows, the oldest of finished runs go first (None: no cap).
    max_progress_events: int | None = 500_000


def parse_fault(spec: str | None) -> tuple[str, str | None] | None:
    """LAB_FAULT's value as (kind, argument); None when unset. ValueError for an unknown one."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if spec == "kill-after-commit":
        return ("kill-after-commit", None)
    kind, _, arg = spec.partition(":")
    if kind == "pause-at" and arg in FAULT_PHASES:
        return ("pause-at", arg)
    raise ValueError(f"{FAULT_ENV}={spec!r}: use kill-after-commit or pause-at:{'|'.join(FAULT_PHASES)}")


@dataclass
class Sweep:
    """A group of runs made from a scenario, with its own id and status."""

    name: str
    run_ids: list[str]
    id: str = field(default_factory=new_id)
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    statuses: dict[str, str] = field(default_factory=dict)  # run id -> final status
    only: list[str] | None = None
    overrides: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return len(self.run_ids)

    def counts(self) -> dict[str, int]:
        return count_statuses(self.statuses.values())

    def final_status(self) -> str:
        return sweep_status(self.statuses.values())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "total": self.total,
                "finished": len(self.statuses), "counts": self.counts(), "run_ids": list(self.run_ids),
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "only": self.only, "overrides": self.overrides}


@dataclass
class _Job:
    run: Run
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # why it was cancelled, when not by a user: "shutdown", "server-deleted"


def _wait_done(jobs: list[_Job], wait: float) -> None:
    """Wait until every job is done, `wait` seconds at most in all."""
    deadline = time.monotonic() + wait
    for job in jobs:
        job.done.wait(max(0.0, deadline - time.monotonic()))


@dataclass
class _Managed:
    server: Server
    created_at: float = field(default_factory=time.time)
    runs: int = 0


class Manager:
    def __init__(self, store: Store, config: ManagerConfig | None = None) -> None:
        self.store = store
        self.config = config or ManagerConfig()
        self.bus = EventBus(store, self.config.subscriber_queue)
        self._cond = threading.Condition(threading.RLock())
        self._pending: deque[_Job] = deque()
        self._active: dict[str, _Job] = {}
        self._sweeps: dict[str, Sweep] = {}
        self._servers: dict[str, _Managed] = {}
        self._busy_servers: set[str] = set()
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._started = False
        self._pruned_at = 0.0
        self.fault = parse_fault(os.environ.get(FAULT_ENV))
        if self.fault is not None:
            log.warning("FAULT INJECTION ACTIVE (%s=%s): for reliability tests only", FAULT_ENV,
                        os.environ.get(FAULT_ENV))

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Manager:
        with self._cond:
            if self._started:
                return self
            self._started = True
        with contextlib.suppress(OSError):
            procs.sweep_stale_dirs()  # dirs a SIGKILLed predecessor left behind
        self.prune_events()
        for i in range(self.config.workers):
            t = threading.Thread(target=self._worker, name=f"lab-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def shutdown(self) -> None:
        """Interrupt queued and running runs, stop all servers; nothing of ours survives."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            pending = list(self._pending)
            self._pending.clear()
            for job in pending:
                self._finish_unstarted(job, "interrupted", SHUTDOWN_ERROR)
            for job in self._active.values():
                job.reason = "shutdown"
                job.cancel.set()
            self._cond.notify_all()
        deadline = time.monotonic() + self.config.shutdown_grace_s
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._workers if t.is_alive()]
        with self._cond:
            # Servers still starting are stopped by their creator, which sees _stopping.
            servers = [m for m in self._servers.values() if m.server.flags is not None]
            for m in servers:
                del self._servers[m.server.id]
        for m in servers:
            self._stop_server(m)
        if stuck:
            log.warning("workers still busy at shutdown: %s; killing their processes", ", ".join(stuck))
            procs.kill_all()

    # -- runs ------------------------------------------------------------------------------
    def new_spec(self, fields: dict[str, Any]) -> ServerSpec:
        """Validate server fields against this manager's limits (raises SpecError naming the field)."""
        return build_spec(fields, self.config.limits)

    def new_run(self, client: str, server: dict[str, Any] | ServerSpec | None = None,
                server_id: str | None = None, **extra: Any) -> Run:
        """A Run for `client` on fresh server fields or on managed server `server_id` (not yet queued)."""
        if server_id is not None:
            with self._cond:
                managed = self._servers.get(server_id)
            if managed is None:
                raise NotFound(f"server {server_id} not found")
            return Run(client=client, server=managed.server.spec, server_id=server_id, **extra)
        spec = server if isinstance(server, ServerSpec) else build_spec(server or {}, self.config.limits)
        return Run(client=client, server=spec, **extra)

    def submit(self, run: Run) -> dict[str, Any]:
        """Queue a run; returns its row (status queued). Raises QueueFull, NotFound, ShuttingDown."""
        with self._cond:
            self._check_open()
            if len(self._pending) >= self.config.queue_size:
                raise QueueFull(f"the run queue is full ({self.config.queue_size} runs waiting)")
            if run.server_id is not None and run.server_id not in self._servers:
                raise NotFound(f"server {run.server_id} not found")
            return self._enqueue(run)

    def _enqueue(self, run: Run) -> dict[str, Any]:
        run.status = "queued"
        row = run.to_dict()
        self.bus.publish("state", run.id, run.sweep_id, save_run=row, status="queued", phase="queued")
        self._pending.append(_Job(run))
        self._cond.notify()
        return row

    def cancel(self, run_id: str, wait: float = 5.0) -> dict[str, Any]:
        """Cancel a run: queued -> cancelled now; running -> cancel requested (waits up to `wait` s)."""
        with self._cond:
            for job in self._pending:
                if job.run.id == run_id:
                    self._pending.remove(job)
                    self._finish_unstarted(job, "cancelled", "cancelled")
                    return self.store.get_run(run_id) or job.run.to_dict()
            job = self._active.get(run_id)
            if job is None:
                row = self.store.get_run(run_id)
                if row is None:
                    raise NotFound(f"run {run_id} not found")
                raise Conflict(f"run {run_id} has already finished ({row['status']})")
            job.cancel.set()
        job.done.wait(wait)
        return self.store.get_run(run_id) or job.run.to_dict()

    def get_run(self, run_id: str) -> dict[str, Any]:
        row = self.store.get_run(run_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return row

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until a run is final or `timeout` passes; returns its row (for headless callers and tests)."""
        with self._cond:
            job = self._active.get(run_id) or next((j for j in self._pending if j.run.id == run_id), None)
        if job is not None:
            job.done.wait(timeout)
        return self.get_run(run_id)

    # -- sweeps ----------------------------------------------------------------------------
    def start_sweep(self, name: str, only: list[str] | None = None,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue every row of scenario `name` (or the rows in `only`) as one sweep, all or nothing.

        `overrides` (server geometry such as size or delays, validated like any server
        field) apply to every row; the talk's reference figures are dropped then, since
        they hold for the talk's geometry only.
        """
        try:
            scenario = get_scenario(name)
        except KeyError as e:
            raise NotFound(str(e.args[0])) from None
        rows = list(scenario.rows)
        if only:
            keys = {r.key for r in rows}
            unknown = [k for k in only if k not in keys]
            if unknown:
                raise NotFound(f"scenario {name} has no row {unknown[0]!r}")
            rows = [r for r in rows if r.key in set(only)]
        specs = [build_spec({**r.server, **(overrides or {})}, self.config.limits) for r in rows]
        if overrides and specs:  # echo them normalised (bytes, milliseconds)
            overrides = {k: getattr(specs[0], k) for k in overrides}
        with self._cond:
            self._check_open()
            free = self.config.queue_size - len(self._pending)
            if len(rows) > free:
                raise QueueFull(f"the sweep needs {len(rows)} queue slots and {max(free, 0)} are free")
            runs = [Run(client=r.client, server=spec, label=r.key, reference=None if overrides else r.reference)
                    for r, spec in zip(rows, specs, strict=True)]
            sweep = Sweep(name=name, run_ids=[r.id for r in runs], only=list(only) if only else None,
                          overrides=dict(overrides) if overrides else None)
            for run in runs:
                run.sweep_id = sweep.id
            self._sweeps[sweep.id] = sweep
            d = sweep.to_dict()
            self.bus.publish("sweep", None, sweep.id, save_sweep=d, **sweep_event_fields(d))
            for run in runs:
                self._enqueue(run)
            return d

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        row = self.store.get_sweep(sweep_id)
        if row is None:
            raise NotFound(f"sweep {sweep_id} not found")
        return row

    def cancel_sweep(self, sweep_id: str, wait: float = 5.0) -> dict[str, Any]:
        with self._cond:
            sweep = self._sweeps.get(sweep_id)
            if sweep is None:
                row = self.store.get_sweep(sweep_id)
                if row is None:
                    raise NotFound(f"sweep {sweep_id} not found")
                raise Conflict(f"sweep {sweep_id} has already finished ({row['status']})")
            ids = set(sweep.run_ids)
            for job in [j for j in self._pending if j.run.id in ids]:
                self._pending.remove(job)
                self._finish_unstarted(job, "cancelled", "cancelled")
            jobs = [j for j in self._active.values() if j.run.id in ids]
            for job in jobs:
                job.cancel.set()
        _wait_done(jobs, wait)
        return self.get_sweep(sweep_id)

    # -- managed servers -------------------------------------------------------------------
    def create_server(self, spec: dict[str, Any] | ServerSpec) -> dict[str, Any]:
        if not isinstance(spec, ServerSpec):
            spec = build_spec(spec, self.config.limits)
        with self._cond:
            self._check_open()
            if len(self._servers) >= self.config.max_servers:
                raise LimitExceeded(f"at most {self.config.max_servers} servers may run at once")
            srv = Server(spec)
            managed = _Managed(srv)
            self._servers[srv.id] = managed  # holds the slot while nbdkit starts
        try:
            srv.start()
        except BaseException:
            with self._cond:
                self._servers.pop(srv.id, None)
            raise
        with self._cond:
            if self._stopping or srv.id not in self._servers:
                stale = True
                self._servers.pop(srv.id, None)  # shutdown leaves servers still starting to us
            else:
                stale = False
                info = self._server_info(managed)
                self.bus.publish("server", None, None, server_id=srv.id, status="started", server=info)
        if stale:
            srv.stop()
            raise ShuttingDown("the service is shutting down")
        return info

    def list_servers(self) -> list[dict[str, Any]]:
        with self._cond:
            managed = [m for m in self._servers.values() if m.server.flags is not None]
            return [self._server_info(m) for m in managed]

    def get_server(self, server_id: str) -> dict[str, Any]:
        with self._cond:
            m = self._servers.get(server_id)
            if m is None or m.server.flags is None:
                raise NotFound(f"server {server_id} not found")
            return self._server_info(m)

    def delete_server(self, server_id: str, wait: float = 5.0) -> dict[str, Any]:
        """Stop a managed server; runs queued or running on it are cancelled first."""
        with self._cond:
            m = self._servers.get(server_id)
            if m is None or m.server.flags is None:
                raise NotFound(f"server {server_id} not found")
            del self._servers[server_id]
            for job in [j for j in self._pending if j.run.server_id == server_id]:
                self._pending.remove(job)
                self._finish_unstarted(job, "cancelled", f"server {server_id} was deleted")
            jobs = [j for j in self._active.values() if j.run.server_id == server_id]
            for job in jobs:
                job.reason = "server-deleted"
                job.cancel.set()
        _wait_done(jobs, wait)
        info = self._server_info(m)
        self._stop_server(m)
        info["running"] = False
        return info

    def _server_info(self, m: _Managed) -> dict[str, Any]:
        srv = m.server
        info = srv.info()
        info.pop("pid", None)
        info.update(created_at=m.created_at, runs=m.runs, busy=srv.id in self._busy_servers,
                    backend=srv.backend().to_dict() if srv.running else None)
        return info

    def _stop_server(self, m: _Managed) -> None:
        try:
            m.server.stop()
        except Exception:
            log.exception("stopping server %s", m.server.id)
        self._publish_safe("server", None, None, server_id=m.server.id, status="stopped")

    # -- events ----------------------------------------------------------------------------
    def subscribe(self, after: int | None = None, run_id: str | None = None,
                  sweep_id: str | None = None) -> Subscription:
        return self.bus.subscribe(after=after, run_id=run_id, sweep_id=sweep_id)

    def replay_start(self) -> int:
        """Where a new global subscriber without Last-Event-ID starts: just before the oldest
        event of anything still queued or running (so it sees their history), else now."""
        runs, sweeps = self.store.active_ids()
        first = self.store.first_event_id(runs, sweeps) if (runs or sweeps) else None
        return self.bus.last_id if first is None else first - 1

    @property
    def last_event_id(self) -> int:
        return self.bus.last_id

    def stats(self) -> dict[str, Any]:
        """A snapshot for /api/health. Takes no lock (each len() is atomic): health must answer
        at once even while a worker holds the manager lock across a database commit."""
        return {"workers": self.config.workers, "queued": len(self._pending), "running": len(self._active),
                "queue_size": self.config.queue_size, "servers": len(self._servers),
                "max_servers": self.config.max_servers, "subscribers": self.bus.subscriber_count,
                "last_event_id": self.bus.last_id, "stopping": self._stopping}

    # -- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._stopping:
            raise ShuttingDown("the service is shutting down")

    def _publish_safe(self, type_: str, run_id: str | None, sweep_id: str | None, **kw: Any) -> None:
        try:
            self.bus.publish(type_, run_id, sweep_id, **kw)
        except Exception:
            log.exception("publishing a %s event", type_)

    def _take_next(self) -> _Job | None:
        for job in self._pending:
            sid = job.run.server_id
            if sid is None or sid not in self._busy_servers:
                self._pending.remove(job)
                return job
        return None

    def _worker(self) -> None:
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._stopping:
                        return
                    job = self._take_next()
                    if job is None:
                        self._cond.wait()
                self._active[job.run.id] = job
                managed = None
                if job.run.server_id is not None:
                    self._busy_servers.add(job.run.server_id)
                    managed = self._servers.get(job.run.server_id)
                    if managed is not None:
                        managed.runs += 1
            try:
                self._run_job(job, managed)
            finally:
                with self._cond:
                    self._active.pop(job.run.id, None)
                    if job.run.server_id is not None:
                        self._busy_servers.discard(job.run.server_id)
                    self._cond.notify_all()

    def _run_job(self, job: _Job, managed: _Managed | None) -> None:
        run = job.run
        if run.server_id is not None and (managed is None or not managed.server.running):
            run.status, run.error = "failed", f"server {run.server_id} is gone"
            run.started_at = run.finished_at = time.time()
        else:
            try:
                execute(run, on_event=lambda ev: self._on_run_event(job, ev), cancel=job.cancel,
                        server=managed.server if managed else None, timeout=self.config.run_timeout_s,
                        image_cache_bytes=self.config.image_cache_bytes)
            except Exception as e:  # execute() should not raise; a worker must survive if it does
                log.exception("run %s", run.id)
                run.status, run.error = "failed", f"{type(e).__name__}: {e}"
                run.finished_at = time.time()
        if run.status == "cancelled" and job.reason == "shutdown":
            run.status, run.error = "interrupted", SHUTDOWN_ERROR
        elif run.status == "cancelled" and job.reason == "server-deleted":
            run.error = f"server {run.server_id} was deleted during the run"
        elif run.status not in FINAL:
            run.status, run.error = "failed", run.error or f"the run ended in state {run.status}"
        self._finish(job)

    def _on_run_event(self, job: _Job, ev: dict[str, Any]) -> None:
        """execute()'s sink: state changes also save the run (same transaction as the event)."""
        run = job.run
        fields = {k: v for k, v in ev.items() if k not in ("type", "run_id")}
        type_ = ev.get("type", "progress")
        row = run.to_dict() if type_ == "state" else None
        self._publish_safe(type_, run.id, run.sweep_id, save_run=row, **fields)
        if type_ == "state" and run.sweep_id is not None:
            self._sweep_started(run.sweep_id)
        if type_ == "state" and self.fault is not None and self.fault == ("pause-at", fields.get("phase")):
            log.warning("fault injection: run %s held at %s until cancelled", run.id, fields.get("phase"))
            job.cancel.wait(PAUSE_MAX_S)

    def _finish_unstarted(self, job: _Job, status: str, error: str) -> None:
        run = job.run
        run.status, run.error, run.finished_at = status, error, time.time()
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        """Commit the final row with its `state` event, then announce `done`, then the sweep."""
        run = job.run
        row = run.to_dict()
        try:
            self.bus.publish("state", run.id, run.sweep_id, save_run=row, status=run.status, phase="finished")
        except Exception:
            log.exception("saving run %s", run.id)
            with contextlib.suppress(Exception):
                self.store.save_run(row)
        if self.fault == ("kill-after-commit", None):
            log.warning("fault injection: SIGKILL after committing run %s, before its done event", run.id)
            os.kill(os.getpid(), signal.SIGKILL)
        self._publish_safe("done", run.id, run.sweep_id, status=run.status, run=row)
        if run.sweep_id is not None:
            self._sweep_progress(run)
        job.done.set()
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self.prune_events()

    def prune_events(self) -> int:
        """Delete progress events of long-finished runs (config retention and cap); returns how many."""
        cfg = self.config
        self._pruned_at = time.monotonic()
        try:
            older = time.time() - cfg.progress_retention_s if cfg.progress_retention_s is not None else None
            n = self.store.prune_progress(finished_before=older, keep_at_most=cfg.max_progress_events)
        except Exception:
            log.exception("pruning old progress events")
            return 0
        if n:
            log.info("pruned %d progress events of finished runs", n)
        return n

    def _sweep_started(self, sweep_id: str) -> None:
        with self._cond:
            sweep = self._sweeps.get(sweep_id)
            if sweep is None or sweep.status != "queued":
                return
            sweep.status, sweep.started_at = "running", time.time()
            d = sweep.to_dict()
            self._publish_safe("sweep", None, sweep.id, save_sweep=d, **sweep_event_fields(d))

    def _sweep_progress(self, run: Run) -> None:
        with self._cond:
            sweep = self._sweeps.get(run.sweep_id or "")
            if sweep is None:
                return
            sweep.statuses[run.id] = run.status
            done = len(sweep.statuses) == sweep.total
            if done:
                sweep.status, sweep.finished_at = sweep.final_status(), time.time()
                del self._sweeps[sweep.id]
            elif sweep.status == "queued":
                sweep.status, sweep.started_at = "running", sweep.started_at or time.time()
            d = sweep.to_dict()
            self._publish_safe("sweep", None, sweep.id, save_sweep=d, last_run_id=run.id, **sweep_event_fields(d))
            if done:
                self._publish_safe("sweep_done", None, sweep.id, status=sweep.status, sweep=d)

