"""An audit's verdicts, in order of importance: is the zero safe, then is it (and the fast zero) cheap.

Safety first: one cell that read back wrong (a stale byte in a zeroed range, or a changed
byte beside it) makes the audit `unsafe`, whatever else it found; the first bad offset (into
the request) and the byte count are named.

Then the speed verdict, with the cheap/dear split kept visible (2019's point: "write-zeroes
supported" says nothing about what a zero costs):

    fast                   fast zero advertised, accepted, and the storage did no data writing
    advertised-but-slow    fast zero accepted but the zeroes were written out: what the flag exists to prevent
    refused-but-cheap      fast zero refused although a plain zero is cheap here: a lost opportunity
    refused-quickly        fast zero refused, and a plain zero is indeed dear: the flag doing its job
    not-advertised-cheap   no fast zero, but a plain zero is cheap (a client cannot know it)
    not-advertised-dear    no fast zero, and a plain zero costs what writing costs
    no-zero                no WRITE_ZEROES at all

"Cheap" is judged from what the storage did before the clock: nbdkit's own debug (which
mechanism zeroed: punch hole, zero range, BLKZEROOUT, or "falling back to writing"), the
allocation (a punched range gives its blocks back), and the bytes the kernel counted as
written to the device under a loop-backed filesystem; time (the zero against the overwrite
of the same range, flushes included) decides only where the storage shows nothing.
"""

from __future__ import annotations

import re
from typing import Any

from lab.domain.units import format_size

CHEAP_RATIO = 0.5
WRITTEN = 0.5  # the storage wrote at least half the range: the zero was written out
NOTHING = 1 / 16  # under this much of the range reached the device: metadata only
MECHANISMS = (
    (re.compile(r"can_punch_hole && may_trim: zero succeeded"), "punch hole", True),
    (re.compile(r"can_zero-range: zero succeeded"), "zero range", True),
    (re.compile(r"can_punch_hole && h->can_fallocate: zero succeeded"), "punch hole + allocate", True),
    (re.compile(r"zero succeeded using BLKZEROOUT"), "BLKZEROOUT", None),
    (re.compile(r"zero falling back to writing"), "written out (nbdkit's fallback)", False),
)


def mechanism(debug: list[str]) -> dict[str, Any] | None:
    """What nbdkit's file plugin said it did for a zero (its `-D file.zero=1` lines). The core's fallback
    writes themselves print nothing (plugin_zero calls the plugin's pwrite directly, below the debug)."""
    seen: list[tuple[str, bool | None]] = []
    for line in debug:
        for rx, name, cheap in MECHANISMS:
            if rx.search(line):
                seen.append((name, cheap))
    if not seen:
        return None
    names = list(dict.fromkeys(n for n, _ in seen))
    cheap = None if any(c is None for _, c in seen) else all(c for _, c in seen)
    return {"how": " then ".join(names), "cheap": cheap}


def _delta(cell: dict[str, Any], key: str) -> int | None:
    ev = cell.get("evidence") or {}
    a, b = (ev.get("before") or {}).get(key), (ev.get("after") or {}).get(key)
    return None if a is None or b is None else b - a


def _by_server(n: int, e: dict[str, Any]) -> tuple[str, str] | None:
    """(class, basis) from what the server said (nbdkit's debug) or did (its write calls); None if neither shows."""
    how, wrote = e["mechanism"], e["server_wrote"]
    if how is not None and how["cheap"] is not None:
        return ("cheap" if how["cheap"] else "dear"), f"nbdkit: {how['how']}"
    if wrote is not None and wrote >= n * WRITTEN:
        return "dear", f"the server wrote {format_size(wrote)} (its write calls)"
    return None


def _by_device(n: int, e: dict[str, Any]) -> tuple[str, str] | None:
    """(class, basis) from the bytes the kernel counted as written to the device under the disk."""
    how, dev = e["mechanism"], e["device_written"]
    if dev is None:
        return None
    blkzeroout = how is not None and how["how"] == "BLKZEROOUT"  # counted as written by the block layer
    if dev >= n * WRITTEN and not blkzeroout:
        return "dear", f"{format_size(dev)} written to the device"
    if dev < n * NOTHING:
        return "cheap", f"only {format_size(dev)} written to the device"
    return None


def _by_storage(n: int, e: dict[str, Any], sparse: bool) -> tuple[str, str] | None:
    """(class, basis) from what the storage shows: allocation, bytes written to the device; None if nothing."""
    alloc, dev, wrote = e["allocated_delta"], e["device_written"], e["server_wrote"]
    if alloc is not None and alloc <= -n * WRITTEN:
        return "cheap", f"{format_size(-alloc)} deallocated (a hole was punched)"
    if dev is not None:
        return _by_device(n, e)
    if wrote is not None and wrote < n * NOTHING:
        return "cheap", f"the server wrote {format_size(wrote)} (its write calls)"
    if sparse and (alloc or 0) >= n * WRITTEN:
        return "dear", f"{format_size(alloc or 0)} allocated for zeroes"
    return None


def cost(cell: dict[str, Any], write_s: float | None) -> dict[str, Any]:
    """cheap / dear / unknown for one zero that succeeded, with the evidence that decided it."""
    n = cell["size"] * cell.get("inflight", 1)
    secs = (cell.get("zero_s") or 0) + (cell.get("flush_s") or 0)
    ratio = round(secs / write_s, 4) if write_s else None
    out: dict[str, Any] = {"allocated_delta": _delta(cell, "allocated"), "device_written":
                           _delta(cell, "device_written"), "server_wrote": _delta(cell, "server_wchar"),
                           "mechanism": mechanism(cell.get("debug") or []), "vs_overwrite": ratio,
                           "seconds": round(secs, 6)}
    decided = _by_server(n, out) or _by_storage(n, out, cell.get("disk") == "sparse")
    if decided is None and ratio is not None:
        decided = ("cheap" if ratio <= CHEAP_RATIO else "dear"), \
            f"time: {ratio * 100:.0f}% of an overwrite (no storage evidence)"
    cls, basis = decided or ("unknown", "no storage evidence and no overwrite to compare with")
    return {**out, "class": cls, "basis": basis}


def judge_costs(cells: list[dict[str, Any]]) -> None:
    """Give every succeeded cell its `cost`; a sparse cell is compared with its dirty twin's overwrite."""
    overwrite = {}
    for c in cells:
        w = (c.get("prepared") or {}).get("write_s")
        if w and c["position"] == "first":
            overwrite[(c["size"], c["misalign"], c["inflight"])] = w
    for c in cells:
        if c.get("outcome") == "ok":
            w = (c.get("prepared") or {}).get("write_s") or overwrite.get((c["size"], c["misalign"], c["inflight"]))
            c["cost"] = cost(c, w)


def safety(cells: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [c for c in cells if c.get("unsafe")]
    out: dict[str, Any] = {"unsafe": bool(bad), "cells": len(cells), "bad_cells": len(bad),
                           "bad_keys": sorted({c["key"] for c in bad})}
    if bad:
        c = bad[0]
        where = c.get("stale") or c.get("outside") or {}
        start = c["size"] and _range_start(c)
        first = where.get("first_bad")
        out["first_bad"] = {"cell": c["cell"], "request": c["key"], "position": c["position"], "offset": first,
                            "offset_in_request": None if first is None else first - start,
                            "bytes": where.get("bad_bytes"), "outside_range": not c.get("stale"),
                            "ranges": where.get("ranges")}
    return out


def _range_start(c: dict[str, Any]) -> int:
    from lab.nbd.audit_cells import Group, Size

    return Group(c["index"], Size(c["size"], c["misalign"]), c["flags"], c["disk"], c["inflight"]).ranges()[0][0]


def _reference(cells: list[dict[str, Any]], flags: str) -> dict[str, Any] | None:
    """The cell the speed verdict reads for `flags`: dirty, one in flight, first on its connection, the
    largest size up to 64 MiB (at least 1 MiB)."""
    fit = [c for c in cells if c["flags"] == flags and c["disk"] == "dirty" and c["inflight"] == 1
           and c["position"] == "first" and (1 << 20) <= c["size"] <= (64 << 20)]
    return max(fit, key=lambda c: c["size"]) if fit else None


def _cls(c: dict[str, Any] | None) -> str:
    if c is None:
        return "unknown"
    if c.get("outcome") != "ok":
        return c.get("outcome") or "unknown"
    return (c.get("cost") or {}).get("class", "unknown")


def speed(cells: list[dict[str, Any]], flags: dict[str, Any]) -> dict[str, Any]:
    plain, nohole, fast = (_reference(cells, f) for f in ("none", "no-hole", "fast-zero"))
    classes = {"zero": _cls(plain), "no_hole": _cls(nohole), "fast_zero": _cls(fast)}
    size = format_size(plain["size"]) if plain else "?"
    if not flags.get("can_zero"):
        return {"verdict": "no-zero", "why": "no WRITE_ZEROES: a client must write zero bytes", **classes}
    split = f"plain zero {classes['zero']}, NO_HOLE zero {classes['no_hole']} (at {size}, dirty)"
    if not flags.get("can_fast_zero"):
        if classes["zero"] in ("cheap", "dear"):
            return {"verdict": f"not-advertised-{classes['zero']}", "why": f"no fast zero; {split}", **classes}
        return {"verdict": "not-advertised", "why": f"no fast zero; {split}", **classes}
    if fast is not None and fast.get("outcome") == "refused":
        v = "refused-but-cheap" if classes["zero"] == "cheap" else "refused-quickly"
        return {"verdict": v, "why": f"fast zero refused in {fast.get('zero_s', 0) * 1000:.1f} ms; {split}",
                **classes}
    if classes["fast_zero"] == "cheap":
        return {"verdict": "fast", "why": f"fast zero accepted and cheap; {split}", **classes}
    if classes["fast_zero"] == "dear":
        return {"verdict": "advertised-but-slow", "why": f"fast zero accepted but written out; {split}", **classes}
    return {"verdict": "unknown", "why": f"fast zero {classes['fast_zero']}; {split}", **classes}
