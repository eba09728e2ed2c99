"""Does the destination hold exactly the source's bytes? Read it back through libnbd.

Streams chunk by chunk against the cached source hashes: memory stays flat whatever the
image size. Runs before the server stops (a memory server forgets everything on exit).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lab.host.images import CHUNK, Image, chunk_digest

MAX_RANGES = 16


@dataclass
class VerifyResult:
    verified: bool
    chunks: int
    bad_chunks: int
    first_bad_offset: int | None
    detail: str
    bad_ranges: list[list[int]] | None = None  # [offset, length] of runs of bad chunks (the stale ranges)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def verify(uri: str, image: Image, cancel: threading.Event | None = None, max_request: int = CHUNK) -> VerifyResult:
    import nbd

    from lab.nbd.handle import close_handle

    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        size = h.get_size()
        if size != image.size:
            return VerifyResult(False, 0, 0, None, f"destination is {size} bytes, source {image.size}")
        piece = max(4096, min(CHUNK, max_request))
        bad = 0
        first_bad = None
        ranges: list[list[int]] = []
        buf = bytearray(CHUNK)
        for i, expected in enumerate(image.chunk_hashes):
            if cancel is not None and cancel.is_set():
                return VerifyResult(False, i, bad, first_bad, "verification cancelled")
            off = i * CHUNK
            n = min(CHUNK, size - off)
            view = memoryview(buf)[:n]
            for p in range(0, n, piece):
                m = min(piece, n - p)
                view[p:p + m] = h.pread(m, off + p)
            if chunk_digest(view) != expected:
                bad += 1
                if first_bad is None:
                    first_bad = off
                _add_range(ranges, off, n)
        chunks = len(image.chunk_hashes)
        if bad:
            return VerifyResult(False, chunks, bad, first_bad,
                                f"{bad} of {chunks} 1 MiB chunks differ from the source (first at offset {first_bad}; "
                                f"stale ranges {ranges_text(ranges)})", ranges)
        return VerifyResult(True, chunks, 0, None, f"all {chunks} chunks match the source")
    finally:
        close_handle(h)


def _add_range(ranges: list[list[int]], off: int, n: int) -> None:
    if ranges and ranges[-1][0] + ranges[-1][1] == off:
        ranges[-1][1] += n
    elif len(ranges) < MAX_RANGES:
        ranges.append([off, n])


def ranges_text(ranges: list[list[int]]) -> str:
    """64M-128M, 320M-384M: where a destination differs, as a person reads it."""
    from lab.domain.units import format_size

    text = ", ".join(f"{format_size(o)}-{format_size(o + n)}" for o, n in ranges)
    return text + (", ..." if len(ranges) >= MAX_RANGES else "")
