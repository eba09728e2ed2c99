"""A private Docker engine for one test: Debian's dockerd on its own socket, data and exec roots.

It touches nothing of the host's Docker (if any) and not the host firewall: `--iptables=false
--ip6tables=false --ip-masq=false --bridge=none`, its own containerd namespace, its own
`daemon.json` (empty). Containers reach the network only through published ports (docker-proxy)
and builds use the host's network. `close()` removes, by id, whatever it made: containers,
networks (bridges), volumes, images, then stops dockerd by its PID, ends any process still
pointing at its directory (a containerd shim), unmounts what is left under it (dockerd always
leaves its bind of the host's netns) and deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's client, not whatever else is on PATH
COMPOSE = "/usr/bin/docker-compose"


def unavailable() -> str | None:
    """Why no private engine can start here, or None."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for tool, pkg in ((DOCKERD, "docker.io"), (DOCKER, "docker.io"), (COMPOSE, "docker-compose"),
                      (shutil.which("debootstrap") or "/usr/sbin/debootstrap", "debootstrap")):
        if not os.path.exists(tool):
            return f"{tool} is missing (Debian {pkg}; scripts/install.sh --dev installs it)"
    return None


class EngineError(RuntimeError):
    pass


class PrivateDockerd:
    def __init__(self) -> None:
        # Short path: the sockets under it must fit in sun_path (108 bytes).
        self.dir = Path(tempfile.mkdtemp(prefix="fzd-", dir="/tmp"))
        self.sock = self.dir / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log = self.dir / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridges: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> PrivateDockerd:
        (self.dir / "daemon.json").write_text("{}")
        # containerd namespaces allow [A-Za-z0-9] runs joined by single . _ or -: not mkdtemp's names
        ns = f"fzl-{secrets.token_hex(6)}"
        argv = [DOCKERD, "--data-root", str(self.dir / "root"), "--exec-root", str(self.dir / "exec"),
                "-H", self.host, "--pidfile", str(self.dir / "dockerd.pid"),
                "--config-file", str(self.dir / "daemon.json"),
                "--containerd-namespace", ns, "--containerd-plugins-namespace", f"{ns}-plugins",
                "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
                "--log-level=warn"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited with {self.proc.returncode}: {self.log_tail()}")
            if self.sock.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.3)
        raise EngineError(f"dockerd did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-n:]
        return ""

    def env(self) -> dict[str, str]:
        """The environment for docker / docker-compose talking to this engine only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.dir / "client")  # no credentials or contexts of the host
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None,
               ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([DOCKER, *args], env=self.env(), capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise EngineError(f"docker {' '.join(args)}: exit {r.returncode}: {r.stderr[-2000:]}")
        return r

    def ids(self, kind: str) -> list[str]:
        args = {"containers": ("ps", "-aq", "--no-trunc"), "networks": ("network", "ls", "-q", "--no-trunc"),
                "volumes": ("volume", "ls", "-q"), "images": ("images", "-aq", "--no-trunc")}[kind]
        r = self.docker(*args, check=False, timeout=60)
        return [line for line in r.stdout.split() if line] if r.returncode == 0 else []

    def note_bridges(self) -> None:
        """Remember the Linux bridges of this engine's networks, to check they are gone at the end."""
        for net in self.ids("networks"):
            r = self.docker("network", "inspect", net, check=False)
            if r.returncode != 0:
                continue
            for n in json.loads(r.stdout):
                if n.get("Driver") == "bridge":
                    name = n.get("Options", {}).get("com.docker.network.bridge.name") or f"br-{n['Id'][:12]}"
                    self.bridges.add(name)

    def close(self) -> list[str]:
        """Remove everything, stop the engine; returns what had to be forced (for the test to report)."""
        forced: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.note_bridges()
                containers = self.ids("containers")
                if containers:
                    self.docker("rm", "-f", "-v", *containers, check=False, timeout=120)
                self.docker("network", "prune", "-f", check=False)
                volumes = self.ids("volumes")
                if volumes:
                    self.docker("volume", "rm", "-f", *volumes, check=False)
                self.docker("system", "prune", "-af", "--volumes", check=False, timeout=120)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                forced.append(f"dockerd {self.proc.pid} killed")
                self.proc.kill()
                self.proc.wait(timeout=10)
        # A shim or containerd left by a killed dockerd: ours by the directory on its command line.
        for pid in _pids_mentioning(str(self.dir)):
            forced.append(f"process {pid} killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for mount in sorted(_mounts_under(self.dir), reverse=True):
            # dockerd leaves its bind of the host's netns (exec-root/netns/default) mounted on exit.
            if mount != str(self.dir / "exec" / "netns" / "default"):
                forced.append(f"unmounted {mount}")
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        for bridge in sorted(self.bridges):
            if Path("/sys/class/net", bridge).exists():
                forced.append(f"bridge {bridge} deleted")
                subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return forced


def _pids_mentioning(needle: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
    return out


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target.startswith(prefix):
                out.append(target)
    return out
