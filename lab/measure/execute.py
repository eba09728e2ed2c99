"""One convert run, start to finish: image, server, copy, verify, count, predict.

The CLI and the web service drive the same `execute()`. It reports through a callback
(`on_event`) and stops when `cancel` is set; it never leaves a process or a socket
behind, whatever happens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from lab.domain import floor
from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.latency import by_operation
from lab.domain.run import Run
from lab.domain.units import format_interval
from lab.host import cpu, images
from lab.host.places import Core, Places
from lab.measure import contention, expectation
from lab.nbd import diskmap
from lab.nbd.clients import Cancelled, Client, CopyContext, get_client
from lab.nbd.servers import SINGLE, Server, describe_build
from lab.nbd.verify import verify

PROGRESS_INTERVAL = 0.04  # at most 25 progress events a second per run
# ... and 10 during a CPU-bound copy: each event is ~0.6 ms of CPU the copy would otherwise use
# (measured: events at 25 a second cost a 1 GiB depth-16 copy ~2%)
PROGRESS_INTERVAL_CPU_BOUND = 0.1
EventSink = Callable[[dict[str, Any]], None]


def _expect(run: Run, srv: Server, places: Places | None, cpu_bound: bool) -> None:
    """The calibrated expectation, when this machine has been calibrated (`lab calibrate`); a
    CPU-bound run's own CPU is judged against it too (a sleep-bound run's time is its sleeps, and
    the lab's per-second work over a long run is in its own CPU but not in the calibration's)."""
    # the coefficients are measured on nbdkit's memory plugin: a file on a disk stores at other costs
    if getattr(run.server, "kind", "nbdkit") != "nbdkit" or getattr(run.server, "plugin", "memory") != "memory":
        return
    exp = expectation.expectation(run.client, run.queue_depth, srv.topology, run.server, run.backend,
                                  run.server_log, run.predicted_s or 0.0, places=places)
    if exp is None:
        return
    run.expected_s, run.breakdown, run.calibration = exp.expected_s, exp.breakdown, exp.calibration
    run.expected_low_s, run.expected_high_s, run.expected_coverage = exp.low_s, exp.high_s, exp.coverage
    run.regime, run.machine_factor = exp.regime, exp.machine_factor
    run.calibration_stale = exp.stale is not None
    note = contention.slow_copy_path(run.contention, exp.own_cpu_s) if cpu_bound else None
    if note:
        run.notes.append(note)
    if run.duration_s is not None:
        run.model_verdict, run.model_term = exp.verdict(run.duration_s)
        if run.model_verdict != "within":
            run.notes.append(outside_note(run))
    if exp.stale is not None:
        run.notes.append(f"calibration stale: this machine ran the calibration's control at {exp.stale:.2f}x its "
                         "calibrated time, beyond what the intervals allow for; `lab calibrate` measures it again")


PART_NAMES = {"delays_s": "delays", "per_request_s": "per-request", "per_byte_s": "per-byte", "fixed_s": "fixed"}


def outside_note(run: Run) -> str:
    """Why a run fell outside its interval, as far as the lab can tell."""
    b = run.breakdown or {}
    side = "slower" if run.model_verdict == "slower-than-model" else "faster"
    term = run.model_term or ""
    why = [f"the {PART_NAMES.get(term, term)} part ({b.get(term, 0.0):.3f} s) is most likely "
           f"{'short' if side == 'slower' else 'over'}"]
    c = run.contention or {}
    others = c.get("others_cores") or 0.0
    if run.contended or others >= contention.DISTURBS_SLEEPS_CORES:
        stolen = c.get("stolen_cores") or 0.0
        host = f", {stolen:.2f} of them taken by the hypervisor" if stolen >= 0.01 else ""
        why.append(f"others used {others:.2f} cores during the copy{host}"
                   + ("" if run.contended else " (a sleeping copy's wake-ups wait for them from about "
                      f"{contention.DISTURBS_SLEEPS_CORES:.2f})"))
    if c.get("slow_copy_path"):
        why.append("its own processes burned more CPU than calibrated (slow copy path)")
    expected = format_interval(run.expected_s, run.expected_low_s, run.expected_high_s)
    return (f"{side} than the model: {run.duration_s:.3f} s against expected {expected} "
            f"({100 * (run.expected_coverage or 0):.0f}% of runs land inside); " + "; ".join(why))


def _top_as_wire(top: BackendCounts) -> dict[str, int]:
    return {"write": top.write_ops, "write_bytes": top.write_bytes, "zero": top.zero_ops,
            "zero_bytes": top.zero_bytes, "trim": top.trim_ops, "flush": top.flush_ops}


class _Progress:
    """Coalesces 'something happened' pings into at most one event per interval."""

    def __init__(self, run: Run, server: Server, sink: EventSink, t0: float, yielding: bool = False) -> None:
        self.run, self.server, self.sink, self.t0 = run, server, sink, t0
        self.yielding = yielding  # a CPU-bound copy: this thread yields to it (lab.host.cpu.yield_cpu)
        self.base_backend = server.backend()
        self.base_top = server.top()
        self.client_info: dict[str, Any] = {}
        self.watch = diskmap.Watch(server, run.server.pattern, run.server.size, time.time())
        self._last_cells: dict[str, str] | None = None
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
        cpu.yield_cpu(self.yielding)
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
            extra = {**cells, "cell_size": self.watch.cell}
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
            "predicted_so_far_s": floor.predict_seconds(self.run.server, backend),
            **extra,
        }

    def finish(self) -> None:
        """The run's trace and final map, and how far it got (for a run that stops early)."""
        snap = self.snapshot()
        self.run.trace = self.watch.trace()
        self.run.diskmap = self.watch.summary(self.run.trace)
        self.run.request_stats = by_operation((r.op, r.count, None if r.t1 is None else r.t1 - r.t0)
                                              for r in self.run.trace if r.source == "log")
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
            run.notes.extend(srv.kind_notes())
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
    # The watchers of a CPU-bound copy yield the CPU to it (lab.measure.contention): counts stay exact, a
    # little later; a sleep-bound copy leaves the CPU idle and they keep the normal class.
    yielding = contention.cpu_bound(client.parallel, run.queue_depth, run.server)
    t0 = time.perf_counter()
    progress = _Progress(run, srv, sink, t0, yielding)
    ctx.report = progress.client_report
    srv.observers_yield(yielding)
    stack.callback(srv.observers_yield, False)
    progress.start()
    stack.callback(_end_progress, run, progress)
    _state(run, sink, "running", phase="copy")
    window = contention.Window().start(srv.pids())
    result = client.copy(ctx)
    srv.observers_yield(False)
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
    run.predicted_s = floor.predict_seconds(run.server, run.backend)
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


def _account(run: Run, srv: Server, bytes_checked: bool = True) -> None:
    """Account phase, once the server is released: the stats filter's cross-check (an owned
    server's stats exist once it has stopped) and the final status (a copy nobody verified, a
    control's, succeeds by its copy alone)."""
    run.stats_check = _stats_check(srv, run.backend)
    if run.verified or not bytes_checked:
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
    verify_bytes: bool = True,
) -> Run:
    """Carry out `run` (mutated in place and returned). Never raises for a failed run.

    Phases: acquire the image, start or attach the server, copy, verify, account. One cleanup
    stack releases what each phase took, in reverse, on every path; one deadline (`timeout`
    seconds) cancels the run like a user would; `server` (a managed one) is attached to and
    left running, else the run starts its own and stops it once. `core`: where files go, the
    limits and how clients run, from the driver's settings (lab.host.places.Core; default: Core()).
    `verify_bytes=False` skips the verify phase: only for a control copy whose bytes nobody keeps
    (lab.measure.calibration), never for a run anyone is shown.
    """
    core = core or Core()
    sink = on_event or (lambda _e: None)
    cancel = cancel or threading.Event()
    client = get_client(run.client)
    run.started_at = time.time()
    run.model = floor.model_kind(client.parallel or run.queue_depth > 1)
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
                if verify_bytes:
                    _verify(run, srv, image, sink, cancel)
            _account(run, srv, verify_bytes)
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
