"""The audit's matrix: which zero requests it sends, where, and how a read-back is judged.

A *group* is one connection: its zero request is sent twice (the first request of that kind
on the connection, then the same again after the range was refilled), because some servers
keep per-connection state that changes what the second request does (nbdkit's file plugin
on ext2: the first NO_HOLE zero learns that fallocate cannot allocate, the second one falls
back to writing). Each request is one *cell*:

    size (4 KiB .. 1 GiB, 64 MiB +- 4 KiB, unaligned ones) x flags {none, NO_HOLE, FAST_ZERO,
    NO_HOLE|FAST_ZERO} x disk {dirty, sparse} x {first, repeated} x in flight {1, several}

Layout: every range has a guard of GUARD bytes of known data on each side (rounded out to
4 KiB), so a server that writes outside the range is caught too. Data is a pattern with no
zero byte, each 4 KiB block stamped with the group and its block number: a stale byte counts
as one non-zero byte, and a stamp says where stale data came from.
"""

from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.domain.units import format_size, parse_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4096
GUARD = 1 * MiB
FILL = 0xA5
FLAG_NAMES = ("none", "no-hole", "fast-zero", "no-hole+fast-zero")
DISKS = ("dirty", "sparse")
INFLIGHT = 4  # requests at once in a "several in flight" group
INFLIGHT_MAX_SIZE = 128 * MiB  # several in flight only up to this size each (the disk holds INFLIGHT of them)
INFLIGHT_MIN_SIZE = 1 * MiB
# (size, offset within its 4 KiB block): the default sizes, the 64 MiB boundary on both sides.
DEFAULT_SIZES = ("4K", "64K+1@1", "1M@512", "32M", "64M-4K", "64M", "64M+4K", "128M", "1G")
QUICK_SIZES = ("4K", "64K+1@1", "1M@512", "64M-4K", "64M+4K", "128M")
_SIZE_RE = re.compile(r"^\s*([0-9]+[kKmMgG]?)\s*(?:([+-])\s*([0-9]+[kKmMgG]?))?\s*(?:@\s*([0-9]+))?\s*$")


def nbd_flags(name: str) -> int:
    import nbd

    return {"none": 0, "no-hole": nbd.CMD_FLAG_NO_HOLE, "fast-zero": nbd.CMD_FLAG_FAST_ZERO,
            "no-hole+fast-zero": nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO}[name]


@dataclass(frozen=True)
class Size:
    length: int
    misalign: int = 0  # the range starts this many bytes into a 4 KiB block

    @property
    def text(self) -> str:
        return size_text(self.length) + (f" @+{self.misalign}" if self.misalign else "")


def size_text(n: int) -> str:
    """64M, 64M+4k, 64M-4k, 64k+1: a request size as the matrix names it."""
    if n < MiB or n % MiB == 0:
        if n % KiB and n > KiB:
            return f"{format_size(n - n % KiB)}+{n % KiB}"
        return format_size(n)
    base = round(n / MiB) * MiB
    diff = n - base
    return f"{format_size(base)}{'+' if diff > 0 else '-'}{format_size(abs(diff))}"


def parse_sizes(items: list[str] | tuple[str, ...]) -> list[Size]:
    """'64M', '64M+4K', '64M-4K', '64K+1@1' (length 65537 starting 1 byte into a block) -> sizes."""
    out = []
    for item in items:
        m = _SIZE_RE.match(str(item))
        if not m:
            raise ValueError(f"{str(item)[:40]!r} is not a request size (such as 64M, 64M+4K or 64K+1@1)")
        n = parse_size(m[1])
        if m[2]:
            n = n + parse_size(m[3]) if m[2] == "+" else n - parse_size(m[3])
        mis = int(m[4] or 0)
        if n <= 0 or n >= 1 << 32:
            raise ValueError(f"{item}: a zero request is 1 byte to 4 GiB - 1 (NBD's 32-bit length)")
        if mis >= BLOCK:
            raise ValueError(f"{item}: the offset within a block must be under 4096")
        out.append(Size(n, mis))
    return sorted(set(out), key=lambda s: (s.length, s.misalign))


@dataclass
class Group:
    """One connection: the same zero request `requests` times (first, then repeated)."""

    index: int
    size: Size
    flags: str
    disk: str
    inflight: int = 1
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        many = f" x{self.inflight} in flight" if self.inflight > 1 else ""
        return f"{self.size.text} {self.flags} {self.disk}{many}"

    def ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of each range this group zeroes: GUARD, range, GUARD, range, ..."""
        span = align_up(self.size.misalign + self.size.length) + GUARD
        return [(GUARD + i * span + self.size.misalign, self.size.length) for i in range(self.inflight)]

    def extent(self) -> int:
        """Bytes of the disk this group touches (ranges and guards)."""
        off, n = self.ranges()[-1]
        return align_up(off + n) + GUARD

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "size": self.size.length, "size_text": self.size.text,
                "misalign": self.size.misalign, "flags": self.flags, "disk": self.disk, "inflight": self.inflight}


def align_up(n: int, a: int = BLOCK) -> int:
    return (n + a - 1) // a * a


def align_down(n: int, a: int = BLOCK) -> int:
    return n // a * a


@dataclass(frozen=True)
class Plan:
    sizes: tuple[Size, ...]
    flags: tuple[str, ...] = FLAG_NAMES
    disks: tuple[str, ...] = DISKS
    repeats: int = 2
    inflight: int = INFLIGHT

    def groups(self) -> list[Group]:
        """Small requests first: a quick answer for the common sizes, the big ones last (a deadline may cut them)."""
        out: list[Group] = []
        for size in self.sizes:
            for disk in self.disks:
                for flags in self.flags:
                    out.append(Group(len(out), size, flags, disk))
                    if self.inflight > 1 and INFLIGHT_MIN_SIZE <= size.length <= INFLIGHT_MAX_SIZE:
                        out.append(Group(len(out), size, flags, disk, self.inflight))
        return out

    def disk_size(self) -> int:
        return align_up(max(g.extent() for g in self.groups()), MiB)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [s.text for s in self.sizes]
        d["size_bytes"] = [[s.length, s.misalign] for s in self.sizes]
        d["disk_size"] = self.disk_size()
        return d


# -- the data a range holds before it is zeroed, and the read-back ------------------------------

_NONZERO = bytes([0x80 if b == 0 else b for b in range(256)])


def pattern(offset: int, length: int, seed: int) -> bytes:
    """Known data for [offset, offset+length): FILL bytes, each 4 KiB block stamped (seed, block) at its start.
    Never a zero byte, so a stale byte is a non-zero byte."""
    buf = bytearray([FILL]) * length
    first = align_down(offset)
    for block in range(first, offset + length, BLOCK):
        stamp = struct.pack(">II", seed & 0xFFFFFFFF, (block // BLOCK) & 0xFFFFFFFF).translate(_NONZERO)
        lo, hi = max(block, offset), min(block + len(stamp), offset + length)
        if lo < hi:
            buf[lo - offset:hi - offset] = stamp[lo - block:hi - block]
    return bytes(buf)


@dataclass
class Damage:
    """What a read-back found wrong in one stretch: stale bytes inside a zeroed range, or changed guards."""

    bad_bytes: int = 0
    first_bad: int | None = None
    ranges: list[list[int]] = field(default_factory=list)  # [offset, length] of bad stretches (merged, capped)

    def add(self, offset: int, length: int, count: int) -> None:
        self.bad_bytes += count
        if self.first_bad is None or offset < self.first_bad:
            self.first_bad = offset
        if self.ranges and self.ranges[-1][0] + self.ranges[-1][1] == offset:
            self.ranges[-1][1] += length
        elif len(self.ranges) < 32:
            self.ranges.append([offset, length])

    def __bool__(self) -> bool:
        return self.bad_bytes > 0

    def to_dict(self) -> dict[str, Any]:
        return {"bad_bytes": self.bad_bytes, "first_bad": self.first_bad, "ranges": self.ranges}


def check_zero(data: bytes, offset: int, damage: Damage) -> None:
    """Every byte of `data` (read from `offset`) must be zero; stale stretches go to `damage`."""
    if data.count(0) == len(data):
        return
    step = MiB
    for p in range(0, len(data), step):
        piece = data[p:p + step]
        nonzero = len(piece) - piece.count(0)
        if nonzero:
            lead = len(piece) - len(piece.lstrip(b"\0"))
            tail = len(piece.rstrip(b"\0"))
            damage.add(offset + p + lead, tail - lead, nonzero)


def check_same(data: bytes, expected: bytes, offset: int, damage: Damage) -> None:
    """`data` (read from `offset`) must equal `expected`; changed 4 KiB blocks go to `damage`."""
    if data == expected:
        return
    for p in range(0, len(data), BLOCK):
        a, b = data[p:p + BLOCK], expected[p:p + BLOCK]
        if a != b:
            damage.add(offset + p, len(a), sum(1 for x, y in zip(a, b, strict=True) if x != y))
