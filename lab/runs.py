"""One convert run, start to finish: image, server, copy, verify, count, predict.

The CLI and the web service drive the same `execute()`. It reports through a callback
(`on_event`) and stops when `cancel` is set; it never leaves a process or a socket
behind, whatever happens.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lab import diskmap, images, model
from lab.clients import Cancelled, CopyContext, get_client
from lab.servers import Server
from lab.spec import ServerSpec
from lab.trace import BackendCounts, WireCounts
from lab.verify import verify

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
PROGRESS_INTERVAL = 0.04  # at most 25 progress events a second per run

EventSink = Callable[[dict[str, Any]], None]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Run:
    """A run and, once finished, its result. `to_dict()` is the one serializer."""

    client: str
    server: ServerSpec
    id: str = field(default_factory=new_id)
    status: str = "queued"
    queue_depth: int = 1
    server_id: str | None = None
    sweep_id: str | None = None
    label: str | None = None
    reference: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    setup_s: float | None = None
    duration_s: float | None = None
    verify_s: float | None = None
    predicted_s: float | None = None
    model: str | None = None
    verified: bool | None = None
    verify_detail: str | None = None
    backend: BackendCounts | None = None
    wire: WireCounts | None = None
    server_log: WireCounts | None = None
    stats_check: dict[str, Any] | None = None
    flags: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    # How far the copy got (fraction, bytes, phase): what a cancelled or failed run had reached.
    reached: dict[str, Any] | None = None
    # The disk map of the copy: {"cell_size", "size", "cells" (run-length encoded), "requests"}.
    diskmap: dict[str, Any] | None = None
    # The per-request trace (lab.diskmap.TraceRow); kept apart from to_dict(), saved by the manager.
    trace: list[Any] | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float | None:
        if self.duration_s is None or not self.predicted_s:
            return None
        return round(self.duration_s / self.predicted_s, 4)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("trace", None)
        d["server"] = self.server.to_dict()
        d["backend"] = self.backend.to_dict() if self.backend else None
        d["wire"] = self.wire.to_dict() if self.wire else None
        d["server_log"] = self.server_log.to_dict() if self.server_log else None
        d["ratio"] = self.ratio
        return d


def _top_as_wire(top: BackendCounts) -> dict[str, int]:
    return {"write": top.write_ops, "write_bytes": top.write_bytes, "zero": top.zero_ops,
            "zero_bytes": top.zero_bytes, "trim": top.trim_ops, "flush": top.flush_ops}


class _Progress:
    """Coalesces 'something happened' pings into at most one event per interval."""

    def __init__(self, run: Run, server: Server, sink: EventSink, t0: float) -> None:
        self.run, self.server, self.sink, self.t0 = run, server, sink, t0
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
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            self.sink(self.snapshot())
            self.events += 1
            time.sleep(PROGRESS_INTERVAL)  # rate limit; pings meanwhile coalesce

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


def execute(
    run: Run,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
    server: Server | None = None,
    timeout: float | None = None,
    image_cache_bytes: int | None = None,
) -> Run:
    """Carry out `run` (mutated in place and returned). Never raises for a failed run."""
    sink = on_event or (lambda _e: None)
    cancel = cancel or threading.Event()
    client = get_client(run.client)
    own_server = server is None
    timed_out = threading.Event()
    timer = None
    if timeout:
        def _expire() -> None:
            timed_out.set()
            cancel.set()
        timer = threading.Timer(timeout, _expire)
        timer.daemon = True
        timer.start()

    def state(status: str, **extra: Any) -> None:
        run.status = status
        sink({"type": "state", "run_id": run.id, "status": status, **extra})

    run.started_at = time.time()
    run.model = model.model_kind(client.parallel or run.queue_depth > 1)
    state("running", phase="setup")
    t_setup = time.perf_counter()
    srv: Server | None = server
    progress: _Progress | None = None
    try:
        if cancel.is_set():
            raise Cancelled()
        with images.acquire(run.server.size, run.server.pattern, image_cache_bytes) as image:
            if own_server:
                srv = Server(run.server).start()
            assert srv is not None and srv.flags is not None
            lock = srv.run_lock
            if not lock.acquire(timeout=timeout if timeout else -1):
                raise RuntimeError("the server is busy with another run")
            try:
                run.flags = srv.flags.to_dict()
                run.server_id = None if own_server else srv.id
                base_backend, base_wire = srv.backend(), srv.wire()
                run.setup_s = round(time.perf_counter() - t_setup, 4)
                ctx = CopyContext(image=image, uri=srv.uri, flags=srv.flags, source_format=run.server.source_format,
                                  queue_depth=run.queue_depth, cancel=cancel)
                t0 = time.perf_counter()
                progress = _Progress(run, srv, sink, t0)
                ctx.report = progress.client_report
                progress.start()
                state("running", phase="copy")
                result = client.copy(ctx)
                run.duration_s = round(time.perf_counter() - t0, 4)
                if result.elapsed_s is not None:
                    run.duration_s = result.elapsed_s
                    run.notes.append("copy timed by the client from connect to disconnect")
                srv.sync()
                progress.stop()
                sink(progress.snapshot())
                run.backend = srv.backend().minus(base_backend)
                run.server_log = _wire_minus(srv.wire(), base_wire)
                run.wire = result.wire or run.server_log
                run.notes.extend(result.notes)
                run.predicted_s = model.predict_seconds(run.server, run.backend)
                if cancel.is_set():
                    raise Cancelled()
                state("running", phase="verify")
                t_v = time.perf_counter()
                vr = verify(srv.uri, image, cancel, max_request=srv.flags.block_size_max)
                run.verify_s = round(time.perf_counter() - t_v, 4)
                if cancel.is_set():
                    raise Cancelled()
                run.verified = vr.verified
                run.verify_detail = vr.detail
            finally:
                lock.release()
            if own_server:
                srv.stop()
                run.stats_check = _stats_check(srv, run.backend)
        if not run.verified:
            run.error = f"the destination does not match the source: {run.verify_detail}"
            run.status = "failed"
        else:
            run.status = "succeeded"
    except Cancelled:
        if timed_out.is_set():
            run.status = "failed"
            run.error = f"timed out after {timeout:g} s"
        else:
            run.status = "cancelled"
            run.error = "cancelled"
    except Exception as e:
        run.status = "failed"
        detail = srv.errors() if srv is not None else []
        run.error = f"{type(e).__name__}: {e}" + (f" ({'; '.join(detail[-2:])})" if detail else "")
    finally:
        if timer is not None:
            timer.cancel()
        if progress is not None:
            progress.stop()
            try:
                progress.finish()
                if run.backend is None and run.reached:  # stopped during the copy: what it had done
                    run.backend = BackendCounts(**run.reached["backend"])
            except Exception as e:  # the map is a view: a failure here must not change the result
                run.notes.append(f"no disk map: {type(e).__name__}: {e}")
        if own_server and srv is not None:
            srv.stop()
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
