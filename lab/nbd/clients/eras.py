"""qemu-img convert as each era did it, re-enacted over libnbd.

Today's qemu-img (>= 5.1, commit edafc70c0c) no longer pre-zeroes, so the talk's acts
need these. Each era is a `Strategy` (facts from qemu's qemu-img.c, block/io.c and the
NBD client of that release: docs/design.md#era-strategies, with the commits). `_Copy` makes
the era's zeroing decisions in qemu-img's order, `_Wire` issues the requests (in order, up to
the queue depth in flight, each counted, each failure handed to its fallback) and `_Progress`
reports the run's phase and bytes. Together they do what every era did:

- data goes in writes of at most 2 MiB (qemu-img's IO_BUF_SIZE), starting at each
  data run, strictly in order;
- a hole the client must zero goes as WRITE_ZEROES of at most 32 MiB (the NBD client's
  max_pwrite_zeroes) when the era knows the command and the server offers it, else as
  writes of zero bytes of at most 16 MiB (block/io.c's bounce buffer fallback);
- a pre-zero pass (blk_make_zero) zeroes the whole target in 32 MiB pieces before the
  copy; when it works the copy skips every hole, when it fails (qemu stops at the first
  error) every hole is zeroed after all.

Contents never depend on a feature working: any refused zero (ENOTSUP from the server,
EINVAL from libnbd because it was not advertised) falls back to writing that range.

The source is read from the cached raw file with os.pread, following Image.segments():
that is the qcow2's allocation map, the block-status view qemu-img's qcow2 driver gives
its copy loop (a test checks it equals `qemu-img map` of the qcow2), and the raw file
holds the same bytes. Reading it directly keeps a source-side qemu-nbd, its requests and
its latency out of the measured copy, which is all about the destination.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.domain.clients import ClientInfo, client_info
from lab.domain.counts import WireCounts
from lab.domain.units import format_size
from lab.nbd.clients import child
from lab.nbd.clients.base import Cancelled, Client, ClientError, ClientResult, CopyContext
from lab.nbd.handle import close_handle

MiB = 1 << 20
DATA_CHUNK = 2 * MiB  # qemu-img IO_BUF_SIZE
BOUNCE_MAX = 16 * MiB  # block/io.c MAX_WRITE_ZEROES_BOUNCE_BUFFER (32768 sectors)
ZERO_MAX = 32 * MiB  # qemu NBD client: max_pwrite_zeroes = NBD_MAX_BUFFER_SIZE
# Errors that mean "the server (or libnbd on its behalf) will not do this": lose
# performance, never contents. ENOTSUP and EOPNOTSUPP are one value on Linux.
REFUSED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL})
REPORT_INTERVAL = 0.04  # progress reports at most 25 a second
POLL_MS = 100  # wake up this often while waiting, to notice a cancel


@dataclass(frozen=True)
class Strategy:
    write_zeroes: bool  # holes as NBD_CMD_WRITE_ZEROES when the server offers it (qemu >= 2.8)
    may_trim: bool  # those zeroes may punch holes (no NO_HOLE flag): BDRV_REQ_MAY_UNMAP
    prezero: str  # "none", "blind" (2.12-3.1), "no-fallback" (4.0), "fast" (4.2)
    # The 2018 experiment: BLOCK_STATUS (one extent, REQ_ONE) on the destination before each
    # hole; no zero when it already reads as zero there.
    check_dest: bool = False


def _errnum(e: Exception) -> int | None:
    return getattr(e, "errnum", None)


def _errname(e: Exception) -> str:
    return errno.errorcode.get(_errnum(e) or 0, "error")


class _Progress:
    """What a copy shows while it runs: its phase, the bytes it plans to send and has sent,
    with its wire counts so far; at most one report per REPORT_INTERVAL unless forced."""

    def __init__(self, report: Callable[[dict[str, Any]], None], counts: WireCounts, depth: int) -> None:
        self._emit = report
        self.counts = counts
        self.depth = depth
        self.phase = "copy"
        self.planned_bytes = 0
        self.sent_bytes = 0
        self._last = 0.0

    def begin(self, phase: str, planned_bytes: int) -> None:
        self.planned_bytes = planned_bytes
        self.phase = phase
        self.report(force=True)

    def sent(self, n: int) -> None:
        self.sent_bytes += n
        self.planned_bytes = max(self.planned_bytes, self.sent_bytes)

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_INTERVAL:
            return
        self._last = now
        self._emit({"phase": self.phase, "wire": self.counts.to_dict(), "planned_bytes": self.planned_bytes,
                    "sent_bytes": self.sent_bytes, "queue_depth": self.depth})


@dataclass
class _Pending:
    cookie: int
    offset: int
    length: int
    kind: str  # "write" or "zero"
    fast: bool = False
    payload: bytes | None = None  # kept alive until the write completes
    on_error: Callable[[Exception], None] | None = None


class _Wire:
    """The requests of one copy on one NBD connection, as qemu's copy loop issued them:
    strictly in order, at most `depth` in flight (qemu kept one). Each request is counted
    as it goes out; a failed one goes to its own `on_error` (the strategy's fallback), or
    ends the copy. The wire decides nothing about zeroing: that is the strategy's."""

    def __init__(self, h: Any, cancel: threading.Event, progress: _Progress) -> None:
        import nbd

        self.nbd = nbd
        self.h = h
        self.cancel = cancel
        self.progress = progress
        self.counts = progress.counts
        self.depth = progress.depth
        self._inflight: deque[_Pending] = deque()

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def write(self, off: int, data: bytes) -> None:
        self.make_room()
        cookie = self.h.aio_pwrite(data, off)
        self.counts.write += 1
        self.counts.write_bytes += len(data)
        self.progress.sent(len(data))
        self._inflight.append(_Pending(cookie, off, len(data), "write", payload=data))

    def zero(self, off: int, n: int, flags: int, fast: bool = False,
             on_error: Callable[[Exception], None] | None = None,
             locally_refused: Callable[[Exception], None] | None = None) -> None:
        """WRITE_ZEROES; `locally_refused` takes libnbd's refusal to send it at all."""
        self.make_room()
        try:
            cookie = self.h.aio_zero(n, off, flags=flags)
        except self.nbd.Error as e:
            # libnbd refused it before sending (not advertised): no wire request.
            if locally_refused is None or _errnum(e) not in REFUSED:
                raise
            locally_refused(e)
            return
        self.counts.zero += 1
        self.counts.zero_bytes += n
        if fast:
            self.counts.fast_zero += 1
        self.progress.sent(n)
        self._inflight.append(_Pending(cookie, off, n, "zero", fast=fast, on_error=on_error))

    def reads_zero(self, off: int, n: int) -> bool:
        """One BLOCK_STATUS (REQ_ONE): does the destination's first extent at `off` cover the
        whole range and read as zero? Timed: on some filesystems this is what costs."""
        nbd = self.nbd
        if not self.h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
            return False
        self.check_cancel()
        found = {"zero": False}

        def extent(metacontext: str, offset: int, entries: list[int], _err: Any) -> int:
            if metacontext == nbd.CONTEXT_BASE_ALLOCATION and entries:
                found["zero"] = entries[0] >= n and bool(entries[1] & nbd.STATE_ZERO)
            return 0

        t0 = time.perf_counter()
        self.h.block_status(n, off, extent, flags=nbd.CMD_FLAG_REQ_ONE)
        self.counts.block_status += 1
        self.counts.block_status_s += time.perf_counter() - t0
        return found["zero"]

    def flush(self) -> None:
        self.check_cancel()
        self.h.flush()
        self.counts.flush += 1

    def make_room(self) -> None:
        """Wait until one more request may go out (with one in flight: the last one's answer is in)."""
        self.check_cancel()
        while len(self._inflight) >= self.depth:
            self._retire_oldest()

    def drain(self) -> None:
        while self._inflight:
            self._retire_oldest()

    def _retire_oldest(self) -> None:
        p = self._inflight.popleft()
        try:
            while not self.h.aio_command_completed(p.cookie):
                self.check_cancel()
                self.h.poll(POLL_MS)
        except self.nbd.Error as e:
            self._failed(p, e)
        self.progress.report()

    def _failed(self, p: _Pending, e: Exception) -> None:
        c = self.counts
        c.failed += 1
        if p.fast:
            c.fast_zero_failed += 1
        if len(c.errors) < 10:
            c.errors.append(f"{'fast ' if p.fast else ''}{p.kind} offset={p.offset} count={p.length}: {_errname(e)}")
        if p.on_error is None:
            raise ClientError(f"{p.kind} of {p.length} bytes at offset {p.offset} failed: {e}") from e
        p.on_error(e)


class _Copy:
    """One era's copy: its strategy's zeroing decisions (pre-zero pass, each hole) over a `_Wire`,
    in the order qemu-img convert made them (docs/design.md#era-strategies)."""

    def __init__(self, ctx: CopyContext, h: Any, strategy: Strategy) -> None:
        import nbd

        self.nbd = nbd
        self.ctx = ctx
        self.strategy = strategy
        self.notes: list[str] = []
        self.counts = WireCounts(source="client")
        self.depth = max(1, int(ctx.queue_depth or 1))
        self.progress = _Progress(ctx.report, self.counts, self.depth)
        self.wire = _Wire(h, ctx.cancel, self.progress)
        # What the server offers; the strategy decides from these (a test may overrule them).
        self.can_zero = bool(h.can_zero())
        self.can_fast_zero = bool(h.can_fast_zero())
        self.can_flush = bool(h.can_flush())
        max_block = int(h.get_block_size(nbd.SIZE_MAXIMUM)) or ZERO_MAX
        self.data_chunk = min(DATA_CHUNK, max_block)
        self.bounce_max = min(BOUNCE_MAX, max_block)
        self.zero_max = min(ZERO_MAX, max_block)
        self._zeros = bytes(self.bounce_max)

    def run(self) -> None:
        """Pre-zero if the era does, then the copy loop: data runs in order, holes zeroed
        unless the target is known to be zero; the flush qemu-img does when it closes the target."""
        image = self.ctx.image
        zero_init = self._prezero()
        holes = image.size - image.data_bytes
        self.progress.begin("copy", self.progress.sent_bytes + image.data_bytes + (0 if zero_init else holes))
        with open(image.raw, "rb", buffering=0) as src:
            for off, n, is_data in image.segments():
                if is_data:
                    self._copy_data(src.fileno(), off, n)
                elif not zero_init:
                    self._zero_hole(off, n)
        self.wire.drain()
        if self.can_flush:
            self.wire.flush()
        self.progress.report(force=True)

    def _copy_data(self, fd: int, off: int, n: int) -> None:
        """A data run as writes of at most IO_BUF_SIZE."""
        for o in range(off, off + n, self.data_chunk):
            m = min(self.data_chunk, off + n - o)
            data = os.pread(fd, m, o)
            if len(data) != m:
                raise ClientError(f"short read from the source at offset {o}")
            self.wire.write(o, data)

    # -- the pre-zero pass (blk_make_zero) -----------------------------------------------
    def _prezero(self) -> bool:
        """The pre-zero pass of eras that have one; True if the target is now all zero."""
        mode = self.strategy.prezero
        if mode == "none":
            return False
        why_not = self._prezero_refused(mode)
        if why_not:
            self.notes.append(why_not)
            return False
        return self._prezero_pass(fast=mode == "fast")

    def _prezero_refused(self, mode: str) -> str | None:
        """Why this era's pass never reaches the server, if it does not: a note."""
        if not self.can_zero:
            # bdrv_can_write_zeroes_with_unmap() is false without NBD_FLAG_SEND_WRITE_ZEROES.
            return "no pre-zero pass: the server does not offer write-zeroes"
        if mode == "no-fallback":
            return ("pre-zero asked with BDRV_REQ_NO_FALLBACK, which NBD cannot carry: "
                    "refused inside the client, no request sent; zeroes go per hole")
        if mode == "fast" and not self.can_fast_zero:
            return ("pre-zero needs the fast-zero flag, which the server does not offer: "
                    "refused inside the client, no request sent; zeroes go per hole")
        return None

    def _prezero_pass(self, fast: bool) -> bool:
        """The whole target in ZERO_MAX pieces (may trim: no NO_HOLE), stopping at the first error
        as bdrv_make_zero does."""
        flags = self.nbd.CMD_FLAG_FAST_ZERO if fast else 0
        size = self.ctx.image.size
        self.progress.begin("pre-zero", size + self.ctx.image.data_bytes)
        failed: list[Exception] = []
        pieces = 0
        for off in range(0, size, self.zero_max):
            self.wire.make_room()  # with one in flight, the previous piece's answer is in now
            if failed:
                break
            pieces += 1
            n = min(self.zero_max, size - off)
            self.wire.zero(off, n, flags, fast=fast, on_error=failed.append, locally_refused=failed.append)
        self.wire.drain()
        what = f"{'fast ' if fast else ''}WRITE_ZEROES of up to {format_size(self.zero_max)}"
        if failed:
            self.notes.append(f"pre-zero pass abandoned after {pieces} {what} ({_errname(failed[0])}); "
                              "zeroes go per hole")
            return False
        self.notes.append(f"pre-zero pass: {pieces} {what}; holes skipped in the copy")
        return True

    # -- each hole (blk_pwrite_zeroes) ---------------------------------------------------
    def _zero_hole(self, off: int, n: int) -> None:
        if self.strategy.check_dest and self.wire.reads_zero(off, n):
            self.counts.zero_skipped += 1
            return
        if self.strategy.write_zeroes and self.can_zero:
            flags = 0 if self.strategy.may_trim else self.nbd.CMD_FLAG_NO_HOLE
            for o in range(off, off + n, self.zero_max):
                m = min(self.zero_max, off + n - o)
                fallback = self._fallback(o, m)
                self.wire.zero(o, m, flags, on_error=fallback, locally_refused=fallback)
        else:
            self._write_zero_bytes(off, n)

    def _fallback(self, off: int, n: int) -> Callable[[Exception], None]:
        """What a refused per-hole zero turns into: the same range as zero-filled writes."""

        def fallback(e: Exception) -> None:
            if _errnum(e) not in REFUSED:
                raise ClientError(f"write-zeroes at offset {off} failed: {e}") from e
            if not any("falls back" in note for note in self.notes):
                self.notes.append("a refused write-zeroes falls back to writing zero bytes")
            self._write_zero_bytes(off, n)

        return fallback

    def _write_zero_bytes(self, off: int, n: int) -> None:
        """block/io.c's bounce buffer: zero-filled writes of at most 16 MiB."""
        for o in range(off, off + n, self.bounce_max):
            m = min(self.bounce_max, off + n - o)
            self.wire.write(o, self._zeros[:m] if m < len(self._zeros) else self._zeros)


class EraClient(Client):
    """One era of qemu-img convert (its catalog entry, lab.domain.clients) re-enacted by its `strategy`."""

    def __init__(self, about: ClientInfo, strategy: Strategy) -> None:
        super().__init__(about)
        self.strategy = strategy

    def copy(self, ctx: CopyContext) -> ClientResult:
        """Copy in a child process (see lab/nbd/clients/child.py), unless told to stay in this one."""
        if ctx.in_process:
            return self.copy_here(ctx)
        return child.run_in_child(self.id, ctx)

    def copy_here(self, ctx: CopyContext) -> ClientResult:
        import nbd  # the bindings, when a copy is made

        if not os.path.exists(ctx.image.raw):
            raise ClientError(f"source image missing: {ctx.image.raw}")
        h = nbd.NBD()
        if self.strategy.check_dest:
            h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        t0 = time.perf_counter()
        try:
            h.connect_uri(ctx.uri)
            if h.get_size() < ctx.image.size:
                raise ClientError("output file is smaller than input file")  # qemu-img's own check
            job = _Copy(ctx, h, self.strategy)
            job.run()
        finally:
            close_handle(h)
        elapsed = time.perf_counter() - t0
        notes = ["source read from the raw copy along the qcow2's allocation map", *job.notes]
        c = job.counts
        if self.strategy.check_dest:
            per = f", {c.block_status_s / c.block_status * 1e6:.0f} us each" if c.block_status else ""
            notes.append(f"{c.block_status} BLOCK_STATUS on the destination took {c.block_status_s:.3f} s{per}; "
                         f"{c.zero_skipped} hole zeroes skipped")
        if job.depth > 1:
            notes.append(f"queue depth {job.depth}: up to {job.depth} requests in flight (qemu kept one)")
        return ClientResult(wire=job.counts, notes=notes, elapsed_s=round(elapsed, 4))


ERAS = (
    EraClient(client_info("qemu-2.7"), Strategy(write_zeroes=False, may_trim=False, prezero="none")),
    EraClient(client_info("qemu-2.8"), Strategy(write_zeroes=True, may_trim=False, prezero="none")),
    EraClient(client_info("qemu-3.1"), Strategy(write_zeroes=True, may_trim=False, prezero="blind")),
    EraClient(client_info("qemu-4.0"), Strategy(write_zeroes=True, may_trim=True, prezero="no-fallback")),
    EraClient(client_info("qemu-bs"), Strategy(write_zeroes=True, may_trim=False, prezero="none", check_dest=True)),
    EraClient(client_info("qemu-4.2"), Strategy(write_zeroes=True, may_trim=True, prezero="fast")),
)
