"""Request counts: what a backend carried out and what a client sent (values; parsed in lab.nbd.trace)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class BackendCounts:
    write_ops: int = 0
    write_bytes: int = 0
    zero_ops: int = 0
    zero_bytes: int = 0
    trim_ops: int = 0
    trim_bytes: int = 0
    flush_ops: int = 0
    read_ops: int = 0
    read_bytes: int = 0

    # Built field by field, not with dataclasses.asdict (a deep copy per value): a live run takes
    # a few of these per progress event, on the CPU the copy is using.
    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _BACKEND_FIELDS}

    def minus(self, other: BackendCounts) -> BackendCounts:
        return BackendCounts(**{k: getattr(self, k) - getattr(other, k) for k in _BACKEND_FIELDS})


@dataclass
class WireCounts:
    """Requests as the client sent them (or as nbdkit's log filter saw them)."""

    write: int = 0
    write_bytes: int = 0
    zero: int = 0
    zero_bytes: int = 0
    fast_zero: int = 0
    fast_zero_failed: int = 0
    trim: int = 0
    flush: int = 0
    failed: int = 0
    # The block-status client only: BLOCK_STATUS asked of the destination, the time they took,
    # and the hole zeroes they let it skip (the destination already read as zero there).
    block_status: int = 0
    block_status_s: float = 0.0
    zero_skipped: int = 0
    source: str = "nbdkit-log"  # or "client": who counted
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {k: getattr(self, k) for k in _WIRE_FIELDS}
        d["errors"] = self.errors[:10]
        return d


_BACKEND_FIELDS = tuple(f.name for f in fields(BackendCounts))
_WIRE_FIELDS = tuple(f.name for f in fields(WireCounts))
