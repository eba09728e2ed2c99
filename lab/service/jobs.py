"""Measurement jobs as plain data: what the one scheduler (lab.service.scheduler) queues and an
executor carries out, here or on another machine (the JOB CONTRACT in docs/design.md#scheduling).

A job is a kind, a JSON payload, who asked (the queue's lane) and what it needs from a machine
(`Needs`, computed once where it is submitted). A handler per kind carries it out on the machine
it was sent to: `HANDLERS[kind](payload, ctx) -> result`, reporting events through `ctx.emit` and
stopping when `ctx.cancel` is set. Everything that crosses a machine boundary is JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lab.domain.clients import CLIENTS
from lab.domain.run import FINAL, Run, new_id
from lab.host.places import Core
from lab.measure import contention
from lab.nbd.backends import needs

JobKind = Literal["run", "calibration_point", "probe", "audit_step"]
Lane = Literal["system", "teacher", "student", "anonymous"]
LANES: tuple[str, ...] = ("system", "teacher", "student", "anonymous")
# Lanes in the order they start: the service's own jobs, then the teacher's, then the fair lane
# (students and anonymous callers share it, round-robin across owners).
LANE_RANK = {"system": 0, "teacher": 1, "student": 2, "anonymous": 2}
ANONYMOUS = "anonymous"  # the one owner all nameless jobs share


@dataclass(frozen=True)
class Who:
    """Who asked for a job: the lane it queues in, the student's name (lane student) and, for
    anonymous callers, a client key the app chose (never shown to others)."""

    lane: Lane = "anonymous"
    name: str | None = None
    client: str | None = None

    @property
    def owner(self) -> str:
        """The round-robin turn it takes: each student, the teacher, the system, all anonymous callers as one."""
        if self.lane == "student" and self.name:
            return f"student:{self.name}"
        return self.lane

    def to_dict(self) -> dict[str, Any]:
        return {"lane": self.lane, "name": self.name, "client": self.client}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Who:
        d = d or {}
        lane = d.get("lane") if d.get("lane") in LANES else "anonymous"
        return cls(lane, d.get("name"), d.get("client"))  # type: ignore[arg-type]


TEACHER = Who("teacher")
SYSTEM = Who("system")


def who_for(student: str | None, teacher: bool = False, client: str | None = None) -> Who:
    """The identity of a job's caller: a named student (whoever sends it: the name says whose turn it
    takes), else the teacher (the request carried the token), else anonymous (`client`: a key the app
    chose for the caller, so anonymous callers take turns among themselves)."""
    if student:
        return Who("student", student)
    if teacher:
        return TEACHER
    return Who("anonymous", client=client)


@dataclass(frozen=True)
class Needs:
    """What a job needs from the machine it runs on (computed at submit; executors never recompute it)."""

    alone: bool = False  # CPU-bound: nothing else runs beside it on its machine
    spawn_clocked: bool = False  # timed from a process's spawn: quiet around its start (LAUNCH_QUIET_S)
    server_id: str | None = None  # a managed server of the service: one job at a time, on the service's machine
    worker: str | None = None  # pinned to this worker (a worker's own calibration points)
    capabilities: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"alone": self.alone, "spawn_clocked": self.spawn_clocked, "server_id": self.server_id,
                "worker": self.worker, "capabilities": list(self.capabilities)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Needs:
        d = d or {}
        return cls(bool(d.get("alone")), bool(d.get("spawn_clocked")), d.get("server_id"), d.get("worker"),
                   tuple(d.get("capabilities") or ()))


def run_needs(run: Run) -> Needs:
    """A run's needs: a CPU-bound run (parallel client, queue depth > 1, no delays) the machine alone;
    a real binary (timed from spawn) a quiet start; a run on a managed server the service's machine;
    a fresh server a machine with its kind and storage (lab.nbd.backends.needs)."""
    caps = ("managed",) if run.server_id else needs(run.server)
    client = CLIENTS.get(run.client)
    if client is None:  # execute() fails such a run at once: it needs nothing more
        return Needs(server_id=run.server_id, capabilities=caps)
    alone = contention.cpu_bound(client.parallel, run.queue_depth, run.server)
    return Needs(alone=alone, spawn_clocked=client.real_binary, server_id=run.server_id, capabilities=caps)


@dataclass(eq=False)
class Job:
    """One queued or running measurement job: its plain data (to_dict(), what a remote executor
    gets) and, on the scheduler's side only, its state."""

    kind: str
    payload: dict[str, Any]
    who: Who = field(default_factory=Who)
    needs: Needs = field(default_factory=Needs)
    id: str = field(default_factory=new_id)
    group: str | None = None  # a sweep whose rows share `group_limit` (its parallelism)
    group_limit: int | None = None
    # ... or, a sweep without a parallelism of its own: its rows run beside each other only while their
    # estimated CPU together stays within this many cores (so none sees its siblings as contention)
    group_cores: float | None = None
    priority: int = 0  # higher starts first within a lane
    created_at: float = field(default_factory=time.time)
    attempt: int = 0  # 1 once re-queued after its machine was lost before it started copying
    # -- the scheduler's side (never sent anywhere)
    run: Run | None = None  # a run job's model, which its owner keeps up to date
    status: str = "queued"
    worker: str | None = None  # where it runs (lab.service.scheduler.Worker id)
    started_at: float | None = None  # time.monotonic() when it was handed to an executor
    started_copying: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop: Any = None  # lab.service.scheduler.Stop when stopped by someone other than a user's plain cancel
    outcome: dict[str, Any] | None = None
    seq: int = 0  # queue order, set by the scheduler
    estimate_s: float | None = None  # how long it should take (the scheduler asks its owner once)
    cores: float | None = None  # how much CPU it should use while it runs (likewise)
    listener: Callable[[dict[str, Any]], None] | None = None  # the events of a job that is not a run

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "payload": self.payload, "who": self.who.to_dict(),
                "needs": self.needs.to_dict(), "group": self.group, "group_limit": self.group_limit,
                "group_cores": self.group_cores,
                "priority": self.priority, "created_at": self.created_at, "attempt": self.attempt}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(kind=d["kind"], payload=d["payload"], who=Who.from_dict(d.get("who")),
                   needs=Needs.from_dict(d.get("needs")), id=d["id"], group=d.get("group"),
                   group_limit=d.get("group_limit"), group_cores=d.get("group_cores"),
                   priority=int(d.get("priority") or 0),
                   created_at=float(d.get("created_at") or time.time()), attempt=int(d.get("attempt") or 0))

    @property
    def alone(self) -> bool:
        return self.needs.alone

    def launching(self, now: float, quiet_s: float) -> bool:
        return self.started_at is not None and now - self.started_at < quiet_s


def run_job(run: Run, who: Who | None = None, timeout_s: float | None = None, group: str | None = None,
            group_limit: int | None = None, priority: int = 0, group_cores: float | None = None) -> Job:
    """The job that carries out `run` (its id is the run's); the run records its lane."""
    who = who or who_for(run.student)
    run.lane = who.lane
    return Job("run", {"run": run.to_dict(), "timeout_s": timeout_s}, who, run_needs(run),
               id=run.id, group=group, group_limit=group_limit, group_cores=group_cores, priority=priority, run=run)


# -- an outcome, read ------------------------------------------------------------------------------------

LOST_ERROR = "the worker running it was lost"


def adopt(run: Run, row: dict[str, Any]) -> None:
    """Make `run` (the owner's object, which sweeps and callers hold) the finished run `row`."""
    new = Run.model_validate(row)
    for name in Run.model_fields:
        if name != "trace":
            run.__dict__[name] = new.__dict__[name]
    if new.__pydantic_extra__:
        run.__pydantic_extra__ = dict(new.__pydantic_extra__)


def settle(job: Job, outcome: dict[str, Any]) -> None:
    """A job's final status and error from its outcome (the JOB CONTRACT's) and why it was stopped
    (`job.stop`, lab.service.scheduler.Stop): a run's are its result's, its Run adopts the result; `lost`
    reaches here only when it will not be tried again: `interrupted`; a stopped job that reports itself
    cancelled ends as its stop says; anything not final is a failure."""
    job.outcome = outcome
    status, error = outcome.get("status") or "failed", outcome.get("error")
    result = outcome.get("result") or {}
    run = job.run
    if run is not None and isinstance(result.get("run"), dict):
        adopt(run, result["run"])
        run.trace = result.get("trace")
        status, error = run.status, run.error
    if status == "lost":  # the executor's reason, when it gave one ("worker W restarted during the job")
        why = outcome.get("error")
        status, error = "interrupted", f"{LOST_ERROR} ({job.worker}{f': {why}' if why else ''})"
    stop = job.stop
    if status == "cancelled" and stop is not None:
        status, error = stop.status, stop.error_running or stop.error
    elif status not in FINAL:
        status, error = "failed", error or f"the job ended in state {status}"
    job.status = status
    if run is not None:
        run.status, run.error = status, error  # type: ignore[assignment]
        run.finished_at = run.finished_at or time.time()
    elif error is not None:
        outcome["error"] = error


# -- carrying a job out (on whichever machine it was sent to) ---------------------------------------------


class Context(Protocol):
    """What a handler gets besides its payload: where to report, when to stop, and its machine's settings."""

    cancel: threading.Event
    core: Core

    def emit(self, event: dict[str, Any]) -> None: ...

    def managed_server(self, server_id: str) -> Any: ...  # a managed server here (lab.nbd.servers.Server) or None


@dataclass
class LocalContext:
    """A Context for a job carried out in this process."""

    emit_to: Callable[[dict[str, Any]], None]
    cancel: threading.Event
    core: Core = field(default_factory=Core)
    image_cache_bytes: int | None = None
    servers: Callable[[str], Any] = lambda _sid: None

    def emit(self, event: dict[str, Any]) -> None:
        self.emit_to(event)

    def managed_server(self, server_id: str) -> Any:
        return self.servers(server_id)


def carry_out_run(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A run job: execute() on this machine; state events carry the run's row (`row`) so whoever
    records it (the service) need not hold the Run; the result is the final run and its trace."""
    from lab.measure.calibration import before_run
    from lab.measure.execute import execute

    run = Run.model_validate(payload["run"])
    server = None
    if run.server_id is not None:
        managed = ctx.managed_server(run.server_id)
        if managed is None or not managed.running:
            run.status, run.error = (("cancelled", "cancelled") if ctx.cancel.is_set()
                                     else ("failed", f"server {run.server_id} is gone"))
            run.started_at = run.finished_at = time.time()
            return {"run": run.to_dict(), "trace": None}
        server = managed

    def emit(ev: dict[str, Any]) -> None:
        if ev.get("type", "progress") == "state":
            ev = {**ev, "row": run.to_dict()}
        ctx.emit(ev)

    before_run(run, ctx.core, ctx.cancel)  # a CPU-bound run has the machine alone: its state now, first
    execute(run, on_event=emit, cancel=ctx.cancel, server=server, timeout=payload.get("timeout_s"),
            image_cache_bytes=getattr(ctx, "image_cache_bytes", None), core=ctx.core)
    return {"run": run.to_dict(), "trace": run.trace}


def carry_out_probe(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A probe job: start a server from the fields, probe its zeroing, stop it (lab.nbd.probe); the
    result says when it ran (`started_at`, `finished_at`)."""
    from lab.nbd import probe

    t0 = time.time()
    ctx.emit({"type": "state", "phase": "copy"})  # it writes from the start: not retried elsewhere if lost
    out = probe.probe_server(payload.get("server") or {}, int(payload["length"]), float(payload["deadline_s"]),
                             ctx.core.limits, ctx.core.places, ctx.cancel)
    return {**out, "started_at": t0, "finished_at": time.time()}


def probe_job(fields: dict[str, Any], length: int, deadline_s: float, who: Who) -> Job:
    """A probe writes hundreds of MiB at full speed: it has its worker to itself."""
    return Job("probe", {"server": fields, "length": length, "deadline_s": deadline_s}, who, Needs(alone=True))


def carry_out_audit(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """An audit_step job: the whole zero audit of payload["server"] with payload["plan"] (lab.nbd.audit);
    its server and disk live for the whole audit, so one step is the whole audit, on one machine."""
    from lab.nbd import audit

    p = payload["plan"]
    plan = audit.make_plan(p["sizes"], flags=tuple(p["flags"]), disks=tuple(p["disks"]), inflight=p["inflight"],
                           limits=ctx.core.limits)
    ctx.emit({"type": "state", "phase": "copy"})  # it writes from the start: not retried elsewhere if lost
    return audit.run_audit(payload["server"], plan, deadline_s=float(payload["deadline_s"]), cancel=ctx.cancel,
                           on_event=lambda e: ctx.emit({"type": "progress", **e}), places=ctx.core.places,
                           limits=ctx.core.limits, api=bool(payload.get("api")))


def audit_job(job_id: str, payload: dict[str, Any], who: Who) -> Job:
    """An audit writes at full speed for minutes and judges cost by the clock where the storage shows
    nothing: its machine to itself; a machine with the server's kind and storage (a place the user named,
    a directory or a device, is the service's own machine: `managed`)."""
    server = payload["server"]
    place = str(server.get("storage") or "")
    caps = [f"kind:{server.get('kind', 'nbdkit')}"]
    caps += ["managed"] if place.startswith(("path:", "dev:")) else [f"storage:{place}"] if place else []
    return Job("audit_step", payload, who, Needs(alone=True, capabilities=tuple(caps)), id=job_id)


class JobFailed(Exception):
    """A job that ended without its result: `kind` (the exception's class name where it failed, or the
    final status), `field` (the input at fault, when the failure names one) and the message."""

    def __init__(self, kind: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.field = kind, message, field


def carry_out_calibration_point(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A calibration point job: one point of one kind, its repeats back to back (lab.measure.calibration
    .measure_point); one more repeat while every one was contended, until `extra_until` (a wall-clock
    time the calibration set for itself). The result is the measured point."""
    from lab.measure.calibration import Point, measure_point
    from lab.measure.expectation import Kind

    kind, point = Kind(**payload["kind"]), Point(*payload["point"])
    ctx.emit({"type": "state", "phase": "copy"})  # it copies from the start: not retried elsewhere if lost
    until = float(payload.get("extra_until") or 0.0)
    return measure_point(kind, point, ctx.cancel, ctx.core.places, lambda: time.time() < until)


def calibration_point_job(kind: Any, point: Any, extra_until: float, group: str, worker: str | None = None) -> Job:
    """A calibration point has its worker to itself, in the system's lane; `group` (its calibration)
    runs one point at a time, in order; `worker` pins it (a worker calibrates itself)."""
    payload = {"kind": {"client": kind.client, "queue_depth": kind.queue_depth, "build": kind.build,
                        "parallel": kind.parallel}, "point": list(point), "extra_until": extra_until}
    return Job("calibration_point", payload, SYSTEM, Needs(alone=True, worker=worker), group=group, group_limit=1)


Handler = Callable[[dict[str, Any], Context], dict[str, Any]]
HANDLERS: dict[str, Handler] = {"run": carry_out_run, "probe": carry_out_probe,
                                "calibration_point": carry_out_calibration_point, "audit_step": carry_out_audit}


def register(kind: str, handler: Handler) -> None:
    """Add a job kind (its handler and JSON shapes documented in the JOB CONTRACT)."""
    HANDLERS[kind] = handler
