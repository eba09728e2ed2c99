"""Reading what nbdkit did, request by request.

Two sources, parsed line by line as nbdkit writes them:
- the log filter at the top of the stack (`logfile=`): what the client sent, after
  nbdkit's core (which, since 1.32, turns zeroes on a `zeromode=emulate` server into
  writes before any filter sees them);
- nbdkit's datapath debug lines (`-v -D nbdkit.backend.datapath=1` on stderr): every
  call entering every layer, exact and live. The plugin layer's lines are the
  *backend* view: what actually reached storage.
The stats filter at the bottom writes its summary at exit; it cross-checks the counts.

The debug stream is the hot path (one line per layer per request, at up to ~10,000
requests a second): `DatapathScanner` reads it in raw chunks and matches only the layers
the lab counts with one compiled pattern, so the other layers' lines cost a C-level scan,
not a Python loop per line. The log file is read after the copy (or on demand): per
request it gives kind, offset, length, flags and start/end times (`LogParser.rows`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from lab.domain.counts import BackendCounts, WireCounts

# --- debug datapath lines (stderr) -----------------------------------------------------

# nbdkit: memory.3: debug: stats: pwrite count=262144 offset=0 fua=0
# nbdkit: memory.0: debug: memory: zero count=1048576 offset=1048576 may_trim=1 fua=0 fast=0
SYNC_COUNT = 4093  # a read of this odd length at the sync layer marks a point in the stream


class DatapathScanner:
    """Counts the datapath debug lines of chosen layers in raw chunks of nbdkit's stderr.

    `layers` maps a layer name (the plugin's, or a filter's) to the counters it feeds. Reads
    of SYNC_COUNT bytes at `sync_layer` are markers: not counted, their offsets returned.
    """

    def __init__(self, layers: dict[str, BackendCounts], sync_layer: str) -> None:
        self.layers = {k.encode(): v for k, v in layers.items()}
        self.sync_layer = sync_layer.encode()
        names = b"|".join(re.escape(k) for k in self.layers)
        # A literal first (": debug: "), not a line anchor: the regex engine then skips to each
        # candidate with a fast substring search instead of trying every line start (7x faster).
        self._re = re.compile(rb": debug: (" + names + rb"): (pwrite|pread|zero|trim|flush)\b"
                              rb"(?: count=(\d+))?(?: offset=(\d+))?")

    def scan(self, chunk: bytes) -> tuple[set[str], list[int]]:
        """Account every complete line of `chunk`; return the layers whose writes, zeroes,
        trims or flushes moved, and the offsets of sync markers seen."""
        moved: set[bytes] = set()
        marks: list[int] = []
        layers, sync_layer = self.layers, self.sync_layer
        for layer, op, count, offset in self._re.findall(chunk):
            c = layers[layer]
            n = int(count) if count else 0
            if op == b"pwrite":
                c.write_ops += 1
                c.write_bytes += n
            elif op == b"zero":
                c.zero_ops += 1
                c.zero_bytes += n
            elif op == b"pread":
                if n == SYNC_COUNT and layer == sync_layer:
                    marks.append(int(offset or 0))
                else:
                    c.read_ops += 1
                    c.read_bytes += n
                continue
            elif op == b"trim":
                c.trim_ops += 1
                c.trim_bytes += n
            else:
                c.flush_ops += 1
            moved.add(layer)
        return {k.decode() for k in moved}, marks


# --- log filter lines ------------------------------------------------------------------

# 2026-11-25 17:19:02.922720 connection=1 Zero id=2 offset=0x100000 count=0x100000 trim=1 fua=0 fast=0 ...
# 2026-11-25 17:19:02.923847 connection=1 ...Zero id=2 return=0
# 2026-11-25 17:19:02.923847 connection=1 ...Zero id=3 return=-1 (ENOTSUP)
# One pattern for both kinds of line, run over a whole batch of text (the log is read while
# the copy runs: a per-line loop of searches cost more than the rest of the observer).
_LOG_RE = re.compile(
    r"^(\S+ \S+) connection=(\d+) (?:"  # time, connection, then a request ...
    r"(Write|Zero|Trim|Flush|Read|Cache|Extents) id=(\d+)(?: offset=(0x[0-9a-fA-F]+))?(?: count=(0x[0-9a-fA-F]+))?"
    r"(.*?) \.\.\."
    r"|\.\.\.(\w+) id=(\d+) return=(-?\d+)(.*))$",  # ... or its reply
    re.M,
)
_READY_RE = re.compile(r"^\S+ \S+ Ready\b", re.M)


_FLAG_ARGS = ("fast", "trim", "fua", "req_one")
_FLAG_NAMES = {"trim": "may_trim"}
MAX_TRACE_ROWS = 2_000_000  # per server: beyond this the trace stops growing (the counts go on)


@dataclass(slots=True)
class LogRequest:
    conn: int
    id: int
    op: str
    offset: int
    count: int
    fast: bool
    flags: str = ""  # the request's flags that are set: fast, may_trim, fua, req_one
    start_stamp: str = ""  # the log line's local time, turned into epoch seconds only when asked
    end_stamp: str | None = None
    result: str | None = None  # "ok", or the error name once answered

    @property
    def start(self) -> float:
        return log_time(self.start_stamp) if self.start_stamp else 0.0

    @property
    def end(self) -> float | None:
        return None if self.end_stamp is None else log_time(self.end_stamp)


_stamp_cache: dict[str, float] = {}


def log_time(line: str) -> float:
    """'2026-11-25 17:19:02.922720 ...' -> epoch seconds (nbdkit writes local time)."""
    head = line[:19]
    base = _stamp_cache.get(head)
    if base is None:
        try:
            base = time.mktime(time.strptime(head, "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            return time.time()
        if len(_stamp_cache) > 4096:
            _stamp_cache.clear()
        _stamp_cache[head] = base
    frac = line[19:26]
    return base + (float(frac) if frac.startswith(".") and frac[1:].isdigit() else 0.0)


class LogParser:
    """Incremental parser of the log filter's file into wire counts and a per-request trace."""

    def __init__(self) -> None:
        self.counts = WireCounts(source="nbdkit-log")
        self._pending: dict[tuple[int, int], LogRequest] = {}
        self.ready = False
        self.rows: list[LogRequest] = []  # every request but reads, in log order (lab.nbd.diskmap)

    def feed(self, text: str) -> None:
        """Account every complete line of `text` (one line or a batch of them)."""
        if not self.ready and _READY_RE.search(text):
            self.ready = True
        rows, pending, c = self.rows, self._pending, self.counts
        # findall's tuples, not match objects: a named-group lookup per field cost a third of the parse
        for stamp, conn, op, rid, offset, count, rest, rop, ret_id, ret, ret_rest in _LOG_RE.findall(text):
            if not op:
                self._reply(stamp, int(conn), rop, int(ret_id), int(ret), ret_rest)
                continue
            flags = " ".join(_FLAG_NAMES.get(k, k) for k in _FLAG_ARGS if f" {k}=1" in rest) if "=1" in rest else ""
            n = int(count, 16) if count else 0
            req = LogRequest(int(conn), int(rid), op, int(offset, 16) if offset else 0, n, " fast=1" in rest,
                             flags, stamp)
            pending[(req.conn, req.id)] = req
            if op != "Read":
                if len(rows) < MAX_TRACE_ROWS:
                    rows.append(req)
                self._count(c, req)

    @staticmethod
    def _count(c: WireCounts, req: LogRequest) -> None:
        if req.op == "Write":
            c.write += 1
            c.write_bytes += req.count
        elif req.op == "Zero":
            c.zero += 1
            c.zero_bytes += req.count
            c.fast_zero += req.fast
        elif req.op == "Trim":
            c.trim += 1
        elif req.op == "Flush":
            c.flush += 1

    def _reply(self, stamp: str, conn: int, op: str, rid: int, ret: int, rest: str) -> None:
        req = self._pending.pop((conn, rid), None)
        if req is not None:
            req.end_stamp = stamp
            err = re.search(r"\((E[A-Z0-9]+)\)", rest) if ret else None
            req.result = "ok" if ret == 0 else (err.group(1) if err else f"error {ret}")
        if ret == 0:
            return
        self.counts.failed += 1
        if req is not None and req.op == "Zero" and req.fast:
            self.counts.fast_zero_failed += 1
        if len(self.counts.errors) < 10:
            self.counts.errors.append(f"{op} id={rid} return={ret}{rest}")


# --- stats filter summary --------------------------------------------------------------

_STATS_RE = re.compile(r"^(?P<op>write|zero|trim|flush|read|cache|extents): (?P<ops>\d+) ops\b", re.M)


def parse_stats(text: str) -> dict[str, int]:
    """Op counts by type from the stats filter's summary (its byte figures are rounded)."""
    return {m["op"]: int(m["ops"]) for m in _STATS_RE.finditer(text)}
