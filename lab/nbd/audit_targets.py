"""The server an audit talks to: the real one, bare, with nothing of the lab's in front.

The lab's runs put nbdkit's filter stack (and, for other kinds, an nbd proxy) in front of
every server, so they can count requests. An audit must not: the flags it reports are the
real server's, and a bug below a proxy must not be hidden (or caused) by it. So here each
kind is started as a person would start it, on a disk the audit provisions:

    nbdkit      nbdkit -f -v -D file.zero=1 -U SOCK file file=DISK   (or memory size=N)
    qemu-nbd    qemu-nbd -f raw|qcow2 -k SOCK -t -e 8 ... DISK
    nbd-server  nbd-server -C CONF -d  (serves ONE connection, then exits: started again per connection)
    external    a listed target (lab.nbd.external), connected to directly

`argv` is the exact command line used (shown in the report and the reproducer); nbdkit's
`-v` debug stream is kept, so a cell can show which mechanism zeroed it (the file plugin's
`-D file.zero=1` lines: punch hole, zero range, BLKZEROOUT, or "falling back to writing",
and the core's fallback writes with their offsets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.host import procs, storecaps
from lab.host.places import Places
from lab.host.storage import Provisioned
from lab.host.userstore import Place, provision_place
from lab.nbd.backends import KindError, wait_for_socket
from lab.nbd.handle import close_handle

AUDIT_KINDS = ("nbdkit-memory", "nbdkit-file", "qemu-nbd", "nbd-server", "external")
MAX_DEBUG_LINES = 200_000


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def proc_wchar(proc: subprocess.Popen | None) -> int | None:
    """Bytes a process (all its threads) has passed to write-like system calls so far."""
    if proc is None or proc.poll() is not None:
        return None
    try:
        with open(f"/proc/{proc.pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Target:
    """One server under audit. Subclasses say how it starts and how a connection is made."""

    kind = "?"

    def __init__(self, fields: dict[str, Any], disk_size: int, places: Places | None, limits: Limits,
                 api: bool = False) -> None:
        self.fields, self.disk_size, self.places, self.limits, self.api = fields, disk_size, places, limits, api
        self.dir: Path | None = None
        self.store: Provisioned | None = None
        self.disk: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] = []
        self.uri = ""
        self.caps: dict[str, Any] | None = None
        self._debug: list[str] = []
        self._debug_lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # -- what the report says about it --------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "argv": list(self.argv), "version": self.version(),
                               "uri": self.uri}
        if self.store is not None:
            out["storage"] = {"place": self.place_text(), "filesystem": self.store.fs_type,
                              "disk": str(self.disk), "loop_devices": list(self.store.loops),
                              "capabilities": self.caps}
        return out

    def place_text(self) -> str:
        return str(self.fields.get("storage") or "")

    def version(self) -> str:
        return "unknown"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Target:
        self.dir = procs.private_dir("aud-", self.places)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """The server, then the storage, then our dir: on every path, twice is fine."""
        if self.proc is not None:
            procs.stop(self.proc)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.store is not None:
            self.store.release()
        if self.dir is not None and self.dir.exists():
            procs.remove_dir(self.dir)

    def _provision(self) -> Path:
        place = Place("storage", "tmpfs", "tmpfs")
        from lab.host.userstore import parse_place

        if self.fields.get("storage"):
            place = parse_place(str(self.fields["storage"]))
        self.store = provision_place(place, self.disk_size, self.places, self.limits,
                                     destructive=bool(self.fields.get("destructive")), api=self.api)
        assert self.store.disk is not None
        self.disk = self.store.disk
        if not self.store.is_block:
            with open(self.disk, "wb") as f:
                f.truncate(self.disk_size)
        self.caps = storecaps.capabilities(self.disk, self.store.is_block)
        return self.disk

    # -- connections ----------------------------------------------------------------------------
    def connect(self) -> Any:
        import nbd

        h = nbd.NBD()
        h.connect_uri(self.uri)
        return h

    def disconnect(self, h: Any) -> None:
        close_handle(h)

    # -- evidence -------------------------------------------------------------------------------
    def debug_mark(self) -> int:
        with self._debug_lock:
            return len(self._debug)

    def debug_since(self, mark: int) -> list[str]:
        with self._debug_lock:
            return self._debug[mark:]

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._debug_lock:
                if len(self._debug) < MAX_DEBUG_LINES:
                    self._debug.append(line)

    def _spawn_reading(self, argv: list[str], sock: Path, what: str) -> None:
        self.proc = procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, name=f"audit-{what}", daemon=True)
        self._reader.start()
        wait_for_socket(sock, self.proc, what, Path(os.devnull))

    def _spawn_logged(self, argv: list[str], sock: Path, what: str) -> subprocess.Popen:
        assert self.dir is not None
        log = self.dir / f"{what}.log"
        with open(log, "ab") as f:
            proc = procs.spawn(argv, stdout=f, stderr=subprocess.STDOUT)
        wait_for_socket(sock, proc, what, log)
        return proc

    def evidence(self) -> dict[str, int | None]:
        """What the storage holds and has been sent so far (compared before/after a request): bytes
        allocated to the disk, bytes the kernel counted as written to the device under it, and bytes
        the server process passed to write(2)/pwrite(2) (its /proc/PID/io wchar: a zero it wrote out
        itself shows here on any storage, even tmpfs)."""
        out: dict[str, int | None] = {"allocated": None, "device_written": None,
                                      "server_wchar": proc_wchar(self.proc)}
        if self.disk is not None:
            sysdev = storecaps.sys_block(self.disk)
            out["allocated"] = storecaps.allocated_bytes(self.disk)
            out["device_written"] = storecaps.device_written_bytes(sysdev) if sysdev is not None else None
        return out


class NbdkitTarget(Target):
    kind = "nbdkit"

    def version(self) -> str:
        return tool_version(["nbdkit", "--version"])

    def _start(self) -> None:
        assert self.dir is not None
        sock = self.dir / "nbd.sock"
        head = ["nbdkit", "-f", "-v", "--exit-with-parent", "-U", str(sock)]
        if self.fields.get("plugin", "memory") == "memory":
            self.argv = [*head, "memory", f"size={self.disk_size}"]
        else:
            disk = self._provision()
            self.argv = [*head, "-D", "file.zero=1", "file", f"file={disk}"]
        self._spawn_reading(self.argv, sock, "nbdkit")
        self.uri = f"nbd+unix:///?socket={sock}"


class QemuNbdTarget(Target):
    kind = "qemu-nbd"

    def version(self) -> str:
        return tool_version(["qemu-nbd", "--version"])

    def _start(self) -> None:
        assert self.dir is not None
        fmt = self.fields.get("disk_format") or "raw"
        disk = self._provision()
        if fmt == "qcow2":
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(self.disk_size)],
                           check=True, capture_output=True, timeout=60, env=procs.child_env())
        from lab.nbd.backends import _supports_o_direct

        cache = ["--cache=none", "--aio=native"] if _supports_o_direct(disk) else ["--cache=writeback",
                                                                                   "--aio=threads"]
        sock = self.dir / "nbd.sock"
        self.argv = ["qemu-nbd", "-f", fmt, "-k", str(sock), "-t", "-e", "8", *cache, "--discard=unmap",
                     "--detect-zeroes=off", str(disk)]
        self.proc = self._spawn_logged(self.argv, sock, "qemu-nbd")
        self.uri = f"nbd+unix:///?socket={sock}"

    def evidence(self) -> dict[str, int | None]:
        out = super().evidence()
        if "--aio=native" in self.argv:  # io_submit(2) is not a write call: wchar would say "nothing written"
            out["server_wchar"] = None
        return out


class NbdServerTarget(Target):
    """nbd-server -d serves exactly one connection and exits: `connect` starts it each time."""

    kind = "nbd-server"

    def version(self) -> str:
        return tool_version(["nbd-server", "-V"]).replace("This is nbd-server version ", "nbd-server ")

    def _start(self) -> None:
        assert self.dir is not None
        disk = self._provision()
        self.sock = self.dir / "nbd.sock"
        conf = self.dir / "nbd-server.conf"
        conf.write_text("[generic]\n"
                        f"    unixsock = {self.sock}\n"
                        "[audit]\n"
                        f"    exportname = {disk}\n"
                        "    trim = true\n    flush = true\n    fua = true\n")
        self.argv = ["nbd-server", "-C", str(conf), "-d"]
        self.uri = f"nbd+unix:///audit?socket={self.sock}"

    def connect(self) -> Any:
        if self.proc is not None:
            procs.stop(self.proc)
        with contextlib.suppress(FileNotFoundError):
            self.sock.unlink()
        self.proc = self._spawn_logged(self.argv, self.sock, "nbd-server")
        return super().connect()

    def disconnect(self, h: Any) -> None:
        super().disconnect(h)
        if self.proc is not None:  # it exits after its one connection; reap it (or stop it)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            procs.stop(self.proc)
            self.proc = None


class ExternalTarget(Target):
    kind = "external"

    def place_text(self) -> str:
        return "external"

    def _start(self) -> None:
        from lab.domain import targets as external

        target = external.check_target(self.fields.get("target"), self.limits)
        if not self.fields.get("destructive"):
            raise external.ExternalError("destructive", f"the audit overwrites the first {self.disk_size} bytes "
                                         f"of {target.text}: say destructive to allow it")
        self.uri = target.uri
        self.argv = [f"(external: {target.text})"]


_TARGETS: dict[str, type[Target]] = {"nbdkit": NbdkitTarget, "qemu-nbd": QemuNbdTarget,
                                     "nbd-server": NbdServerTarget, "external": ExternalTarget}


def make_target(fields: dict[str, Any], disk_size: int, places: Places | None = None,
                limits: Limits = DEFAULT_LIMITS, api: bool = False) -> Target:
    kind = fields.get("kind") or "nbdkit"
    if kind not in _TARGETS:
        raise KindError(f"unknown server kind {kind!r}; choose one of {', '.join(_TARGETS)}")
    binary = {"nbdkit": "nbdkit", "qemu-nbd": "qemu-nbd", "nbd-server": "nbd-server"}.get(kind)
    if binary and not shutil.which(binary):
        raise KindError(f"{binary} is not installed here")
    return _TARGETS[kind](fields, disk_size, places, limits, api)
