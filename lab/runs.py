"""One convert run, start to finish: image, server, copy, verify, count, predict.

The CLI and the web service drive the same `execute()`. It reports through a callback
(`on_event`) and stops when `cancel` is set; it never leaves a process or a socket
behind, whatever happens.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    computed_field,
    field_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from lab import calibrate, contention, diskmap, images, model
from lab.clients import Cancelled, Client, CopyContext, get_client
from lab.nbdhandle import ServerFlags
from lab.places import Core, Places
from lab.servers import SINGLE, Server, describe_build, kind_notes, observers_yield, server_pids
from lab.spec import ServerSpec
from lab.trace import BackendCounts, WireCounts
from lab.verify import verify

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
STATUSES: tuple[str, ...] = get_args(RunStatus)
FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
PROGRESS_INTERVAL = 0.04  # at most 25 progress events a second per run
# ... and 10 during a CPU-bound copy: each event is ~0.6 ms of CPU the copy would otherwise use
# (measured: events at 25 a second cost a 1 GiB depth-16 copy ~2%)
PROGRESS_INTERVAL_CPU_BOUND = 0.1

EventSink = Callable[[dict[str, Any]], None]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class StatsCheck(TypedDict):
    """The stats filter's op counts beside the datapath count (they must agree)."""

    stats_write_ops: int
    stats_zero_ops: int
    agree: bool | None


class Reached(TypedDict, total=False):
    """How far a copy got (what a cancelled or failed run had reached)."""

    fraction: float
    bytes_done: int
    elapsed_s: float
    backend: dict[str, int]
    phase: str | None


class DiskMap(TypedDict, total=False):
    """The disk map of a copy (lab.diskmap): cells run-length encoded, one letter per cell."""

    cell_size: int
    size: int
    cells: str
    requests: int
    truncated: bool


# What the server advertised, as a plain dict (run.flags["can_zero"]), with ServerFlags' schema.
FlagsDict = Annotated[dict[str, Any], WithJsonSchema(TypeAdapter(ServerFlags).json_schema())]


class Run(BaseModel):
    """A run and, once finished, its result: the one model of a run.

    `to_dict()` is the JSON the CLI prints, the store keeps and the API answers with (the
    API's response model is this class, app/schemas.py), and the CSV's columns are its
    leaves (lab/results.py). Adding a run field is one line here. Assignments are
    validated (a misspelt status fails where it is set, not in a reader).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    client: str = Field(description="copy client, see GET /api/clients")
    server: ServerSpec = Field(description="the server's fields, normalised (bytes, milliseconds)")
    id: str = Field(default_factory=new_id)
    status: RunStatus = "queued"
    queue_depth: int = Field(1, description="requests in flight, for the lab's own clients")
    server_id: str | None = Field(None, description="the long-lived server it ran on (None: a fresh one)")
    sweep_id: str | None = None
    label: str | None = None
    # Who asked for it (a display name, lab.students) and what they expected (lab.students.compare).
    student: str | None = None
    prediction: dict[str, int | float] | None = None
    reference: dict[str, Any] | None = Field(None, description="the talk's figures for this scenario row")
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    setup_s: float | None = None
    duration_s: float | None = None
    verify_s: float | None = None
    predicted_s: float | None = None
    # The calibrated expectation (lab.calibrate): the floor plus this machine's measured per-request,
    # per-byte and fixed costs; `breakdown` splits it (delays_s, per_request_s, per_byte_s, fixed_s).
    expected_s: float | None = None
    breakdown: dict[str, float] | None = None
    calibration: str | None = None  # the coefficient set used, e.g. "era-q1/single"
    # Others' CPU during the copy above lab.contention.CONTENDED_CORES: the time is not a clean measurement.
    contended: bool | None = None
    contention: dict[str, Any] | None = None  # machine_cores, own_cores, others_cores, limit_cores
    model: str | None = None
    verified: bool | None = None
    verify_detail: str | None = None
    backend: BackendCounts | None = Field(None, description="requests the backend (plugin) carried out")
    wire: WireCounts | None = Field(None, description="requests as the client sent them")
    server_log: WireCounts | None = Field(None, description="requests as nbdkit's log filter saw them")
    stats_check: StatsCheck | None = None
    flags: FlagsDict | None = Field(None, description="what the server advertised")
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    # How far the copy got (fraction, bytes, phase): what a cancelled or failed run had reached.
    reached: Reached | None = None
    # The disk map of the copy: {"cell_size", "size", "cells" (run-length encoded), "requests"}.
    diskmap: DiskMap | None = None
    # The per-request trace (lab.diskmap.TraceRow); kept apart from to_dict(), saved by the manager.
    trace: list[Any] | None = Field(None, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _computed_are_not_input(cls, data: Any) -> Any:
        """A stored run's JSON holds its computed fields: with extra="allow" they would come back twice."""
        if isinstance(data, dict) and data.keys() & cls.model_computed_fields.keys():
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float | None:
        if self.duration_s is None or not self.predicted_s:
            return None
        return round(self.duration_s / self.predicted_s, 4)

    @field_serializer("wire", "server_log")
    def _wire(self, w: WireCounts | None) -> WireCounts | None:
        """At most 10 error lines (as WireCounts.to_dict), with the dataclass's own schema."""
        return dataclasses.replace(w, errors=w.errors[:10]) if w is not None else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _expect(run: Run, srv: Server, places: Places | None, cpu_bound: bool) -> None:
    """The calibrated expectation, when this machine has been calibrated (`lab calibrate`); a
    CPU-bound run's own CPU is judged against it too (a sleep-bound run's time is its sleeps, and
    the lab's per-second work over a long run is in its own CPU but not in the calibration's)."""
    # the coefficients are measured on nbdkit's memory plugin: a file on a disk stores at other costs
    if getattr(run.server, "kind", "nbdkit") != "nbdkit" or getattr(run.server, "plugin", "memory") != "memory":
        return
    exp = calibrate.expectation(run.client, run.queue_depth, srv.topology, run.server, run.backend,
                                run.server_log, run.predicted_s or 0.0, places=places)
    if exp is not None:
        run.expected_s, run.breakdown, run.calibration = exp.expected_s, exp.breakdown, exp.calibration
        note = contention.slow_copy_path(run.contention, exp.own_cpu_s) if cpu_bound else None
        if note:
            run.notes.append(note)


def _top_as_wire(top: BackendCounts) -> dict[str, int]:
    return {"write": top.write_ops, "write_bytes": top.write_bytes, "zero": top.zero_ops,
            "zero_bytes": top.zero_bytes, "trim": top.trim_ops, "flush": top.flush_ops}


class _Progress:
    """Coalesces 'something happened' pings into at most one event per interval."""

    def __init__(self, run: Run, server: Server, sink: EventSink, t0: float, yielding: bool = False) -> None:
        self.run, self.server, self.sink, self.t0 = run, server, sink, t0
        self.yielding = yielding  # a CPU-bound copy: this thread yields to it (lab.contention.yield_cpu)
        self.base_backend = server.backend()
        self.base_top = server.top()
        self.client_info: dict[str, Any] = {}
        self.watch = diskmap.Watch(server, run.server.pattern, run.server.size, time.time())
        self._last_cells: str | None = None
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{run.id}", daemon=True)
        self.events = 0

    def start(self) -> None:
        self.server.add_listener(self.ping)
        self._thread.start()

    def ping(self) -> None:
        self._dirty.set()

    def client_report(self, info: dict[str, Any]) -> None:
        self.client_info = info
        self._dirty.set()

    def stop(self) -> None:
        self.server.remove_listener(self.ping)
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        contention.yield_cpu(self.yielding)
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            self.sink(self.snapshot())
            self.events += 1
            # rate limit; pings meanwhile coalesce
            time.sleep(PROGRESS_INTERVAL_CPU_BOUND if self.yielding else PROGRESS_INTERVAL)

    def snapshot(self) -> dict[str, Any]:
        backend = self.server.backend().minus(self.base_backend)
        top = self.server.top().minus(self.base_top)
        size = self.run.server.size
        planned = self.client_info.get("planned_bytes") or size
        done = top.write_bytes + top.zero_bytes + top.trim_bytes
        wire = (self.client_info.get("wire") or {}) if isinstance(self.client_info, dict) else {}
        self.watch.client_errors(wire.get("errors") or [], time.time())
        cells = self.watch.update()
        extra: dict[str, Any] = {}
        if cells != self._last_cells:  # unchanged cells are not sent again: watchers keep the last
            extra = {"cells": cells, "cell_size": self.watch.cell}
            self._last_cells = cells
        return {
            "type": "progress",
            "run_id": self.run.id,
            "elapsed_s": round(time.perf_counter() - self.t0, 4),
            "backend": backend.to_dict(),
            "server_wire": _top_as_wire(top),
            "client": self.client_info or None,
            "bytes_done": done,
            "fraction": round(min(1.0, done / planned), 4) if planned else 1.0,
            "predicted_so_far_s": model.predict_seconds(self.run.server, backend),
            **extra,
        }

    def finish(self) -> None:
        """The run's trace and final map, and how far it got (for a run that stops early)."""
        snap = self.snapshot()
        self.run.trace = self.watch.trace()
        self.run.diskmap = self.watch.summary(self.run.trace)
        self.run.reached = {"fraction": snap["fraction"], "bytes_done": snap["bytes_done"],
                            "elapsed_s": snap["elapsed_s"], "backend": snap["backend"],
                            "phase": (self.client_info or {}).get("phase")}


class Deadline:
    """A run's time limit: when it passes, the run's cancel event is set (so every phase stops
    as on a user's cancel) and `expired` tells the two apart. No limit when `seconds` is None."""

    def __init__(self, seconds: float | None, cancel: threading.Event) -> None:
        self.seconds, self.cancel = seconds, cancel
        self.expired = False
        self._timer: threading.Timer | None = None

    def _expire(self) -> None:
        self.expired = True
        self.cancel.set()

    def __enter__(self) -> Deadline:
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()


def check(cancel: threading.Event) -> None:
    """The one cancel check between phases: raise Cancelled once the run is cancelled or out of time."""
    if cancel.is_set():
        raise Cancelled()


@contextmanager
def _held(lock: threading.Lock, cancel: threading.Event) -> Iterator[None]:
    """Hold a server's run lock; waiting ends with the run (cancel or deadline), nothing else."""
    while not lock.acquire(timeout=0.1):
        check(cancel)
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _start_or_attach(run: Run, server: Server | None, cancel: threading.Event, core: Core) -> Iterator[Server]:
    """The run's server, held for it alone: a fresh one it owns (started, and stopped on exit,
    once), or the managed `server` it attaches to (left running)."""
    srv = server or Server(run.server, places=core.places, limits=core.limits).start()
    try:
        with _held(srv.run_lock, cancel):
            assert srv.flags is not None
            run.flags = srv.flags.to_dict()
            run.server_id = None if server is None else srv.id
            if srv.topology != SINGLE:
                run.notes.append("server build: " + describe_build(srv.spec, srv.topology)["note"])
            run.notes.extend(kind_notes(srv))
            yield srv
    finally:
        if server is None:
            srv.stop()


def _copy(run: Run, srv: Server, image: images.Image, client: Client, sink: EventSink,
          cancel: threading.Event, stack: ExitStack, t_setup: float, core: Core) -> None:
    """Copy phase: the client copies the image to the server; the counts of this run are the
    server's counters after minus before."""
    assert srv.flags is not None
    base_backend, base_wire = srv.backend(), srv.wire()
    run.setup_s = round(time.perf_counter() - t_setup, 4)
    ctx = CopyContext(image=image, uri=srv.uri, flags=srv.flags, source_format=run.server.source_format,
                      queue_depth=run.queue_depth, cancel=cancel, in_process=core.clients_in_process)
    # The watchers of a CPU-bound copy yield the CPU to it (lab.contention): counts stay exact, a
    # little later; a sleep-bound copy leaves the CPU idle and they keep the normal class.
    yielding = contention.cpu_bound(client.parallel, run.queue_depth, run.server)
    t0 = time.perf_counter()
    progress = _Progress(run, srv, sink, t0, yielding)
    ctx.report = progress.client_report
    observers_yield(srv, yielding)
    stack.callback(observers_yield, srv, False)
    progress.start()
    stack.callback(_end_progress, run, progress)
    _state(run, sink, "running", phase="copy")
    window = contention.Window().start(server_pids(srv))
    result = client.copy(ctx)
    observers_yield(srv, False)
    run.contention = window.finish(result.cpu_s)
    run.contended = run.contention["contended"]
    run.duration_s = round(time.perf_counter() - t0, 4)
    if result.elapsed_s is not None:
        run.duration_s = result.elapsed_s
        run.notes.append(f"copy timed by the client from {result.clock}")
    srv.sync()
    progress.stop()
    sink(progress.snapshot())
    run.backend = srv.backend().minus(base_backend)
    run.server_log = _wire_minus(srv.wire(), base_wire)
    run.wire = result.wire or run.server_log
    run.notes.extend(result.notes)
    run.predicted_s = model.predict_seconds(run.server, run.backend)
    _expect(run, srv, core.places, yielding)


def _end_progress(run: Run, progress: _Progress) -> None:
    """On the way out of the copy, whatever ended it: the run's trace, disk map and how far it
    got (the backend counts of a run stopped mid-copy)."""
    progress.stop()
    try:
        progress.finish()
        if run.backend is None and run.reached:  # stopped during the copy: what it had done
            run.backend = BackendCounts(**run.reached["backend"])
    except Exception as e:  # the map is a view: a failure here must not change the result
        run.notes.append(f"no disk map: {type(e).__name__}: {e}")


def _verify(run: Run, srv: Server, image: images.Image, sink: EventSink, cancel: threading.Event) -> None:
    """Verify phase: read the destination back and compare it with the source."""
    assert srv.flags is not None
    check(cancel)
    _state(run, sink, "running", phase="verify")
    t_v = time.perf_counter()
    vr = verify(srv.uri, image, cancel, max_request=srv.flags.block_size_max)
    run.verify_s = round(time.perf_counter() - t_v, 4)
    check(cancel)
    run.verified, run.verify_detail = vr.verified, vr.detail


def _account(run: Run, srv: Server) -> None:
    """Account phase, once the server is released: the stats filter's cross-check (an owned
    server's stats exist once it has stopped) and the final status."""
    run.stats_check = _stats_check(srv, run.backend)
    if run.verified:
        run.status = "succeeded"
    else:
        run.status = "failed"
        run.error = f"the destination does not match the source: {run.verify_detail}"


def _state(run: Run, sink: EventSink, status: str, **extra: Any) -> None:
    run.status = status
    sink({"type": "state", "run_id": run.id, "status": status, **extra})


def _stopped(run: Run, deadline: Deadline) -> None:
    """A run stopped by its cancel event: by the user (cancelled) or by its deadline (failed)."""
    run.status = "failed" if deadline.expired else "cancelled"
    run.error = f"timed out after {deadline.seconds:g} s" if deadline.expired else "cancelled"


def execute(
    run: Run,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
    server: Server | None = None,
    timeout: float | None = None,
    image_cache_bytes: int | None = None,
    core: Core | None = None,
) -> Run:
    """Carry out `run` (mutated in place and returned). Never raises for a failed run.

    Phases: acquire the image, start or attach the server, copy, verify, account. One cleanup
    stack releases what each phase took, in reverse, on every path; one deadline (`timeout`
    seconds) cancels the run like a user would; `server` (a managed one) is attached to and
    left running, else the run starts its own and stops it once. `core`: where files go, the
    limits and how clients run, from the driver's settings (lab.places.Core; default: Core()).
    """
    core = core or Core()
    sink = on_event or (lambda _e: None)
    cancel = cancel or threading.Event()
    client = get_client(run.client)
    run.started_at = time.time()
    run.model = model.model_kind(client.parallel or run.queue_depth > 1)
    srv: Server | None = None
    with Deadline(timeout, cancel) as deadline:
        try:
            _state(run, sink, "running", phase="setup")
            t_setup = time.perf_counter()
            with ExitStack() as stack:
                check(cancel)
                image = stack.enter_context(images.acquire(run.server.size, run.server.pattern, image_cache_bytes,
                                                           core.places))
                srv = stack.enter_context(_start_or_attach(run, server, cancel, core))
                _copy(run, srv, image, client, sink, cancel, stack, t_setup, core)
                _verify(run, srv, image, sink, cancel)
            _account(run, srv)
        except Cancelled:
            _stopped(run, deadline)
        except Exception as e:
            if cancel.is_set():  # the cancel's own fallout (a killed client's broken pipe): still a cancel
                run.notes.append(f"after the cancel: {type(e).__name__}: {e}")
                _stopped(run, deadline)
            else:
                run.status = "failed"
                detail = srv.errors() if srv is not None else []
                run.error = f"{type(e).__name__}: {e}" + (f" ({'; '.join(detail[-2:])})" if detail else "")
        finally:
            run.finished_at = time.time()
    return run


def _wire_minus(now: WireCounts, base: WireCounts) -> WireCounts:
    d = {k: getattr(now, k) - getattr(base, k) for k in
         ("write", "write_bytes", "zero", "zero_bytes", "fast_zero", "fast_zero_failed", "trim", "flush", "failed")}
    return WireCounts(**d, source=now.source, errors=now.errors[len(base.errors):])


def _stats_check(srv: Server, backend: BackendCounts | None) -> dict[str, Any] | None:
    """Compare the stats filter's op counts with the datapath count (they must agree)."""
    if srv.stats is None or backend is None:
        return None
    stats = srv.stats
    agree = stats.get("write", 0) == backend.write_ops and stats.get("zero", 0) == backend.zero_ops
    return {"stats_write_ops": stats.get("write", 0), "stats_zero_ops": stats.get("zero", 0), "agree": agree}
