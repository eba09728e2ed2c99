"""A cluster of the test's own: a password-protected redis-server and `lab worker` processes, each
a simulated machine (its own data and runtime dirs, and, as root with iproute2, its own
network namespace joined to the broker by a veth pair). For tests and bench/cluster.py.

Everything is made with names carrying this harness's random tag and removed on every path by
those names and the pids we started: the redis-server and workers are our children tied to our
life (PR_SET_PDEATHSIG, lab.host.procs.spawn); namespaces and veth pairs are deleted by name.
The veth addresses are link-local (169.254.T.x/30): they route nowhere but between the pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from lab.host import procs
from testkit import Proc, descendants, free_port, wait_for

LAB = Path(sys.executable).with_name("lab")


def netns_possible() -> str | None:
    """None when this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("nsenter"):
        return "iproute2 / util-linux (ip, nsenter) not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _free_subnet() -> int:
    """A 169.254.N.0/24 no interface of ours uses (clusters of tests running side by side must not
    share addresses); random among the free ones."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=20).stdout
    free = [n for n in range(1, 255) if f" 169.254.{n}." not in shown]
    return free[secrets.randbelow(len(free))] if free else 1 + secrets.randbelow(254)


class Netns:
    """A network namespace with one veth pair to ours: host side HOST_IP, namespace side NS_IP."""

    def __init__(self, tag: str, index: int, subnet: int) -> None:
        self.name = f"fzl-{tag}-{index}"
        self.host_if, self.ns_if = f"fz{tag}{index}h", f"fz{tag}{index}n"
        base = 4 * index
        self.host_ip, self.ns_ip = f"169.254.{subnet}.{base + 1}", f"169.254.{subnet}.{base + 2}"
        self.made = False

    def create(self) -> Netns:
        self.made = True
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        return self

    def enter(self) -> list[str]:
        """The argv prefix that runs a command in this namespace (the network only: same files)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def remove(self) -> None:
        if not self.made:
            return
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("link", "del", self.host_if)  # takes its peer with it
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("netns", "del", self.name)
        self.made = False


class Broker:
    """redis-server on a private Unix socket (and TCP on `bind` addresses when given), with a password."""

    def __init__(self, root: Path, bind: tuple[str, ...] = ()) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.password = secrets.token_hex(16)
        self.socket = root / "redis.sock"
        self.bind = bind
        self.port = free_port() if bind else 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The URL for a process on this machine (the Unix socket)."""
        return f"redis+socket://:{self.password}@{self.socket}"

    def tcp_url(self, host: str) -> str:
        return f"redis://:{self.password}@{host}:{self.port}/0"

    def start(self) -> Broker:
        from lab.service.broker import redis_config

        conf = self.root / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(redis_config(self.password, self.port, self.bind, str(self.socket), str(self.root),
                                     str(self.root / "redis.log")))
        self.proc = procs.spawn(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pong, 20, what=f"redis-server on {self.socket}")
        return self

    def client(self) -> Any:
        from lab.service import broker

        return broker.redis_client(self.url)

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log()[-1000:]}")
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def log(self) -> str:
        p = self.root / "redis.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None


class Worker:
    """`lab worker` as a simulated machine: its own dirs below `root`, maybe its own netns."""

    def __init__(self, root: Path, name: str, url: str, netns: Netns | None = None, slots: int = 2,
                 env: dict[str, str] | None = None, drain_s: float = 5.0) -> None:
        self.root, self.name, self.url, self.netns, self.slots = root, name, url, netns, slots
        self.env = dict(env or {})
        self.drain_s = drain_s
        self.log = root / f"worker-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.seen: set[Proc] = set()  # every descendant seen while it ran: what must be gone after a kill

    @property
    def runtime_dir(self) -> Path:
        return self.root / "run"

    def start(self) -> Worker:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LAB_DATA_DIR": str(self.root / "data"), "LAB_RUNTIME_DIR": str(self.runtime_dir),
               "LAB_BROKER_URL": self.url, "LAB_WORKER_NAME": self.name, "LAB_AUTO_CALIBRATE": "0",
               "LAB_LOG_LEVEL": "info", **self.env}
        argv = [*(self.netns.enter() if self.netns else []), str(LAB), "worker", "--slots", str(self.slots),
                "--drain-s", str(self.drain_s)]
        with open(self.log, "ab") as out:
            self.proc = procs.spawn(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def heartbeat(self, broker: Broker) -> dict[str, Any] | None:
        from lab.service.broker import worker_key

        raw = broker.client().get(worker_key(self.name))
        return json.loads(raw) if raw else None

    def wait_ready(self, broker: Broker, timeout: float = 60) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"lab worker {self.name} exited {self.proc.returncode}: {self.log_text()[-2000:]}")
            beat = self.heartbeat(broker)
            return beat if beat and beat.get("state") == "ready" else None

        return wait_for(ready, timeout, 0.1, what=f"worker {self.name} ready")

    def watch(self) -> list[Proc]:
        """Record (and return) its live descendants now."""
        now = descendants(self.pid) if self.proc is not None else []
        self.seen.update(now)
        return now

    def left(self) -> list[Proc]:
        """Processes it ever had that are still alive."""
        return [p for p in self.seen if p.alive()]

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.watch()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        procs.stop(self.proc)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    """A broker and `n` machines, each in its own network namespace when this process can make them
    (`isolated` says whether it did); `started` of them (default all) run a worker from the start, the
    others wait for add_worker(i). Use as a context manager: everything goes on exit."""

    def __init__(self, root: Path, n: int = 2, slots: int = 2, isolate: bool = True,
                 env: dict[str, str] | None = None, started: int | None = None) -> None:
        self.root = root
        self.tag = secrets.token_hex(2)
        self.isolated = isolate and netns_possible() is None
        subnet = _free_subnet() if self.isolated else 0
        self.netns = [Netns(self.tag, i, subnet) for i in range(n)] if self.isolated else []
        self.broker = Broker(root / "broker", tuple(ns.host_ip for ns in self.netns))
        self.workers: list[Worker] = []
        self.n, self.slots, self.env = n, slots, dict(env or {})
        self.started = n if started is None else started
        self.image_dir = os.environ.get("LAB_IMAGE_DIR")

    def __enter__(self) -> Cluster:
        try:
            for ns in self.netns:
                ns.create()
            self.broker.start()
            for i in range(self.started):
                self.add_worker(i)
            for w in self.workers:
                w.wait_ready(self.broker)
        except BaseException:
            self.close()
            raise
        return self

    def add_worker(self, i: int, name: str | None = None, env: dict[str, str] | None = None,
                   drain_s: float = 5.0) -> Worker:
        """Start machine i's worker (`env`: its own settings beside the cluster's)."""
        ns = self.netns[i] if self.isolated else None
        url = self.broker.tcp_url(ns.host_ip) if ns else self.broker.url
        env = {**self.env, **({"LAB_IMAGE_DIR": self.image_dir} if self.image_dir else {}), **(env or {})}
        w = Worker(self.root / f"w{i}", name or f"w{i}-{self.tag}", url, ns, self.slots, env, drain_s)
        self.workers.append(w)
        return w.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop(grace=15)
        self.broker.stop()
        for ns in self.netns:
            ns.remove()

    @property
    def url(self) -> str:
        return self.broker.url
