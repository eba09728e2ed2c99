"""Helpers for the reliability tests: a real service subprocess, its process tree, our processes.

"Ours" is always decided from a process we started (its descendants, recorded while it was
alive) or from our private runtime dir appearing in a command line, never from a
machine-wide list of names: other test runs share this machine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
HELPERS = {"nbdkit", "qemu-img", "qemu-nbd", "nbdcopy"}


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # clock ticks after boot: tells a reused pid apart
    name: str

    def alive(self) -> bool:
        info = _stat(self.pid)
        return info is not None and info[2] == self.start and info[0] != "Z"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a pid, or None when it is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[0], int(rest[1]), int(rest[19])


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def descendants(pid: int) -> list[Proc]:
    """Live (non-zombie) descendants of pid, with their start times and names."""
    table: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table[int(entry)] = info
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        for child, (state, ppid, start) in table.items():
            if ppid == p:
                frontier.append(child)
                if state != "Z":
                    out.append(Proc(child, start, _name(child)))
    return out


def mentioning(path: Path) -> list[Proc]:
    """Live processes whose command line names `path` (a private dir of this test: only ours)."""
    needle = str(path).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            info = _stat(int(entry))
            if info is not None and info[0] != "Z":
                found.append(Proc(int(entry), info[2], _name(int(entry))))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    proc: subprocess.Popen
    base: str
    log: Path

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=kw.pop("timeout", 30), **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def service(tmp: Path, **env: str) -> Iterator[Service]:
    """`lab serve` on a free loopback port with LAB_* overrides; killed at the end if still up."""
    port = free_port()
    full = {**os.environ, "LAB_DATA_DIR": str(tmp / "data"), "LAB_RUNTIME_DIR": str(tmp / "run"), "LAB_TOKEN": "",
            **env}
    lab = str(Path(sys.executable).with_name("lab"))
    log = tmp / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([lab, "serve", "--host", "127.0.0.1", "--port", str(port)], env=full, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    svc = Service(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        with svc.http() as http:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"lab serve exited ({proc.returncode}): {svc.log_text()[-2000:]}")
                try:
                    if http.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("lab serve did not come up")
                time.sleep(0.1)
        yield svc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
