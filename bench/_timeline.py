"""Where a copy's time goes, from the log filter's timestamps (top of the nbdkit stack).

For a client with one request in flight, the copy's wall time splits into
- service: sum over requests of (reply - request) as the log filter saw them: the delay
  filter's sleeps plus nbdkit's own work per request (splitting, copying, the plugin);
- gaps: time between one reply and the next request: the client's own work per request
  (reading the source, building the next request) plus the socket round trip;
- lead: client start to first request and last reply to client exit (process start,
  opening the source, NBD handshake, disconnect): duration minus the request span.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime

_TS = r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)"
_REQ = re.compile(_TS + r" connection=(?P<conn>\d+) (?P<op>Write|Zero|Trim|Flush|Read|Cache) id=(?P<id>\d+)"
                  r"(?: offset=\S+ count=(?P<count>0x[0-9a-f]+|\d+))?.* \.\.\.$")
_RET = re.compile(_TS + r" connection=(?P<conn>\d+) \.\.\.(?P<op>\w+) id=(?P<id>\d+) return=")


def _t(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").timestamp()


@dataclass
class Timeline:
    requests: int
    span_s: float  # first request to last reply
    service_s: float
    gaps_s: float
    first_req: float
    last_ret: float

    def split(self, duration_s: float | None) -> dict[str, float | None]:
        lead = None if duration_s is None else duration_s - self.span_s
        return {"requests": self.requests, "span_s": self.span_s, "service_s": self.service_s,
                "gaps_s": self.gaps_s, "lead_s": lead,
                "gap_ms_per_request": 1000 * self.gaps_s / self.requests if self.requests else None}


def parse(text: str, ops: tuple[str, ...] = ("Write", "Zero", "Trim", "Flush")) -> Timeline | None:
    """The timeline of the copy's requests (all connections that sent writes/zeroes/trims/flushes)."""
    pending: dict[tuple[str, str], tuple[float, str]] = {}
    spans: list[tuple[float, float]] = []
    for line in text.splitlines():
        m = _REQ.match(line)
        if m:
            if m["op"] in ops:
                pending[(m["conn"], m["id"])] = (_t(m["ts"]), m["op"])
            continue
        m = _RET.match(line)
        if m:
            got = pending.pop((m["conn"], m["id"]), None)
            if got is not None:
                spans.append((got[0], _t(m["ts"])))
    if not spans:
        return None
    spans.sort()
    service = sum(b - a for a, b in spans)
    first, last = spans[0][0], max(b for _, b in spans)
    # Gaps only make sense with one request in flight; with overlap, idle time is what's left.
    idle, cursor = 0.0, first
    for a, b in spans:
        if a > cursor:
            idle += a - cursor
        cursor = max(cursor, b)
    return Timeline(len(spans), last - first, service, idle, first, last)


# --- keeping the lab's own log ------------------------------------------------------------
# execute() starts and stops its own server and removes its private dir, log included.
# The bench swaps in a Server that reads its log just before stopping (and clocks its
# debug-stream reader's CPU); the copy itself runs exactly as before. Both land in a
# thread-local, so worker threads do not mix runs up.

_kept = threading.local()


def keep_lab_logs() -> None:
    import lab.measure.execute
    from lab.nbd.servers import Server

    if getattr(lab.measure.execute.Server, "_keeps_log", False):
        return

    class LogKeepingServer(Server):
        _keeps_log = True

        def stop(self) -> None:
            if self.dir is not None and (self.dir / "wire.log").exists():
                _kept.text = (self.dir / "wire.log").read_text(errors="replace")
            super().stop()
            # the reader threads' CPU time: the cost of parsing nbdkit's debug streams
            _kept.reader_cpu_s = self.reader_cpu_s

    lab.measure.execute.Server = LogKeepingServer


def last_lab_log() -> str | None:
    """The wire log of the last server stopped in this thread (then forgotten)."""
    text = getattr(_kept, "text", None)
    _kept.text = None
    return text


def last_reader_cpu() -> float | None:
    """CPU seconds the debug-stream reader thread of the last stopped server used (this thread)."""
    return getattr(_kept, "reader_cpu_s", None)


def completions(text: str, ops: tuple[str, ...] = ("Write", "Zero")) -> dict[int, list[float]]:
    """Per connection, the times at which its requests of these kinds returned, in order."""
    pending: dict[tuple[str, str], str] = {}
    out: dict[int, list[float]] = {}
    for line in text.splitlines():
        m = _REQ.match(line)
        if m:
            if m["op"] in ops:
                pending[(m["conn"], m["id"])] = m["op"]
            continue
        m = _RET.match(line)
        if m and pending.pop((m["conn"], m["id"]), None) is not None:
            out.setdefault(int(m["conn"]), []).append(_t(m["ts"]))
    return out
