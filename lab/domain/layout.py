"""A source image's layout: the data extents a pattern (`alternate:1M`, `full`, `empty`) makes over a size.

A value: lab.domain.spec checks a server's pattern with it, lab.host.images builds the image
from it, lab.nbd.diskmap draws it.
"""

from __future__ import annotations

import re

from lab.domain.units import format_size, parse_size

BLOCK = 4096  # data and hole lengths are whole 4 KiB blocks (each block of data carries its offset)

_ALT_RE = re.compile(r"alternate:([^:]+)(?::([^:]+))?")


def _period(pattern: str, size: int) -> tuple[int, int] | None:
    """(data, hole) lengths of an `alternate:` pattern, checked; None for `full` and `empty`."""
    if pattern in ("full", "empty"):
        return None
    m = _ALT_RE.fullmatch(pattern)
    if not m:
        raise ValueError(f"{pattern!r} is not a pattern: use alternate:1M, alternate:1M:3M, full or empty")
    data = parse_size(m.group(1))
    hole = parse_size(m.group(2)) if m.group(2) else data
    for n, v in (("data", data), ("hole", hole)):
        if v < BLOCK or v % BLOCK:
            raise ValueError(f"{pattern!r}: the {n} length must be a multiple of 4k (got {v})")
    if (size // (data + hole)) > 1 << 20:
        raise ValueError(f"{pattern!r}: too many extents for a {format_size(size)} image")
    return data, hole


def check_pattern(pattern: str, size: int) -> None:
    """ValueError when parse_pattern would refuse the pattern; without building its extents (a
    1 GiB image of 64k extents is 8,192 of them, and a form check wants none)."""
    _period(pattern, size)


def parse_pattern(pattern: str, size: int) -> list[tuple[int, int]]:
    """Data extents (offset, length) for a pattern over `size` bytes.

    `alternate:D[:H]`: D bytes of data then H (default D) bytes of hole, repeating;
    `full`: all data; `empty`: all hole.
    """
    if pattern == "full":
        return [(0, size)]
    if pattern == "empty":
        return []
    period = _period(pattern, size)
    assert period is not None
    data, hole = period
    extents = []
    off = 0
    while off < size:
        extents.append((off, min(data, size - off)))
        off += data + hole
    return extents


def pattern_counts(pattern: str, size: int, maxdata: int) -> tuple[int, int, int]:
    """(data extents, data bytes, writes of at most `maxdata` bytes) of parse_pattern's extents,
    by arithmetic (what an estimate needs, without the list)."""
    period = _period(pattern, size)
    if period is None:
        return (1, size, -(-size // maxdata)) if pattern == "full" else (0, 0, 0)
    data, hole = period
    whole, rest = divmod(size, data + hole)
    last = min(data, rest)
    extents = whole + (1 if last else 0)
    return extents, whole * data + last, whole * -(-data // maxdata) + -(-last // maxdata)
