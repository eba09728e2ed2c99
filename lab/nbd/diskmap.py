"""The disk map: what each request did to the destination, as a trace and as cells by offset.

The trace is read from nbdkit's log filter (the top of the stack, one file per server;
see lab.nbd.trace.LogParser): one row per request with its offset, length, flags, result and
start/end time. Each row gets a *kind*, from the request and the source image's layout
(which ranges of the source hold data):

    data            Write inside source data
    zero-write      Write inside source holes: a zero carried out as writes (a client
                    without write-zeroes, or server B, where nbdkit's core turns every
                    zero into a Write above the log filter)
    prezero-write   Write spanning data and holes: a blind pre-zero pass written out
    zero            Zero inside holes: zeroed as metadata
    prezero         Zero over data: a pre-zero pass done as metadata
    refused         a Zero that failed (a refused fast zero): no change on disk
    trim, status    Trim; BLOCK_STATUS (Extents), which changes nothing
    flush, cache    no place on the disk

A refused fast zero that nbdkit's core answers before the log filter (server B) is not in
the log; the lab's own clients report it, and it is added with `source="client"`.

The disk is drawn as at most MAX_CELLS cells of a power-of-two size, each kept as SUB
sub-cells: a request paints the sub-cells it touches with its kind's letter, in the order the
requests started, so the map of a finished run is a pure function of its trace (`Cells`,
`paint()`; the browser does the same, static/js/diskmap.js). A cell shows the kind that covers
most of it (`cells`) and, when another kind covers part of it, that one too (`under`): a cell
that holds a 64 KiB data extent and a 64 KiB hole shows data and zero, whatever painted last.
A refused fast zero changes nothing on disk; the cells it asked for keep a mark (`marks`, "R").
All three travel run-length encoded (`rle()`); `under` and `marks` only when they say
something. A live map also shows the BLOCK_STATUS questions asked since the previous progress
event: those cells read "S" in that one event (a question changes nothing on disk, so the next
event shows the cells as they are again); the map kept with the run never has them.

Caveat: with holes smaller than a client's write (say alternate:4k), a data write that
spans holes is shown as a pre-zero pass; the talk's layouts (1 MiB extents) are exact.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.domain.layout import parse_pattern

log = logging.getLogger("lab.nbd.diskmap")

MAX_CELLS = 512
MAX_ROWS = 500_000  # a longer trace is cut (and says so): a 1 GiB run of 4k writes fits
UNTOUCHED = "."
CODES = {
    "data": "D", "zero-write": "W", "prezero-write": "P", "zero": "Z", "prezero": "p",
    "refused": "R", "trim": "T", "status": "S",
}
PAINTS = frozenset("DWPZpT")  # the kinds that change what a cell holds
FIELDS = ("seq", "t0", "t1", "op", "kind", "offset", "count", "flags", "result", "conn", "source")


@dataclass(slots=True)
class TraceRow:
    seq: int
    t0: float  # seconds since the copy started
    t1: float | None
    op: str  # as the log names it: Write, Zero, Trim, Extents, Flush, Cache
    kind: str
    offset: int
    count: int
    flags: str  # space-separated: fast, may_trim, fua, req_one
    result: str  # "ok" or the error name (ENOTSUP, EIO, ...)
    conn: int
    source: str = "log"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FIELDS}


def cell_size_for(size: int) -> int:
    """The smallest power of two >= 4 KiB that draws `size` bytes in at most MAX_CELLS cells."""
    cell = 4096
    while cell * MAX_CELLS < size:
        cell *= 2
    return cell


class Layout:
    """Which ranges of the source hold data (from the image recipe)."""

    def __init__(self, data_extents: list[tuple[int, int]]) -> None:
        self.starts = [o for o, _ in data_extents]
        self.ends = [o + n for o, n in data_extents]

    @classmethod
    def of(cls, pattern: str, size: int) -> Layout:
        return cls(parse_pattern(pattern, size))

    def data_in(self, offset: int, count: int) -> int:
        """Bytes of source data inside [offset, offset+count)."""
        end = offset + count
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        total = 0
        while i < len(self.starts) and self.starts[i] < end:
            lo, hi = max(offset, self.starts[i]), min(end, self.ends[i])
            if hi > lo:
                total += hi - lo
            i += 1
        return total


def classify(op: str, offset: int, count: int, result: str, layout: Layout) -> str:
    if op == "Extents":
        return "status"
    if op == "Trim":
        return "trim" if result == "ok" else "refused"
    if op in ("Flush", "Cache", "Read"):
        return op.lower()
    data = layout.data_in(offset, count) if count else 0
    if op == "Zero":
        if result != "ok":
            return "refused"
        return "prezero" if data else "zero"
    if op == "Write":
        if data == count:
            return "data"
        return "prezero-write" if data else "zero-write"
    return op.lower()


SUB = 64  # sub-cells per cell
# Which of two kinds covering a cell equally is its main one: data first, then the zeroes.
_ORDER = {ord(c): i for i, c in enumerate("DWPZpT.")}


class Cells:
    """The destination as cells of `cell` bytes, each kept as SUB sub-cells, and the cells a
    refused fast zero asked for. `layers()` gives each cell's main kind, its second kind (the
    main one again when the cell holds one kind) and the refusal marks."""

    def __init__(self, size: int, cell: int | None = None) -> None:
        self.cell = cell or cell_size_for(size)
        self.n = -(-size // self.cell)
        self.sub = max(1, self.cell // SUB)
        self.fine = bytearray(UNTOUCHED.encode() * (self.n * SUB))
        self.main = bytearray(UNTOUCHED.encode() * self.n)
        self.second = bytearray(self.main)
        self.marks = bytearray(self.main)
        self._dirty: set[int] = set()

    def paint(self, kind: str, offset: int, count: int) -> None:
        code = CODES.get(kind)
        if code is None or count <= 0:
            return
        if code == "R":
            first, last = offset // self.cell, min(self.n, -(-(offset + count) // self.cell))
            self.marks[first:last] = b"R" * max(0, last - first)
        elif code in PAINTS:
            first, last = offset // self.sub, min(len(self.fine), -(-(offset + count) // self.sub))
            if last > first:
                self.fine[first:last] = code.encode() * (last - first)
                self._dirty.update(range(first // SUB, (last - 1) // SUB + 1))

    def layers(self) -> tuple[str, str, str]:
        """(main kinds, second kinds, marks), one letter per cell."""
        for i in self._dirty:
            seg = self.fine[i * SUB:(i + 1) * SUB]
            if seg.count(seg[0]) == SUB:
                self.main[i] = self.second[i] = seg[0]
                continue
            kinds = sorted(set(seg), key=lambda c: (-seg.count(c), _ORDER.get(c, 99)))
            self.main[i], self.second[i] = kinds[0], kinds[1]
        self._dirty.clear()
        return self.main.decode(), self.second.decode(), self.marks.decode()


def paint_cells(rows: Iterable[TraceRow | dict[str, Any]], size: int, cell: int | None = None) -> Cells:
    """A trace painted: each request in start order over the sub-cells it touches; refusals marked."""
    cells = Cells(size, cell)
    for r in rows:
        d = r if isinstance(r, dict) else r.to_dict()
        cells.paint(d["kind"], d["offset"], d["count"])
    return cells


def paint(rows: Iterable[TraceRow | dict[str, Any]], size: int, cell: int | None = None) -> str:
    """The final map of a trace: each cell's main kind (see Cells)."""
    return paint_cells(rows, size, cell).layers()[0]


def encoded(cells: Cells) -> dict[str, str]:
    """The map as it travels: {"cells"}, plus {"under"} when a cell holds two kinds and {"marks"}
    when a fast zero was refused, run-length encoded."""
    main, second, marks = cells.layers()
    out = {"cells": rle(main)}
    if second != main:
        out["under"] = rle(second)
    if "R" in marks:
        out["marks"] = rle(marks)
    return out


def rle(cells: str) -> str:
    """'....DDDD' -> '4.4D' (a count of 1 is left out)."""
    return "".join(m[1] if (n := m.end() - m.start()) == 1 else f"{n}{m[1]}" for m in _RUNS.finditer(cells))


_RUNS = re.compile(r"(.)\1*", re.DOTALL)


def unrle(text: str) -> str:
    out: list[str] = []
    n = ""
    for ch in text:
        if ch.isdigit():
            n += ch
        else:
            out.append(ch * int(n or 1))
            n = ""
    return "".join(out)


class Watch:
    """Follows one run's requests on a server: live cells for progress events, then the trace.

    `rows` is the server's LogParser list (appended to as nbdkit logs); the run's part
    starts at `first`. Times are made relative to `t0_wall` (when the copy started).
    """

    def __init__(self, server: Any, pattern: str, size: int, t0_wall: float) -> None:
        self.server = server
        self.layout = Layout.of(pattern, size)
        self.size = size
        self.cell = cell_size_for(size)
        self.cells = Cells(size, self.cell)
        self.t0_wall = t0_wall
        self.first = server.trace_len()
        self._painted = self.first
        self.client_refused: list[TraceRow] = []
        self._seen_errors: set[str] = set()

    def _rows(self, upto: int | None = None) -> list[Any]:
        return self.server.trace_rows(self._painted, upto)

    def update(self) -> dict[str, str]:
        """Paint what was logged since the last call; the map as it travels (`encoded()`), with
        the cells asked about by BLOCK_STATUS since the last call shown as "S" (this once)."""
        asked: list[tuple[int, int]] = []
        for raw in self._rows():
            self._painted += 1
            kind = classify(raw.op, raw.offset, raw.count, raw.result or "ok", self.layout)
            if kind == "status":
                asked.append((raw.offset, raw.count))
            else:
                self.cells.paint(kind, raw.offset, raw.count)
        out = encoded(self.cells)
        if not asked:
            return out
        shown = bytearray(unrle(out["cells"]).encode())
        for offset, count in asked:
            first = offset // self.cell
            last = min(len(shown), max(first + 1, -(-(offset + count) // self.cell)))
            shown[first:last] = b"S" * max(0, last - first)
        return {**out, "cells": rle(shown.decode())}

    def client_errors(self, errors: Iterable[str], now_wall: float) -> None:
        """Refused fast zeroes the client saw but the log could not (nbdkit's core answered them)."""
        for text in errors:
            if text in self._seen_errors or not text.startswith("fast zero "):
                continue
            self._seen_errors.add(text)
            args = dict(p.split("=", 1) for p in text.split(":")[0].split() if "=" in p)
            try:
                offset, count = int(args["offset"]), int(args["count"])
            except (KeyError, ValueError):
                continue
            t = round(now_wall - self.t0_wall, 6)
            self.client_refused.append(TraceRow(0, t, t, "Zero", "refused", offset, count, "fast",
                                                text.rsplit(": ", 1)[-1], 0, "client"))
            self.cells.paint("refused", offset, count)  # a mark that stays on the live map

    def trace(self) -> list[TraceRow]:
        rows: list[TraceRow] = []
        for raw in self.server.trace_rows(self.first, None):
            if raw.op == "Read":
                continue
            result = raw.result or "pending"
            rows.append(TraceRow(
                0, round(raw.start - self.t0_wall, 6), None if raw.end is None else round(raw.end - self.t0_wall, 6),
                raw.op, classify(raw.op, raw.offset, raw.count, result, self.layout), raw.offset, raw.count,
                raw.flags, result, raw.conn))
            if len(rows) >= MAX_ROWS:
                break
        logged_refusals = any(r.kind == "refused" and "fast" in r.flags.split() for r in rows)
        if not logged_refusals:
            rows.extend(self.client_refused)
        rows.sort(key=lambda r: (r.t0, r.source != "log"))
        for i, r in enumerate(rows):
            r.seq = i
        return rows

    def summary(self, rows: list[TraceRow]) -> dict[str, Any]:
        return {"cell_size": self.cell, "size": self.size, **encoded(paint_cells(rows, self.size, self.cell)),
                "requests": len(rows), "truncated": len(rows) >= MAX_ROWS}


# --- kept with the run: one NDJSON file per run under the data dir ---------------------------

def trace_path(data_dir: Path, run_id: str) -> Path:
    return Path(data_dir) / "traces" / f"{run_id}.ndjson"


def save(data_dir: Path, run_id: str, rows: list[TraceRow]) -> Path:
    path = trace_path(data_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path


def keep_trace(data_dir: Path, run: Any) -> None:
    """A finished run's per-request trace, kept beside the database (GET /api/runs/{id}/trace),
    then dropped from the run. A failure to write is logged: the result stands without it."""
    if run.trace is None:
        return
    try:
        save(data_dir, run.id, run.trace)
    except OSError as e:
        log.warning("run %s: trace not saved: %s", run.id, e)
    run.trace = None


def load(data_dir: Path, run_id: str) -> Iterator[dict[str, Any]]:
    with open(trace_path(data_dir, run_id), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def csv_rows(rows: Iterable[dict[str, Any]]) -> Iterator[list[Any]]:
    """A trace as CSV rows, the header first (lab.service.export.csv_lines writes them)."""
    yield list(FIELDS)
    for r in rows:
        yield [r.get(k) for k in FIELDS]
