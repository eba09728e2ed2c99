"""Per-operation latency percentiles and a request-size histogram, from a trace of requests.

Shared by runs (the log filter's trace: each request's start and reply stamps) and audits
(the audit's own clock around each zero request). Percentiles are nearest-rank on the sorted
values (no interpolation: every figure is a latency some request really had).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

PERCENTILES = (50, 90, 99)
# What percentiles() gives per operation, and the operations nbdkit's log filter names (the CSV's
# columns: lab.service.export).
FIGURES = ("n", *(f"p{p}_ms" for p in PERCENTILES), "max_ms")
OPERATIONS = ("Read", "Write", "Zero", "Trim", "Flush", "Extents", "Cache")


def percentiles(values: Iterable[float]) -> dict[str, Any] | None:
    """{n, p50_ms, p90_ms, p99_ms, max_ms} of latencies given in seconds; None when there are none."""
    v = sorted(values)
    if not v:
        return None
    out: dict[str, Any] = {"n": len(v)}
    for p in PERCENTILES:
        out[f"p{p}_ms"] = round(v[max(0, math.ceil(p / 100 * len(v)) - 1)] * 1000, 3)
    out["max_ms"] = round(v[-1] * 1000, 3)
    return out


def size_bucket(n: int) -> int:
    """The power of two at or above n (the histogram's upper bound for a request of n bytes)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def size_histogram(sizes: Iterable[int]) -> list[dict[str, int]]:
    """[{le: bytes, count}] over power-of-two buckets, smallest first (only buckets that hold a request)."""
    counts: dict[int, int] = defaultdict(int)
    for n in sizes:
        counts[size_bucket(n)] += 1
    return [{"le": b, "count": counts[b]} for b in sorted(counts)]


def by_operation(samples: Iterable[tuple[str, int, float | None]]) -> dict[str, Any]:
    """From (op, bytes, seconds or None) samples: percentiles per op, and the zero requests' size histogram."""
    lat: dict[str, list[float]] = defaultdict(list)
    zero_sizes = []
    for op, n, s in samples:
        if s is not None and s >= 0:
            lat[op].append(s)
        if op.lower().startswith("zero"):
            zero_sizes.append(n)
    return {"latency": {op: percentiles(v) for op, v in sorted(lat.items())},
            "zero_sizes": size_histogram(zero_sizes)}
