"""A real `lab serve` for the web benchmarks (testkit.LiveService), plus a minimal asyncio SSE client.

The service runs on a free loopback port with the bench's private LAB_DATA_DIR and
LAB_RUNTIME_DIR (set by _common.setup_env), so it shares nothing with a running lab.
The client side is the standard library (urllib, asyncio streams), so its own overhead
per connection stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit import LiveService, cpu_s, free_port

__all__ = ["Received", "Service", "SseResult", "cpu_s", "free_port", "subscribe"]

class Service(LiveService):
    """The bench's `lab serve`: the bench's private dirs (from setup_env's environment), warnings only."""

    def __init__(self, **env: str) -> None:
        data = Path(os.environ["LAB_DATA_DIR"])
        super().__init__(data.parent, env=env, data_dir=data, runtime_dir=Path(os.environ["LAB_RUNTIME_DIR"]),
                         log_level="warning")


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
