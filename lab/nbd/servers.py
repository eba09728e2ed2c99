"""nbdkit server instances: spec -> argv, lifecycle on a private Unix socket, libnbd probe.

The filter stack, top (client side) to bottom (plugin side):

    log       what the client sent (wire view)
    nozero    zeromode / fastzeromode: what zeroing is advertised and how it is done
    blocksize maxdata: splits big writes into backend-sized pieces (as real storage would)
    delay     sleeps per backend request: writes and zeroes cost what the talk says
    stats     what reached the plugin, summarised at exit (cross-check)
    noextents no block status, so no client can sidestep the zeroing question
    memory    the plugin (or `file`, on a private temp file)

How the server is built (its *topology*). nbdkit >= 1.31.9 (commit 4aabc22f) carries out a
zero at the first layer whose can_zero is EMULATE, and refuses FAST_ZERO right there
(server/backend.c backend_zero); a filter without .can_zero inherits the value below it
(server/filters.c filter_can_zero). So with `nozero zeromode=emulate` the top layer emulates
and answers every fast zero with ENOTSUP before the nozero filter could apply
`fastzeromode=ignore`: the 2019 behaviour of that pair (drop the flag, then write the zeroes
out) is not reachable in one process. A layer that reports NATIVE above the emulating one
moves the emulation down, and the nbd plugin reports NATIVE whenever its server offers
WRITE_ZEROES. So `zeromode=emulate fastzeromode=ignore` is built as a two-process chain
of stock parts (`topology() == "chain"`):

    front: log -> nozero zeromode=plugin fastzeromode=ignore -> nbd socket=BACK
    back:  nozero zeromode=emulate -> blocksize -> delay -> stats -> noextents -> memory

The front logs the client's 4 fast zeroes, drops the flag and forwards plain zeroes; the
back's core writes them out through the delay filter, as nbdkit did in 2019. Every other
spec is one process (`"single"`), as before. The hop costs one Unix-socket round trip per
request (bench/chain_hop.py measures it).

Readiness is read from nbdkit's own debug output (the top layer's after_fork comes after
the socket is bound and listening), so no sleep or poll loop is needed. Live counts come
from the datapath debug stream, read in raw chunks (`lab.nbd.trace.DatapathScanner`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.flags import ServerFlags
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.spec import ServerSpec
from lab.domain.units import format_delay
from lab.host import cpu, procs
from lab.host.places import Places
from lab.nbd import backends
from lab.nbd.handle import close_handle, probe
from lab.nbd.trace import SYNC_COUNT, DatapathScanner, LogParser, parse_stats

FILTERS = ("log", "nozero", "blocksize", "delay", "stats")
TOP_LAYER = FILTERS[0]
SINGLE, CHAIN = "single", "chain"
TOPOLOGIES = (SINGLE, CHAIN)
# The debug stream is read in batches: after a short read the reader pauses, so nbdkit's
# lines (7 per request, one write each) pile up in the pipe and one wake-up, one read and
# one regex pass account hundreds of them. The pipe is enlarged so a pause never blocks
# nbdkit: 1 MiB holds ~13,000 lines, 35 ms even at 50,000 requests a second.
_PIPE_SIZE = 1 << 20
_CHUNK = 1 << 20
_BATCH_PAUSE_S = 0.005
_SHORT_READ = 1 << 14
_F_SETPIPE_SZ = 1031

class ServerError(RuntimeError):
    pass


def topology(spec: ServerSpec) -> str:
    """How a spec's server is built: one nbdkit, or the front/back chain (see the module doc)."""
    return CHAIN if spec.zeromode == "emulate" and spec.fastzeromode == "ignore" else SINGLE


def _head(socket: Path) -> list[str]:
    return ["nbdkit", "-v", "-D", "nbdkit.backend.datapath=1", "--exit-with-parent", "-U", str(socket)]


def _plugin_args(spec: ServerSpec, disk: Path | None, plugin_args: list[str] | None = None) -> list[str]:
    if plugin_args is not None:
        return list(plugin_args)
    if spec.plugin == "memory":
        return ["memory", f"size={spec.size}"]
    if disk is None:
        raise ValueError("the file plugin needs a disk path")
    return ["file", f"file={disk}"]


def _storage_params(spec: ServerSpec) -> list[str]:
    return [f"maxdata={spec.maxdata}", f"delay-write={format_delay(spec.delay_write)}",
            f"delay-zero={format_delay(spec.delay_zero)}"]


def build_argv(spec: ServerSpec, socket: Path, logfile: Path, statsfile: Path, disk: Path | None = None,
               plugin_args: list[str] | None = None, extra_filters: tuple[str, ...] | list[str] = (),
               extra_params: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The one-process nbdkit command line for a spec (an argv list: nothing here goes through a shell).

    `plugin_args` (from lab.nbd.backends) replace the memory/file plugin: e.g. the `nbd` proxy in
    front of qemu-nbd; `extra_filters` go just above the plugin.
    """
    argv = _head(socket)
    filters = list(FILTERS) + (["noextents"] if spec.noextents else []) + list(extra_filters)
    argv += [f"--filter={f}" for f in filters]
    argv += _plugin_args(spec, disk, plugin_args)
    argv += [
        f"logfile={logfile}",
        f"statsfile={statsfile}",
        f"zeromode={spec.zeromode}",
        f"fastzeromode={spec.fastzeromode}",
        *_storage_params(spec),
        *extra_params,
    ]
    return argv


def build_chain_argv(spec: ServerSpec, socket: Path, back_socket: Path, logfile: Path, statsfile: Path,
                     disk: Path | None = None, plugin_args: list[str] | None = None,
                     extra_filters: tuple[str, ...] | list[str] = (),
                     extra_params: tuple[str, ...] | list[str] = ()) -> tuple[list[str], list[str]]:
    """(front, back) command lines of the two-process chain: the front owns the client's socket
    and the log; the back does the zeroing the spec asks for, below the front's nozero, over
    whatever the server kind puts under the stack (`plugin_args`, `extra_*` as in build_argv)."""
    back = _head(back_socket)
    filters = ["nozero", *FILTERS[2:], *(["noextents"] if spec.noextents else []), *extra_filters]
    back += [f"--filter={f}" for f in filters]
    back += _plugin_args(spec, disk, plugin_args)
    back += [f"statsfile={statsfile}", f"zeromode={spec.zeromode}", *_storage_params(spec), *extra_params]
    front = [*_head(socket), "--filter=log", "--filter=nozero", "nbd", f"socket={back_socket}",
             f"logfile={logfile}", "zeromode=plugin", f"fastzeromode={spec.fastzeromode}"]
    return front, back


def describe_build(spec: ServerSpec, build: str | None = None) -> dict[str, Any]:
    """How the server for `spec` is built, for runs and server listings."""
    if (build or topology(spec)) == SINGLE:
        return {"topology": SINGLE, "processes": 1, "note": "one nbdkit process: log -> nozero -> blocksize -> "
                "delay -> stats" + (" -> noextents" if spec.noextents else "") + f" -> {spec.plugin}"}
    return {"topology": CHAIN, "processes": 2,
            "note": "two nbdkit processes (nbdkit >= 1.31.9 emulates zeromode=emulate in its core above every "
                    "filter, where fastzeromode=ignore cannot act): front log -> nozero zeromode=plugin "
                    f"fastzeromode={spec.fastzeromode} -> nbd, back nozero zeromode={spec.zeromode} -> blocksize -> "
                    "delay -> stats" + (" -> noextents" if spec.noextents else "") + f" -> {spec.plugin}; "
                    "one extra Unix-socket hop per request"}


class _Nbdkit:
    """One nbdkit process of a server and the thread that reads its debug stream in batches.

    Every complete chunk of lines goes to `on_chunk` (the server's counters); before the ready
    marker, and for error lines, the text goes to `on_text` (the server's stderr tail)."""

    def __init__(self, name: str, argv: list[str], top_filter: str, scanner: DatapathScanner,
                 on_chunk: Callable[[_Nbdkit, bytes], None], on_text: Callable[[list[str]], None]) -> None:
        self.name = name
        self.argv = argv
        self.ready_marker = f"debug: {top_filter}: after_fork".encode()
        self.scanner = scanner
        self.on_chunk, self.on_text = on_chunk, on_text
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()
        self.listening = False  # the ready marker was seen (EOF also sets `ready`)
        self.thread: threading.Thread | None = None
        self.reader_cpu_s = 0.0
        self.exit_code: int | None = None
        self.yielding = False  # wanted: yield the CPU to a copy (lab.host.cpu.yield_cpu)
        self._yielded = False  # what the reader thread has applied to itself

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, thread_name: str, timeout: float) -> bool:
        """Start nbdkit and its reader; True once it listens (False: it failed or timed out)."""
        self.proc = procs.spawn(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, bufsize=0)
        self.thread = threading.Thread(target=self._read, name=thread_name, daemon=True)
        self.thread.start()
        # EOF also sets `ready`: a process that failed may not be reaped yet, so `running` alone can lie.
        return self.ready.wait(timeout) and self.listening and self.running

    def stop(self) -> None:
        if self.proc is not None:
            self.exit_code = procs.stop(self.proc)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _read(self) -> None:
        """Read stderr in raw chunks; pass on whole lines only."""
        assert self.proc is not None and self.proc.stderr is not None
        t0 = time.thread_time()
        fd = self.proc.stderr.fileno()
        with contextlib.suppress(OSError):  # a lower pipe-max-size: 5 ms pauses suit 64 KiB too
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        rest = b""
        try:
            while data := os.read(fd, _CHUNK):
                if self.yielding is not self._yielded:
                    cpu.yield_cpu(self.yielding)
                    self._yielded = self.yielding
                if len(data) < _SHORT_READ and self.ready.is_set():
                    time.sleep(_BATCH_PAUSE_S)  # let a batch gather (live counts lag by <= 5 ms)
                buf = rest + data if rest else data
                cut = buf.rfind(b"\n") + 1
                if cut == 0:  # no complete line yet (a very long one is cut, never held forever)
                    rest = buf if len(buf) < _CHUNK else b""
                    continue
                rest = buf[cut:]
                self._feed(buf[:cut] if rest else buf)
        except OSError:
            pass
        finally:
            self.reader_cpu_s = time.thread_time() - t0
            self.ready.set()  # EOF: unblock a waiting start(); it sees the process gone

    def _feed(self, chunk: bytes) -> None:
        if not self.ready.is_set() or b": error: " in chunk:
            lines = chunk.decode(errors="replace").splitlines()
            if self.ready.is_set():
                lines = [ln for ln in lines if ": error: " in ln]
            else:
                lines = [ln for ln in lines if ": debug: " not in ln or ": error: " in ln] or lines[-3:]
            self.on_text(lines)
            if self.ready_marker in chunk:
                self.listening = True
                self.ready.set()
        self.on_chunk(self, chunk)


class _WireLog:
    """The top log filter's file, read on demand into wire counts and the per-request trace."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.parser = LogParser()
        self.fp: Any = None
        self._rest = b""  # a line nbdkit has not finished writing: parsed when complete

    def open(self, path: Path) -> None:
        path.touch()
        self.fp = open(path, "rb")  # noqa: SIM115 - closed in close()

    def drain(self) -> None:
        """Parse what nbdkit appended since the last call: one binary read, whole lines only
        (a text file's tell() per line cost more than the parsing at full speed)."""
        fp = self.fp
        if fp is None:
            return
        with self.lock:
            data = fp.read()
            if not data:
                return
            buf = self._rest + data if self._rest else data
            cut = buf.rfind(b"\n") + 1
            self._rest = buf[cut:]
            self.parser.feed(buf[:cut].decode(errors="replace"))

    def counts(self) -> WireCounts:
        self.drain()
        with self.lock:
            c = self.parser.counts
            return WireCounts(**{**c.to_dict(), "errors": list(c.errors)})

    def rows(self, start: int, upto: int | None) -> list[Any]:
        self.drain()
        with self.lock:
            return self.parser.rows[start:upto]

    def close(self) -> None:
        self.drain()
        if self.fp is not None:
            self.fp.close()
            self.fp = None


class Server:
    """One nbdkit server (one process, or a chain's two): a context manager, or start()/stop()."""

    def __init__(self, spec: ServerSpec, start_timeout: float = 10.0, build: str | None = None, *,
                 places: Places | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        """`build` forces a topology (bench/chain_hop.py); `places`/`limits` are handed to the backend."""
        self.spec = spec
        self.id, self.start_timeout = uuid.uuid4().hex[:12], start_timeout
        if build is not None and build not in TOPOLOGIES:
            raise ValueError(f"build must be one of {', '.join(TOPOLOGIES)}")
        self.topology = build or topology(spec)
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None  # the nbdkit that owns the client's socket
        self.flags: ServerFlags | None = None
        self.started_at: float | None = None
        self.stats: dict[str, int] | None = None
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self._backend = BackendCounts()
        self._top = BackendCounts()
        self._log = _WireLog(self._lock)
        self._stderr_tail: list[str] = []
        self._nbdkits: list[_Nbdkit] = []  # in start order: the back of a chain first
        self._plugin_layer = spec.plugin  # the bottom layer's name in the debug lines (set by start)
        self._listeners: list[Callable[[], None]] = []
        self._sync_waiters: dict[tuple[str, int], threading.Event] = {}
        self._sync_seq = 0
        self.backend_kind = backends.make_backend(spec, places, limits)  # what sits under the filter stack
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
        return bool(self._nbdkits) and all(n.running for n in self._nbdkits)

    @property
    def reader_cpu_s(self) -> float:
        """CPU seconds spent reading the debug streams (finished readers only)."""
        return sum(n.reader_cpu_s for n in self._nbdkits)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Server:
        self.dir = procs.private_dir("srv-", self.backend_kind.places)
        try:
            be = self.backend_kind
            plugin_args = be.plugin_args = be.start(self.dir)
            self._log.open(self.dir / "wire.log")
            self._plugin_layer = be.layer
            self._nbdkits = self._processes(plugin_args)
            for n in self._nbdkits:  # the back must listen before the front's nbd plugin connects to it
                if not n.spawn(f"nbdkit-{self.id}-{n.name}", self.start_timeout):
                    chain = "" if self.topology == SINGLE else f" ({n.name} of the chain)"
                    raise ServerError(self._failure_text(f"nbdkit did not become ready{chain}", n))
            self.proc = self._nbdkits[-1].proc
            self.started_at = time.time()
            try:
                self.flags = probe(self.uri)
            except Exception as e:  # e.g. the back of a chain refuses the front's connection
                raise ServerError(self._failure_text(f"nbdkit does not serve its export ({e})")) from e
            if be.direct_uri and self.spec.kind != "nbdkit":
                self.proxy_cost = measure_proxy_cost(be.direct_uri, self.uri)
        except BaseException:
            self.stop()
            raise
        return self

    def _processes(self, plugin_args: list[str]) -> list[_Nbdkit]:
        """The nbdkit(s) of this topology, each with the counters its stream feeds."""
        assert self.dir is not None
        be, plugin = self.backend_kind, self._plugin_layer
        paths = (self.dir / "wire.log", self.dir / "stats.txt")
        under = {"plugin_args": plugin_args, "extra_filters": be.extra_filters, "extra_params": be.extra_params}
        sinks = {"on_chunk": self._account, "on_text": self._keep_text}
        if self.topology == SINGLE:
            scanner = DatapathScanner({plugin: self._backend, TOP_LAYER: self._top}, sync_layer=plugin)
            return [_Nbdkit("nbdkit", build_argv(self.spec, self.socket, *paths, **under), TOP_LAYER, scanner,
                            **sinks)]
        front, back = build_chain_argv(self.spec, self.socket, self.dir / "back.sock", *paths, **under)
        return [_Nbdkit("back", back, "nozero", DatapathScanner({plugin: self._backend}, plugin), **sinks),
                _Nbdkit("front", front, TOP_LAYER, DatapathScanner({TOP_LAYER: self._top}, TOP_LAYER), **sinks)]

    def stop(self) -> None:
        """Stop nbdkit (TERM, then KILL; a chain's front first) and remove its socket and private dir."""
        for n in reversed(self._nbdkits):
            n.stop()
        self.backend_kind.stop()  # the real server under the proxy, then its storage
        for n in self._nbdkits:
            n.join()
        codes = [n.exit_code for n in self._nbdkits if n.proc is not None]
        if codes:  # the front's code, unless a back failed where the front did not
            self.exit_code = next((c for c in reversed(codes) if c not in (0, None)), codes[-1])
        self._log.close()
        if self.dir is not None and self.dir.exists():  # a second stop keeps the first's stats
            self.stats = _read_stats(self.dir / "stats.txt")
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
        return self._log.counts()

    def trace_len(self) -> int:
        """How many requests (reads apart) the log filter has recorded so far."""
        return len(self._log.rows(0, None))

    def trace_rows(self, start: int, upto: int | None = None) -> list[Any]:
        """The log filter's requests [start:upto] so far (lab.nbd.trace.LogRequest, reads apart)."""
        return self._log.rows(start, upto)

    def sync(self, timeout: float = 5.0) -> None:
        """Return once every request served so far is in the live counters.

        A client's exit means nbdkit answered it, not that our readers have parsed the
        debug lines yet; a marker read, seen coming out of every process's stream, settles it.
        """
        with self._lock:
            self._sync_seq += 1
            offset = (self._sync_seq * 4096) % max(4096, self.spec.size - SYNC_COUNT)
            waits = []
            for n in self._nbdkits:
                done = threading.Event()
                self._sync_waiters[(n.name, offset)] = done
                waits.append(done)
        _marker_read(self.uri, offset)
        deadline = time.monotonic() + timeout
        for done in waits:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                raise ServerError("nbdkit's debug stream did not catch up")
        self._log.drain()

    def errors(self) -> list[str]:
        with self._lock:
            return [line for line in self._stderr_tail if ": error: " in line]

    # -- internals ---------------------------------------------------------------------
    def _keep_text(self, lines: list[str]) -> None:
        with self._lock:
            self._stderr_tail = [*self._stderr_tail, *lines][-50:]

    def _account(self, n: _Nbdkit, chunk: bytes) -> None:
        """A reader's chunk of complete lines: counters, sync markers, then listeners."""
        fire: list[threading.Event] = []
        with self._lock:
            moved, marks = n.scanner.scan(chunk)
            for offset in marks:
                waiter = self._sync_waiters.pop((n.name, offset), None)
                if waiter is not None:
                    fire.append(waiter)
                else:  # someone else's read of that odd size: count it after all
                    c = n.scanner.layers[n.scanner.sync_layer]
                    c.read_ops += 1
                    c.read_bytes += SYNC_COUNT
            listeners = list(self._listeners) if self._plugin_layer in moved else []
        for w in fire:
            w.set()
        for fn in listeners:
            fn()

    def _failure_text(self, what: str, n: _Nbdkit | None = None) -> str:
        with self._lock:
            tail = list(self._stderr_tail)
        return failure_text(what, tail, n.proc if n is not None else self.proc)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri if self.dir else None,
            "running": self.running,
            "pid": self.proc.pid if self.proc else None,
            "server": self.spec.to_dict(),
            "flags": self.flags.to_dict() if self.flags else None,
            "started_at": self.started_at,
            "build": describe_build(self.spec, self.topology),
            **shown_argv(self.spec, self.topology, self.backend_kind),
            "real_server": self.backend_kind.info(),
            "proxy_cost": self.proxy_cost,
        }

    def kind_notes(self) -> list[str]:
        """For a run's notes: what serves the disk, where, and what the proxy in front costs."""
        be = self.backend_kind
        notes = list(be.notes)
        if be.store is not None:
            notes.append(f"disk on {be.store.storage} ({be.store.fs_type}): {be.disk}")
        if be.real_flags is not None and self.flags is not None:
            notes.append(proxy_flags_note(self.spec, be.real_flags, self.flags))
        if self.proxy_cost:
            c = self.proxy_cost
            notes.append(f"nbdkit nbd proxy in front of {self.spec.kind}: {c['added_us_per_request']:+.0f} us per "
                         f"request ({c['direct_us']:.0f} us direct, {c['proxied_us']:.0f} us proxied, "
                         f"{c['reads']} 4 KiB reads)")
        return notes

    def observers_yield(self, on: bool) -> None:
        """Let a server's debug readers yield the CPU to a copy (`on`) or not; each reader applies it
        to itself at its next read (lab.measure.contention: why, and what it saves)."""
        for n in self._nbdkits:
            n.yielding = on

    def pids(self) -> tuple[int, ...]:
        """Every process serving `srv`: its nbdkit(s) and the real server under a proxy (lab.measure.contention)."""
        procs_ = [n.proc for n in self._nbdkits] + [self.backend_kind.proc]
        return tuple(p.pid for p in procs_ if p is not None)


ZERO_FLAGS = ("can_zero", "can_fast_zero", "can_trim")


def proxy_flags_note(spec: ServerSpec, real: ServerFlags, seen: ServerFlags) -> str:
    """What the real server advertises, and whether the lab's stack in front changed it: by the spec's
    own modes (zeromode, fastzeromode) that is the point; otherwise it would be a defect of the proxy."""
    changed = [k for k in ZERO_FLAGS if getattr(real, k) != getattr(seen, k)]
    text = f"the real server advertises: {flag_text(real)}"
    if not changed:
        return text + " (the lab's stack in front passes them on unchanged)"
    if spec.zeromode in ("plugin", "notrim") and spec.fastzeromode == "default":
        return text + f"; the lab's stack in front changes {', '.join(changed)} (a defect: it should not)"
    return text + f"; zeromode={spec.zeromode} fastzeromode={spec.fastzeromode} change {', '.join(changed)} " \
                  "for the client (as asked)"


def flag_text(f: ServerFlags) -> str:
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in f.to_dict().items() if k in
                     ("can_zero", "can_fast_zero", "can_trim", "can_flush", "can_fua"))


def shown_argv(spec: ServerSpec, build: str, be: Any) -> dict[str, list[str]]:
    """The command line(s) of a server, with placeholder paths, for listings."""
    disk = Path("disk.img") if spec.plugin == "file" else None
    # What is really under the stack once started (the nbd proxy of a qemu-nbd, nbd-server or external kind);
    # before that, the plugin the spec names.
    under = {"extra_filters": be.extra_filters, "extra_params": be.extra_params, "plugin_args": be.plugin_args}
    if build == SINGLE:
        return {"argv": build_argv(spec, Path("SOCKET"), Path("wire.log"), Path("stats.txt"), disk, **under)}
    front, back = build_chain_argv(spec, Path("SOCKET"), Path("BACK_SOCKET"), Path("wire.log"), Path("stats.txt"),
                                   disk, **under)
    return {"argv": front, "argv_back": back}


def failure_text(what: str, tail: list[str], proc: subprocess.Popen | None) -> str:
    lines = [ln for ln in tail if "error" in ln] or tail[-3:]
    code = proc.poll() if proc is not None else None
    detail = "; ".join(ln.replace("nbdkit: error: ", "") for ln in lines)
    return f"{what} (exit {code}): {detail}" if detail else f"{what} (exit {code})"


def _marker_read(uri: str, offset: int) -> None:
    import nbd

    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        h.pread(SYNC_COUNT, offset)
    finally:
        close_handle(h)


def _read_stats(path: Path) -> dict[str, int] | None:
    try:
        return parse_stats(path.read_text())
    except OSError:
        return None


PROXY_PROBE_READS = 50  # per round
PROXY_PROBE_ROUNDS = 6


def measure_proxy_cost(direct_uri: str, proxied_uri: str, reads: int = PROXY_PROBE_READS,
                       rounds: int = PROXY_PROBE_ROUNDS) -> dict[str, Any]:
    """What the nbdkit proxy adds per request: the same 4 KiB reads, direct and through it.

    Rounds alternate between the two paths on open connections and each path keeps its
    fastest round, so a stall caused by someone else's work does not become the figure."""
    import nbd

    handles = []
    try:
        for uri in (direct_uri, proxied_uri):
            h = nbd.NBD()
            handles.append(h)
            h.connect_uri(uri)
            h.pread(4096, 0)  # warm up
        best = [float("inf"), float("inf")]
        for _ in range(rounds):
            for i, h in enumerate(handles):
                t0 = time.perf_counter()
                for _ in range(reads):
                    h.pread(4096, 0)
                best[i] = min(best[i], (time.perf_counter() - t0) / reads)
    finally:
        for h in handles:
            close_handle(h)
    direct, proxied = best
    return {"reads": reads * rounds, "direct_us": round(direct * 1e6, 1), "proxied_us": round(proxied * 1e6, 1),
            "added_us_per_request": round((proxied - direct) * 1e6, 1)}


def nbdkit_version() -> str:
    out = subprocess.run(["nbdkit", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split()[-1] if out.returncode == 0 else "unknown"
