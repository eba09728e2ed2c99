"""The sweep service: a scenario's rows as one group of runs, queued all or nothing on the
scheduler, with its own id and status. The web service and `lab scenario` both use it.

It announces through `publish(type, run_id, sweep_id, **fields)` (the event bus in the web
service, nothing for the CLI); its owner tells it when a run of a sweep starts and ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.domain.errors import NotFound, NotRunnable
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.run import Run, new_id
from lab.domain.scenarios import Row, get_scenario
from lab.domain.spec import build_spec
from lab.domain.sweepspec import Planned
from lab.measure.contention import CONTENDED_CORES
from lab.nbd.backends import Machine
from lab.service.fleet import Fleet
from lab.service.jobs import TEACHER, Who, run_job
from lab.service.scheduler import Scheduler
from lab.service.store import count_statuses, sweep_event_fields, sweep_status

log = logging.getLogger("lab.service.sweeps")

Publish = Callable[..., Any]


def _no_publish(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class Sweep:
    """A group of runs made from a scenario, with its own id and status."""

    name: str
    runs: list[Run]
    id: str = field(default_factory=new_id)
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    statuses: dict[str, str] = field(default_factory=dict)  # run id -> final status
    only: list[str] | None = None
    overrides: dict[str, Any] | None = None
    definition: dict[str, Any] | None = None  # a custom sweep's definition (lab.domain.sweepspec), normalised
    repeats: int = 1
    parallelism: int | None = None
    priority: int = 0
    student: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # row key -> why this machine cannot run it
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def run_ids(self) -> list[str]:
        return [r.id for r in self.runs]

    @property
    def total(self) -> int:
        return len(self.runs)

    def counts(self) -> dict[str, int]:
        return count_statuses(self.statuses.values())

    def final_status(self) -> str:
        return sweep_status(self.statuses.values())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "total": self.total,
                "finished": len(self.statuses), "counts": self.counts(), "run_ids": self.run_ids,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "only": self.only, "overrides": self.overrides, "kind": "custom" if self.definition else "scenario",
                "definition": self.definition, "repeats": self.repeats, "parallelism": self.parallelism,
                "priority": self.priority, "student": self.student,
                "skipped": [{"key": k, "reason": why} for k, why in self.skipped.items()]}


def plan(name: str, only: list[str] | None = None, overrides: dict[str, Any] | None = None,
         limits: Limits = DEFAULT_LIMITS, machine: Machine | Fleet | None = None
         ) -> tuple[list[Run], dict[str, Any] | None, dict[str, str]]:
    """The runs of scenario `name` (or of its rows in `only`), in scenario order, the overrides
    normalised (bytes, milliseconds), and {row key: why not} for the rows this machine cannot run
    (left out; NotRunnable when that is every row). NotFound (field name/only) or SpecError.

    `overrides` (server geometry such as size or delays, validated like any server field)
    apply to every row; a row's reference figures are dropped when they change its server,
    since the figures hold for the talk's geometry only (overrides equal to it keep them).
    """
    machine = machine or Machine()
    rows, skipped = machine.runnable(_rows(name, only))
    if skipped and not rows:
        raise NotRunnable("; ".join(f"{k}: {why}" for k, why in skipped.items()), field="only" if only else None)
    specs = [build_spec({**r.server, **(overrides or {})}, limits, machine) for r in rows]
    if overrides and specs:  # echo them normalised
        overrides = {k: getattr(specs[0], k) for k in overrides}
    same = [not overrides or spec == build_spec(r.server, limits) for r, spec in zip(rows, specs, strict=True)]
    runs = [Run(client=r.client, server=spec, label=r.key, reference=r.reference if keep else None)
            for r, spec, keep in zip(rows, specs, same, strict=True)]
    return runs, (dict(overrides) if overrides else None), skipped


def _rows(name: str, only: list[str] | None) -> list[Row]:
    try:
        rows = list(get_scenario(name).rows)
    except KeyError as e:
        raise NotFound(str(e.args[0]), field="name") from None
    if not only:
        return rows
    keys = [r.key for r in rows]
    unknown = [k for k in only if k not in keys]
    if unknown:
        raise NotFound(f"scenario {name} has no row {unknown[0]!r}; rows are {', '.join(keys)}", field="only")
    return [r for r in rows if r.key in set(only)]


class SweepService:
    def __init__(self, scheduler: Scheduler, limits: Limits = DEFAULT_LIMITS, publish: Publish = _no_publish,
                 timeout_s: float | None = None, machine: Machine | Fleet | None = None) -> None:
        self.scheduler, self.limits, self._publish, self.timeout_s = scheduler, limits, publish, timeout_s
        self.machine = machine or Machine()
        self._lock = threading.RLock()
        self._live: dict[str, Sweep] = {}

    def start(self, name: str, only: list[str] | None = None, overrides: dict[str, Any] | None = None,
              order: Callable[[Run], Any] | None = None, student: str | None = None,
              who: Who | None = None) -> Sweep:
        """Plan scenario `name` (see plan()) and queue it as one sweep for `who` (default: the
        teacher), all or nothing (the scheduler's admission may refuse it). `order`, a sort key,
        changes the order the runs are queued in (not the sweep's own order)."""
        runs, overrides, skipped = plan(name, only, overrides, self.limits, self.machine)
        sweep = Sweep(name=name, runs=runs, only=list(only) if only else None, overrides=overrides, student=student,
                      skipped=skipped)
        return self._queue(sweep, sorted(runs, key=order) if order else runs, who or TEACHER)

    def start_custom(self, planned: Planned, who: Who | None = None) -> Sweep:
        """Queue a custom sweep (lab.domain.sweepspec.plan()), all or nothing, with its priority and parallelism."""
        runs = planned.runs()
        sweep = Sweep(name=planned.name, runs=runs, definition=planned.definition, repeats=planned.repeats,
                      parallelism=planned.parallelism, priority=planned.priority)
        return self._queue(sweep, runs, who or TEACHER)

    def _queue(self, sweep: Sweep, queue_order: list[Run], who: Who) -> Sweep:
        runs = sweep.runs
        for run in runs:
            run.sweep_id = sweep.id
            run.student = sweep.student

        def admit(_free: int) -> None:  # under the scheduler's lock: no run of it is queued before this
            with self._lock:
                self._live[sweep.id] = sweep
            d = sweep.to_dict()
            self._publish("sweep", None, sweep.id, save_sweep=d, **sweep_event_fields(d))

        # no parallelism given: rows share the machine only while they would not contend with each other
        cores = CONTENDED_CORES if sweep.parallelism is None else None
        jobs = [run_job(run, who, self.timeout_s, group=sweep.id, group_limit=sweep.parallelism, group_cores=cores,
                        priority=sweep.priority) for run in queue_order]
        self.scheduler.submit(jobs, admit=admit)
        if not runs:
            self._end(sweep, None)
        return sweep

    def resume(self, row: dict[str, Any], queued: dict[str, Run],
               stored: Callable[[str], dict[str, Any] | None]) -> Sweep:
        """Bring back to life a sweep a previous service left with runs queued (`row`: its stored row;
        `queued`: its queued runs by id, about to be queued again; `stored`: a run's stored row)."""
        runs: list[Run] = []
        statuses: dict[str, str] = {}
        for rid in row.get("run_ids", []):
            run = queued.get(rid)
            if run is None:
                r = stored(rid)
                if r is None:
                    continue
                run = Run.model_validate(r)
                statuses[rid] = run.status
            runs.append(run)
        fields = {k: row.get(k) for k in ("only", "overrides", "definition", "parallelism", "student", "started_at")}
        skipped = {s["key"]: s["reason"] for s in row.get("skipped") or []}
        sweep = Sweep(name=row["name"], runs=runs, id=row["id"], status=row.get("status") or "queued",
                      created_at=row.get("created_at") or time.time(), statuses=statuses,
                      repeats=row.get("repeats") or 1, priority=row.get("priority") or 0, skipped=skipped, **fields)
        with self._lock:
            self._live[sweep.id] = sweep
        return sweep

    def live(self, sweep_id: str) -> Sweep | None:
        """The sweep while it has runs queued or running, else None."""
        with self._lock:
            return self._live.get(sweep_id)

    def cancel(self, sweep_id: str, wait: float = 5.0) -> bool:
        """Cancel a live sweep's runs (waits up to `wait` s for running ones); False when it is not live."""
        sweep = self.live(sweep_id)
        if sweep is None:
            return False
        ids = set(sweep.run_ids)
        self.scheduler.cancel(lambda j: j.id in ids and j.run is not None, wait=wait)
        return True

    def run_started(self, sweep_id: str) -> None:
        with self._lock:
            sweep = self._live.get(sweep_id)
            if sweep is None or sweep.status != "queued":
                return
            sweep.status, sweep.started_at = "running", time.time()
            d = sweep.to_dict()
            self._publish_safe("sweep", None, sweep.id, save_sweep=d, **sweep_event_fields(d))

    def run_finished(self, run: Run) -> None:
        with self._lock:
            sweep = self._live.get(run.sweep_id or "")
            if sweep is None:
                return
            sweep.statuses[run.id] = run.status
            if len(sweep.statuses) == sweep.total:
                self._end(sweep, run.id)
                return
            if sweep.status == "queued":
                sweep.status, sweep.started_at = "running", sweep.started_at or time.time()
            d = sweep.to_dict()
            self._publish_safe("sweep", None, sweep.id, save_sweep=d, last_run_id=run.id, **sweep_event_fields(d))

    def _end(self, sweep: Sweep, last_run_id: str | None) -> None:
        with self._lock:
            sweep.status, sweep.finished_at = sweep.final_status(), time.time()
            self._live.pop(sweep.id, None)
            d = sweep.to_dict()
            self._publish_safe("sweep", None, sweep.id, save_sweep=d, last_run_id=last_run_id,
                               **sweep_event_fields(d))
            self._publish_safe("sweep_done", None, sweep.id, status=sweep.status, sweep=d)
        sweep.done.set()

    def _publish_safe(self, type_: str, run_id: str | None, sweep_id: str | None, **kw: Any) -> None:
        try:
            self._publish(type_, run_id, sweep_id, **kw)
        except Exception:
            log.exception("publishing a %s event", type_)
