"""Server kinds behind one interface: what sits under the lab's nbdkit filter stack.

Every kind is observed the same way: the lab's nbdkit (log, nozero, blocksize, delay,
stats, noextents filters) is always the server the client talks to. What is under it:

    nbdkit      the `memory` plugin, or the `file` plugin on a disk on the chosen storage
    qemu-nbd    qemu's NBD server on a raw or qcow2 disk, behind nbdkit's `nbd` plugin
    nbd-server  the reference NBD server (Debian's nbd-server), behind nbdkit's `nbd` plugin
    external    a listed NBD target the user names (lab.nbd.external), behind nbdkit's `nbd` plugin

For the last three the `nbd` plugin is a proxy holding one shared connection to the real
server: every request the client sends passes the same filters, so the same counters and
log lines exist for every kind. `direct_uri` is the real server without the proxy (the
probe times both, so what the proxy costs is a measured figure, not a guess).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.scenarios import Row, Scenario
from lab.domain.spec import KINDS, FieldProblem, ServerSpec, build_spec
from lab.domain.targets import allowed_targets, check_target
from lab.host import procs, storage
from lab.host.places import Places
from lab.nbd.external import check_export
from lab.nbd.handle import probe

READY_TIMEOUT = 15.0


class KindError(RuntimeError):
    pass


def availability(limits: Limits = DEFAULT_LIMITS) -> dict[str, dict[str, object]]:
    """Each kind with `available` and, when not, `reason` (external: when `limits` list a target)."""
    reasons: dict[str, str | None] = {
        "nbdkit": None if shutil.which("nbdkit") else "nbdkit not installed (Debian package nbdkit)",
        "qemu-nbd": None if shutil.which("qemu-nbd") else "qemu-nbd not installed (Debian package qemu-utils)",
        "nbd-server": None if shutil.which("nbd-server") else "nbd-server not installed (Debian package nbd-server)",
        "external": None if allowed_targets(limits) else
        "no target is listed in LAB_EXTERNAL_TARGETS (off by default)",
    }
    return {k: {"available": r is None, **({"reason": r} if r else {})} for k, r in reasons.items()}


def needs(spec: ServerSpec) -> tuple[str, ...]:
    """The capabilities a server of `spec` needs from the machine it runs on: its kind, its storage."""
    return (f"kind:{spec.kind}", *((f"storage:{spec.storage}",) if spec.storage else ()))


@dataclass(frozen=True)
class Machine:
    """What this machine has for a server: the kinds installed, and the storages usable under `places`.

    A lab.domain.spec.MachineCheck: handed to check_fields/build_spec by whoever accepts server fields
    for work here (the manager, the CLI), so fields asking for what is missing are refused, naming the
    field, before anything starts. Scenario rows needing it are left out of a sweep (`runnable`).
    """

    places: Places | None = None  # None: the process default (lab.host.places)

    def __call__(self, spec: ServerSpec) -> Iterator[FieldProblem]:
        k = availability()[spec.kind]
        if not k["available"] and spec.kind != "external":  # external's rules are the fields' own (targets)
            yield FieldProblem("kind", str(k["reason"]))
        if spec.storage:
            st = storage.availability(self.places)[spec.storage]
            if not st["available"]:
                yield FieldProblem("storage", f"{spec.storage} is not available here: {st['reason']}")

    def availability(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, dict[str, dict[str, object]]]:
        """Per field (kind, storage), per choice: `available`, and `reason` when not."""
        return {"kind": availability(limits), "storage": storage.availability(self.places)}

    def capabilities(self, limits: Limits = DEFAULT_LIMITS) -> frozenset[str]:
        """What this machine offers jobs (lab.service.jobs.Needs): `kind:K` and `storage:S` for each one
        available here (see needs(); kind external when `limits` list a target), `root` when it is root."""
        caps = {f"kind:{k}" for k, a in availability(limits).items() if a["available"]}
        caps |= {f"storage:{s}" for s, a in storage.availability(self.places).items() if a["available"]}
        if os.geteuid() == 0:
            caps.add("root")
        return frozenset(caps)

    def _have(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        return availability(), storage.availability(self.places)

    def unavailable(self, row: Row, have: tuple[dict[str, Any], dict[str, Any]] | None = None) -> str | None:
        """Why this machine cannot run a scenario row itself (a kind or storage it lacks, a disk its
        storage cannot hold, a filesystem the row must not land on), or None. `have`: _have(), once."""
        kinds, storages = have or self._have()
        kind = row.server.get("kind", "nbdkit")
        k = kinds.get(kind, {"available": False, "reason": f"unknown kind {kind}"})
        if not k["available"]:
            return f"kind {kind}: {k['reason']}"
        st = row.server.get("storage")
        if not st:
            return None
        a = storages.get(st, {"available": False, "reason": f"unknown storage {st}"})
        if not a["available"]:
            return f"storage {st}: {a['reason']}"
        why = storage.too_small(st, build_spec(row.server).size, self.places)
        if why:
            return f"storage {why}"
        if row.avoid_fs:
            try:
                parent = storage.parent_dir(st, self.places, make=False)
            except OSError as e:
                return f"storage {st}: {e}"
            fs = storage.fs_type(parent) if parent else ""
            if fs in row.avoid_fs:
                return f"storage {st}: {parent} is on {fs}, the filesystem this row is compared against"
        return None

    def here(self, row: Row, have: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Row:
        """The row as this machine runs it: itself, else the first of its alternatives it can run
        (same key and group), else itself with `available` False and every reason."""
        have = have or self._have()
        reasons = []
        for candidate in (row, *row.alternatives):
            why = self.unavailable(candidate, have)
            if why is None:
                return replace(candidate, alternatives=(), available=True, reason=None)
            reasons.append(why)
        return replace(row, alternatives=(), available=False, reason="; ".join(reasons))

    def scenario(self, s: Scenario) -> Scenario:
        """`s` with every row as here() gives it (`available` and `reason` set on each)."""
        have = self._have()
        return s.map_rows(lambda r: self.here(r, have))

    def runnable(self, rows: list[Row]) -> tuple[list[Row], dict[str, str]]:
        """The rows this machine can run (an alternative standing in where the row's own storage is
        missing), and {row key: why not} for the others."""
        have = self._have()
        keep, skipped = [], {}
        for r in rows:
            resolved = self.here(r, have)
            if resolved.available:
                keep.append(resolved)
            else:
                skipped[r.key] = resolved.reason or "not available here"
        return keep, skipped


@dataclass
class Backend:
    """What runs under the filter stack. start() returns the nbdkit plugin arguments."""

    spec: ServerSpec
    dir: Path | None = None
    layer: str = "nbd"  # the plugin layer's name in nbdkit's debug lines
    direct_uri: str | None = None
    store: storage.Provisioned | None = None
    proc: subprocess.Popen | None = None
    disk: Path | None = None
    extra_filters: list[str] = field(default_factory=list)
    extra_params: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # the real server's command line (empty: nbdkit itself)
    plugin_args: list[str] | None = None  # what start() put under the filter stack (shown in listings)
    real_flags: Any = None  # lab.domain.flags.ServerFlags the real server advertises, asked without the proxy
    places: Places | None = None  # where a disk on a storage goes (lab.host.places)
    limits: Limits = DEFAULT_LIMITS  # the external targets allowed, the size limit

    def start(self, dir: Path) -> list[str]:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the real server (if any), then release the storage: on every path, twice is fine."""
        if self.proc is not None:
            procs.stop(self.proc)
        if self.store is not None:
            self.store.release()

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def info(self) -> dict[str, Any]:
        return {"kind": self.spec.kind, "direct_uri": self.direct_uri, "argv": list(self.argv) or None,
                "flags": self.real_flags.to_dict() if self.real_flags is not None else None,
                "storage": self.store.info() if self.store else None,
                "disk": str(self.disk) if self.disk else None,
                "backend_pid": self.proc.pid if self.proc else None, "notes": list(self.notes)}

    # -- helpers -------------------------------------------------------------------------
    def _make_disk(self, dir: Path, name: str = "disk.img") -> Path:
        """The disk file (or device) on the chosen storage; the server's private dir if none."""
        st = self.spec.storage
        if st:
            self.store = storage.provision(st, self.spec.size, name, self.places)
            assert self.store.disk is not None
            self.disk = self.store.disk
        else:
            self.disk = dir / name
        if not (self.store and self.store.is_block):
            with open(self.disk, "wb") as f:
                f.truncate(self.spec.size)
        if self.spec.disk_init == "data":
            fill_with_data(self.disk, self.spec.size)
        return self.disk

    def _spawn(self, argv: list[str], what: str, sock: Path) -> None:
        self.argv = list(argv)
        errlog = open(self.dir / f"{what}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=errlog, stderr=subprocess.STDOUT)
        finally:
            errlog.close()
        wait_for_socket(sock, self.proc, what, self.dir / f"{what}.log")

    def _proxy(self, **where: str) -> list[str]:
        # shared=true: one connection to the real server for all clients (nbd-server -d
        # serves exactly one); retry covers a server still binding its socket.
        return ["nbd", *(f"{k}={v}" for k, v in where.items()), "shared=true"]


class NbdkitBackend(Backend):
    def start(self, dir: Path) -> list[str]:
        self.dir = dir
        self.layer = self.spec.plugin
        if self.spec.plugin == "memory":
            return ["memory", f"size={self.spec.size}"]
        disk = self._make_disk(dir)
        return ["file", f"file={disk}"]


class QemuNbdBackend(Backend):
    def start(self, dir: Path) -> list[str]:
        self.dir = dir
        fmt = self.spec.disk_format
        disk = self._make_disk(dir, f"disk.{fmt}")
        if fmt == "qcow2":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(self.spec.size)],
                           check=True, capture_output=True, timeout=60, env=procs.child_env())
        sock = dir / "backend.sock"
        # O_DIRECT where the storage has it (real I/O, no double caching); tmpfs may not. qemu refuses to open
        # an image under O_DIRECT whose size is not a multiple of the request alignment (4k), so such a size
        # is served through the page cache instead.
        direct = _supports_o_direct(disk) and self.spec.size % 4096 == 0
        cache = ["--cache=none", "--aio=native"] if direct else ["--cache=writeback", "--aio=threads"]
        self.notes.append(f"qemu-nbd -f {fmt} {' '.join(cache)} --discard=unmap --detect-zeroes=off")
        argv = ["qemu-nbd", "-f", fmt, "-k", str(sock), "-t", "-e", "8", *cache,
                "--discard=unmap", "--detect-zeroes=off", str(disk)]
        self._spawn(argv, "qemu-nbd", sock)
        self.direct_uri = f"nbd+unix:///?socket={sock}"
        self.real_flags = probe(self.direct_uri)  # the real server's own answer, no proxy in between
        return self._proxy(socket=str(sock))


class NbdServerBackend(Backend):
    def start(self, dir: Path) -> list[str]:
        self.dir = dir
        disk = self._make_disk(dir)
        sock = dir / "backend.sock"
        conf = dir / "nbd-server.conf"
        # A private config: no TCP listener (unixsock only), no user switch, every
        # capability the server has switched on. -d: stay in the foreground (one client).
        conf.write_text("[generic]\n"
                        f"    unixsock = {sock}\n"
                        "[lab]\n"
                        f"    exportname = {disk}\n"
                        "    trim = true\n    flush = true\n    fua = true\n")
        self.notes.append("nbd-server -d (serves one connection: the proxy's shared one)")
        argv = ["nbd-server", "-C", str(conf), "-d"]
        # Its flags asked directly first: that uses up the process's one connection, so it starts again
        # for the proxy's (the disk stays).
        self._spawn(argv, "nbd-server", sock)
        self.real_flags = probe(f"nbd+unix:///lab?socket={sock}")
        assert self.proc is not None
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            procs.stop(self.proc)
        sock.unlink(missing_ok=True)
        self._spawn(argv, "nbd-server", sock)
        self.direct_uri = None  # one connection only: the proxy's (a probe goes through it)
        return self._proxy(socket=str(sock), export="lab")


class ExternalBackend(Backend):
    def start(self, dir: Path) -> list[str]:
        self.dir = dir
        target = check_target(self.spec.target, self.limits)  # raises before any connection
        check_export(target, self.spec, self.spec.destructive, self.limits)
        self.direct_uri = target.uri
        self.real_flags = probe(self.direct_uri)
        # The run sees exactly `size` bytes of the export: the offset filter's window hides the rest. Not the
        # truncate filter: it advertises fast zero whatever the target does (truncate_can_fast_zero returns 1 in
        # nbdkit 1.32), and the proxy must not add a flag; offset passes every can_* through.
        self.extra_filters = ["offset"]
        self.extra_params = [f"range={self.spec.size}"]
        self.notes.append(f"external target {target.text}: the first {self.spec.size} bytes are written")
        return self._proxy(**target.nbd_plugin_params())


_BACKENDS: dict[str, type[Backend]] = {"nbdkit": NbdkitBackend, "qemu-nbd": QemuNbdBackend,
                                       "nbd-server": NbdServerBackend, "external": ExternalBackend}


def make_backend(spec: ServerSpec, places: Places | None = None, limits: Limits = DEFAULT_LIMITS) -> Backend:
    kind = spec.kind
    try:
        return _BACKENDS[kind](spec, places=places, limits=limits)
    except KeyError:
        raise KindError(f"unknown server kind {kind!r}; choose one of {', '.join(KINDS)}") from None


def wait_for_socket(sock: Path, proc: subprocess.Popen, what: str, log: Path,
                    timeout: float = READY_TIMEOUT) -> None:
    """Until a socket listens at `sock`, or the server has died.

    Read from /proc/net/unix, not by connecting: nbd-server -d serves exactly one
    connection, and a test connection would use it up.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if proc.poll() is not None:
            raise KindError(f"{what} exited with status {proc.returncode}: {_tail(log)}")
        if _listening(sock):
            return
        if time.monotonic() > deadline:
            raise KindError(f"{what} did not listen on its socket within {timeout:g} s: {_tail(log)}")
        time.sleep(delay)
        delay = min(0.1, delay * 2)


_SO_ACCEPTCON = 0x10000


def _listening(sock: Path) -> bool:
    want = str(sock)
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7] == want and int(parts[3], 16) & _SO_ACCEPTCON:
                    return True
    except OSError:
        return sock.exists()
    return False


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace").strip()[-300:] or "(no output)"
    except OSError:
        return "(no output)"


FILL_BYTE = 0xA5


def fill_with_data(path: Path, size: int) -> None:
    """Write every byte (a reused destination: no holes left), synced, before the server starts."""
    chunk = bytes([FILL_BYTE]) * (1 << 20)
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in range(0, size, len(chunk)):
            os.pwrite(fd, chunk[:min(len(chunk), size - off)], off)
        os.fsync(fd)
    finally:
        os.close(fd)


def _supports_o_direct(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True
