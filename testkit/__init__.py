"""One harness for a live `lab serve`, and the process checks around it, for tests, bench
and scripts (tests reach it through the `live_service` fixture in tests/conftest.py).

- LiveService: `lab serve` on a free loopback port, a child of ours tied to our life (PDEATHSIG),
  with private data and runtime dirs and LAB_* overrides; stop() then start() is a restart on
  the same port and data. JSON requests through urllib (the bench needs nothing more), an
  httpx client for tests.
- Processes through psutil. "Ours" is always decided from a process we started (its
  descendants, recorded while it was alive) or from our private runtime dir appearing in a
  command line, never from a machine-wide list of names: other runs share this machine.

Not for the service itself: psutil and httpx are development dependencies.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from lab.host import procs

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]  # the checkout: testkit/ is beside lab/
HELPERS = frozenset({"nbdkit", "qemu-img", "qemu-nbd", "nbdcopy", "nbd-server"})


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """A process seen at some moment; its start time tells a reused pid apart."""

    pid: int
    start: float
    name: str

    def alive(self) -> bool:
        try:
            p = psutil.Process(self.pid)
            return p.create_time() == self.start and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def _seen(p: psutil.Process) -> Proc | None:
    """A live (non-zombie) process as a Proc; None when it is gone or a zombie."""
    try:
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            return Proc(p.pid, p.create_time(), p.name())
    except psutil.Error:
        return None


def alive(pid: int) -> bool:
    """Whether pid is a running (non-zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[Proc]:
    """Live (non-zombie) descendants of pid, with their start times and names."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in map(_seen, kids) if p is not None]


def children(pid: int) -> list[Proc]:
    """Live direct children of pid."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return []
    return [p for p in map(_seen, kids) if p is not None]


def own_helpers() -> list[str]:
    """Names of this process's live descendants that are lab helpers (nbdkit, qemu-img, ...)."""
    return [p.name for p in descendants(os.getpid()) if p.name in HELPERS]


def mentioning(path: Path | str) -> list[Proc]:
    """Live processes whose command line names `path` (a private dir of ours: only ours)."""
    needle = str(path)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info.get("cmdline") or []
        if any(needle in arg for arg in cmdline):
            seen = _seen(p)
            if seen is not None:
                found.append(seen)
    return found


def cmdline(pid: int) -> list[str]:
    return psutil.Process(pid).cmdline()


def environ(pid: int) -> dict[str, str]:
    return psutil.Process(pid).environ()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def rss_kib(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss // 1024


def peak_rss_kib(pid: int) -> int:
    """VmHWM, the peak resident set (psutil has no peak RSS on Linux: read from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    return psutil.Process(pid).num_threads()


def wait_for(pred: Any, timeout: float = 60.0, step: float = 0.05, what: str = "") -> Any:
    """Poll pred() until it returns something truthy (returned) or `timeout` s pass (AssertionError)."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout:g} s: {what or getattr(pred, '__name__', pred)}")
        time.sleep(step)


# -- the service -------------------------------------------------------------------------------


class ServiceError(RuntimeError):
    pass


class LiveService:
    """`lab serve` in a subprocess of ours (see the module doc).

    `root` holds its data (root/data), runtime (root/run) and log unless `data_dir` or
    `runtime_dir` say otherwise; `env` adds LAB_* settings; `token` sets LAB_TOKEN (unset:
    none, whatever the environment says); `log_level` "info" logs each request; `user` (a name,
    when we are root) runs it as that user, as the container does (its dirs must be that user's).
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, token: str | None = None,
                 data_dir: Path | None = None, runtime_dir: Path | None = None, log_level: str = "info",
                 user: str | None = None) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir or self.root / "data"
        self.runtime_dir = runtime_dir or self.root / "run"
        self.token = token
        self.env = dict(env or {})
        self.log_level = log_level
        self.user = user
        self.log = self.root / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.base

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the service was never started"
        return self.proc.pid

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LiveService:
        """Start it and wait until /api/health answers; ServiceError (with the log's tail) if not."""
        env = {**os.environ, "LAB_DATA_DIR": str(self.data_dir), "LAB_RUNTIME_DIR": str(self.runtime_dir),
               "LAB_LOG_LEVEL": self.log_level, "LAB_TOKEN": self.token or "", **self.env}
        argv: list[str | Path] = [Path(sys.executable).with_name("lab"), "serve", "--host", "127.0.0.1",
                                  "--port", str(self.port)]
        if self.user and os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam(self.user)
            # the uid change clears the parent-death signal: setpriv sets it again
            argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                    "--pdeathsig", "keep", *argv]
            env["HOME"] = str(self.data_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = procs.spawn(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"lab serve exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError, ServiceError):
                if self.get("/api/health")["status"] in ("ok", "starting"):  # starting: first calibration
                    return self
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"lab serve did not answer on {self.base} in {timeout:g} s: {self.log_text()[-2000:]}")

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM (the service interrupts its runs and stops its servers), SIGKILL after `grace` s.
        Returns the exit status (None when it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        procs.stop(self.proc)  # reaps, and kills what a hung one left in its group
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a power cut would: nothing of the service's own shutdown runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            procs.stop(self.proc)

    def __enter__(self) -> LiveService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- requests ----------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http(self, **kw: Any) -> httpx.Client:
        """An httpx client on the service (the caller closes it)."""
        import httpx

        return httpx.Client(base_url=self.base, timeout=kw.pop("timeout", 30), headers=self.headers(), **kw)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """A JSON request (urllib); the decoded answer, ServiceError on an HTTP error status."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers(), **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise ServiceError(f"{method} {path}: HTTP {e.code}: {e.read()[:400]!r}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # -- its process -------------------------------------------------------------------------
    def descendants(self) -> list[Proc]:
        return descendants(self.pid)

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def hwm_kib(self) -> int:
        return peak_rss_kib(self.pid)
