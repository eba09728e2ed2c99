"""A real `lab serve` subprocess for the web benchmarks, plus a minimal asyncio SSE client.

The service runs on a free loopback port with the bench's private LAB_DATA_DIR and
LAB_RUNTIME_DIR (set by _common.setup_env), so it shares nothing with a running lab.
Only the standard library is used on the client side (urllib, asyncio streams), so the
bench needs no test extras and its own overhead per connection stays small.
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import procs

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_rss_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


class Service:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LAB_LOG_LEVEL": "warning", **env}
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Service:
        lab = Path(sys.executable).with_name("lab")
        argv = [str(lab), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = procs.spawn(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"lab serve exited with {self.proc.returncode}: {err[-800:]}")
            try:
                if self.get("/api/health")["status"] == "ok":
                    return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("lab serve did not answer /api/health in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: the lifespan stops runs and servers
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        procs.stop(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST ------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:400]!r}") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def hwm_kib(self) -> int:
        return proc_rss_kib(self.pid, "VmHWM")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)


# -- SSE --------------------------------------------------------------------------------------


@dataclass
class Received:
    t: float  # time.time() when the chunk carrying the event was read
    id: int
    type: str
    raw: str  # parsed only when asked, after the run: the client stays light while it listens
    _data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.raw) if self.raw else {}
        return self._data


@dataclass
class SseResult:
    events: list[Received] = field(default_factory=list)
    connected_at: float | None = None
    error: str | None = None


async def subscribe(port: int, path: str, result: SseResult, until_type: str | None = "done",
                    connected: asyncio.Event | None = None) -> SseResult:
    """GET an event stream and record every event with its arrival time until `until_type` (or EOF)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        result.error = f"connect: {e}"
        return result
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                     f"Connection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            result.error = status.decode(errors="replace")
            return result
        chunked = b"transfer-encoding: chunked" in head.lower()
        result.connected_at = time.time()
        buf = b""
        while True:
            if chunked:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                chunk = await reader.readexactly(size + 2)
                data = chunk[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            now = time.time()
            buf += data
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                ev = _parse_block(block.decode(errors="replace"), now)
                if ev is None:
                    if connected is not None and not connected.is_set():
                        connected.set()  # the stream's opening comment: subscribed
                    continue
                result.events.append(ev)
                if until_type is not None and ev.type == until_type:
                    return result
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return result


def _parse_block(block: str, now: float) -> Received | None:
    ev_id, ev_type, data = None, "message", []
    for line in block.split("\n"):
        line = line.rstrip("\r")
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            ev_id = int(value)
        elif name == "event":
            ev_type = value
        elif name == "data":
            data.append(value)
    if ev_id is None:
        return None
    return Received(now, ev_id, ev_type, "\n".join(data))
