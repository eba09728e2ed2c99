"""nbdkit server instances: spec -> argv, lifecycle on a private Unix socket, libnbd probe.

The filter stack, top (client side) to bottom (plugin side):

    log       what the client sent (wire view; sees nbdkit-core-emulated zeroes as writes)
    nozero    zeromode / fastzeromode: what zeroing is advertised and how it is done
    blocksize maxdata: splits big writes into backend-sized pieces (as real storage would)
    delay     sleeps per backend request: writes and zeroes cost what the talk says
    stats     what reached the plugin, summarised at exit (cross-check)
    noextents no block status, so no client can sidestep the zeroing question
    memory    the plugin (or `file`, on a private temp file)

Readiness is read from nbdkit's own debug output (the top layer's after_fork comes after
the socket is bound and listening), so no sleep or poll loop is needed.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import kinds, procs
from lab.spec import ServerSpec
from lab.trace import BackendCounts, LogParser, WireCounts, add_backend, parse_debug_line, parse_stats
from lab.units import format_delay

FILTERS = ("log", "nozero", "blocksize", "delay", "stats")
TOP_LAYER = FILTERS[0]
# A read of this odd length marks a point in nbdkit's debug stream (see Server.sync).
SYNC_COUNT = 4093


class ServerError(RuntimeError):
    pass


def build_argv(spec: ServerSpec, socket: Path, logfile: Path, statsfile: Path, disk: Path | None = None,
               plugin_args: list[str] | None = None, extra_filters: tuple[str, ...] | list[str] = (),
               extra_params: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The nbdkit command line for a spec (an argv list: nothing here goes through a shell).

    `plugin_args` (from lab.kinds) replace the memory/file plugin: e.g. the `nbd` proxy in
    front of qemu-nbd; `extra_filters` go just above the plugin.
    """
    argv = [
        "nbdkit",
        "-v",
        "-D", "nbdkit.backend.datapath=1",
        "--exit-with-parent",
        "-U", str(socket),
    ]
    filters = list(FILTERS) + (["noextents"] if spec.noextents else []) + list(extra_filters)
    argv += [f"--filter={f}" for f in filters]
    if plugin_args is not None:
        argv += plugin_args
    elif spec.plugin == "memory":
        argv += ["memory", f"size={spec.size}"]
    else:
        if disk is None:
            raise ValueError("the file plugin needs a disk path")
        argv += ["file", f"file={disk}"]
    argv += [
        f"logfile={logfile}",
        f"statsfile={statsfile}",
        f"zeromode={spec.zeromode}",
        f"fastzeromode={spec.fastzeromode}",
        f"maxdata={spec.maxdata}",
        f"delay-write={format_delay(spec.delay_write)}",
        f"delay-zero={format_delay(spec.delay_zero)}",
        *extra_params,
    ]
    return argv


@dataclass
class ServerFlags:
    size: int
    can_zero: bool
    can_fast_zero: bool
    can_trim: bool
    can_flush: bool
    can_fua: bool
    can_multi_conn: bool
    can_block_status: bool
    is_read_only: bool
    block_size_max: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def probe(uri: str) -> ServerFlags:
    """Ask the server what it advertises, as any libnbd client would see it."""
    import nbd

    h = nbd.NBD()
    try:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(uri)
        return ServerFlags(
            size=h.get_size(),
            can_zero=bool(h.can_zero()),
            can_fast_zero=bool(h.can_fast_zero()),
            can_trim=bool(h.can_trim()),
            can_flush=bool(h.can_flush()),
            can_fua=bool(h.can_fua()),
            can_multi_conn=bool(h.can_multi_conn()),
            can_block_status=bool(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)),
            is_read_only=bool(h.is_read_only()),
            block_size_max=int(h.get_block_size(nbd.SIZE_MAXIMUM)),
        )
    finally:
        close_handle(h)


def close_handle(h: Any) -> None:
    """Disconnect cleanly; libnbd 1.14's Python handle has no close(), it closes when freed."""
    try:
        if h.aio_is_ready() or h.aio_is_processing():
            h.shutdown()
    except Exception:
        pass
    del h


class Server:
    """One nbdkit instance. Use as a context manager, or call start() and stop()."""

    def __init__(self, spec: ServerSpec, start_timeout: float = 10.0) -> None:
        self.spec = spec
        self.id = uuid.uuid4().hex[:12]
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc = None
        self.flags: ServerFlags | None = None
        self.started_at: float | None = None
        self.stats: dict[str, int] | None = None
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self._backend = BackendCounts()
        self._top = BackendCounts()
        self._log = LogParser()
        self._log_fp = None
        self._stderr_tail: list[str] = []
        self._ready = threading.Event()
        self._listening = False  # the ready marker was seen (not merely EOF)
        self._reader: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []
        self._sync_waiters: dict[int, threading.Event] = {}
        self._sync_seq = 0
        self.backend_kind = kinds.make_backend(spec)  # what sits under the filter stack
        self.proxy_cost: dict[str, Any] | None = None
        self.run_lock = threading.Lock()  # one run at a time per server

    # -- paths -------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        assert self.dir is not None
        return self.dir / "nbd.sock"

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Server:
        self.dir = procs.private_dir("srv-")
        try:
            logfile = self.dir / "wire.log"
            statsfile = self.dir / "stats.txt"
            be = self.backend_kind
            plugin_args = be.start(self.dir)
            logfile.touch()
            self._log_fp = open(logfile, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in stop()
            argv = build_argv(self.spec, self.socket, logfile, statsfile, plugin_args=plugin_args,
                              extra_filters=be.extra_filters, extra_params=be.extra_params)
            self.proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1)
            self._reader = threading.Thread(target=self._read_stderr, name=f"nbdkit-{self.id}", daemon=True)
            self._reader.start()
            # EOF also sets _ready: a process that failed may not be reaped yet, so `running` alone can lie.
            if not self._ready.wait(self.start_timeout) or not self._listening or not self.running:
                raise ServerError(self._failure_text("nbdkit did not become ready"))
            self.started_at = time.time()
            self.flags = probe(self.uri)
            if be.direct_uri and self.spec.kind != "nbdkit":
                self.proxy_cost = measure_proxy_cost(be.direct_uri, self.uri)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop nbdkit (TERM, then KILL) and remove its socket and private dir."""
        if self.proc is not None:
            self.exit_code = procs.stop(self.proc)
        self.backend_kind.stop()  # the real server under the proxy, then its storage
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._drain_log()
        if self._log_fp is not None:
            self._log_fp.close()
            self._log_fp = None
        if self.dir is not None and self.dir.exists():  # a second stop keeps the first's stats
            try:
                self.stats = parse_stats((self.dir / "stats.txt").read_text())
            except OSError:
                self.stats = None
            procs.remove_dir(self.dir)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- live counters -----------------------------------------------------------------
    def add_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def backend(self) -> BackendCounts:
        """Cumulative requests that reached the plugin so far."""
        with self._lock:
            return BackendCounts(**self._backend.to_dict())

    def top(self) -> BackendCounts:
        """Cumulative calls entering the top filter so far (after nbdkit's core)."""
        with self._lock:
            return BackendCounts(**self._top.to_dict())

    def wire(self) -> WireCounts:
        """What the log filter has recorded so far."""
        self._drain_log()
        with self._lock:
            c = self._log.counts
            return WireCounts(**{**c.to_dict(), "errors": list(c.errors)})

    def trace_len(self) -> int:
        """How many requests (reads apart) the log filter has recorded so far."""
        self._drain_log()
        with self._lock:
            return len(self._log.rows)

    def trace_rows(self, start: int, upto: int | None = None) -> list[Any]:
        """The log filter's requests [start:upto] so far (lab.trace.LogRequest, reads apart)."""
        self._drain_log()
        with self._lock:
            return self._log.rows[start:upto]

    def sync(self, timeout: float = 5.0) -> None:
        """Return once every request served so far is in the live counters.

        A client's exit means nbdkit answered it, not that our reader has parsed the
        debug lines yet; a marker read, seen coming out of the same pipe, settles it.
        """
        import nbd

        with self._lock:
            self._sync_seq += 1
            offset = (self._sync_seq * 4096) % max(4096, self.spec.size - SYNC_COUNT)
            done = threading.Event()
            self._sync_waiters[offset] = done
        h = nbd.NBD()
        try:
            h.connect_uri(self.uri)
            h.pread(SYNC_COUNT, offset)
        finally:
            close_handle(h)
        if not done.wait(timeout):
            raise ServerError("nbdkit's debug stream did not catch up")
        self._drain_log()

    def errors(self) -> list[str]:
        with self._lock:
            return [line for line in self._stderr_tail if ": error: " in line]

    # -- internals ---------------------------------------------------------------------
    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        plugin = self.backend_kind.layer
        ready_marker = f"debug: {TOP_LAYER}: after_fork"
        for line in self.proc.stderr:
            ev = parse_debug_line(line)
            if ev is None:
                if ": error: " in line or not self._ready.is_set():
                    with self._lock:
                        self._stderr_tail = [*self._stderr_tail, line.rstrip()][-50:]
                if ready_marker in line:
                    self._listening = True
                    self._ready.set()
                continue
            notify = False
            with self._lock:
                if ev.layer == plugin and ev.op == "pread" and ev.count == SYNC_COUNT:
                    waiter = self._sync_waiters.pop(ev.offset, None)
                    if waiter is not None:
                        waiter.set()
                        continue
                if ev.layer == plugin:
                    add_backend(self._backend, ev)
                    notify = ev.op != "pread"
                elif ev.layer == TOP_LAYER:
                    add_backend(self._top, ev)
            if notify:
                self._notify()
        self._ready.set()  # EOF: unblock a waiting start(); it sees the process gone

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            fn()

    def _drain_log(self) -> None:
        fp = self._log_fp
        if fp is None:
            return
        with self._lock:
            while True:
                pos = fp.tell()
                line = fp.readline()
                if not line:
                    break
                if not line.endswith("\n"):  # partial line: read it again when complete
                    fp.seek(pos)
                    break
                self._log.feed(line)

    def _failure_text(self, what: str) -> str:
        with self._lock:
            lines = [ln for ln in self._stderr_tail if "error" in ln] or self._stderr_tail[-3:]
        code = self.proc.poll() if self.proc is not None else None
        detail = "; ".join(ln.replace("nbdkit: error: ", "") for ln in lines)
        return f"{what} (exit {code}): {detail}" if detail else f"{what} (exit {code})"

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri if self.dir else None,
            "running": self.running,
            "pid": self.proc.pid if self.proc else None,
            "server": self.spec.to_dict(),
            "flags": self.flags.to_dict() if self.flags else None,
            "started_at": self.started_at,
            "argv": build_argv(self.spec, Path("SOCKET"), Path("wire.log"), Path("stats.txt"),
                               Path("disk.img") if self.spec.plugin == "file" else None,
                               extra_filters=self.backend_kind.extra_filters,
                               extra_params=self.backend_kind.extra_params),
            "real_server": self.backend_kind.info(),
            "proxy_cost": self.proxy_cost,
        }


PROXY_PROBE_READS = 200


def measure_proxy_cost(direct_uri: str, proxied_uri: str, reads: int = PROXY_PROBE_READS) -> dict[str, Any]:
    """What the nbdkit proxy adds per request: the same 4 KiB reads, direct and through it."""
    import nbd

    def per_read(uri: str) -> float:
        h = nbd.NBD()
        try:
            h.connect_uri(uri)
            h.pread(4096, 0)  # warm up
            t0 = time.perf_counter()
            for _ in range(reads):
                h.pread(4096, 0)
            return (time.perf_counter() - t0) / reads
        finally:
            close_handle(h)

    direct, proxied = per_read(direct_uri), per_read(proxied_uri)
    return {"reads": reads, "direct_us": round(direct * 1e6, 1), "proxied_us": round(proxied * 1e6, 1),
            "added_us_per_request": round((proxied - direct) * 1e6, 1)}


def nbdkit_version() -> str:
    out = subprocess.run(["nbdkit", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split()[-1] if out.returncode == 0 else "unknown"
