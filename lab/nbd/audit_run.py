"""Carrying out an audit's groups on the real server: prepare, zero, read back, keep the evidence.

One group is one connection (lab.nbd.audit_cells). Per request (cell):

    prepare   dirty: the range is written with known data (timed: the overwrite a zero is compared
              with); sparse: the range is made a hole (the disk file truncated and re-extended,
              BLKDISCARD on a block device, or an NBD trim, checked to read back zero)
              and in both cases the guards on either side hold known data; then a flush
    zero      the request(s), timed; a flush, timed apart; the storage's evidence before and
              after (allocated bytes, bytes written to the device, nbdkit's own debug lines)
    read back the range and its guards: every range byte must be zero, every guard byte unchanged

Bounded: a deadline and a cancel event are checked between every request the audit sends.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.nbd.audit_cells import (
    GUARD,
    Damage,
    Group,
    align_down,
    align_up,
    check_same,
    check_zero,
    nbd_flags,
    pattern,
)
from lab.nbd.audit_targets import Target

PIECE = 32 << 20  # largest read or write the audit sends (qemu's limit; servers may lower it)
BLKDISCARD = 0x1277  # _IO(0x12, 119)
REFUSED = (errno.ENOTSUP, errno.EOPNOTSUPP)


class AuditStopped(Exception):
    """The deadline passed or the audit was cancelled: `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Limits:
    deadline: float  # time.monotonic() after which the audit stops
    cancel: threading.Event

    def check(self) -> None:
        if self.cancel.is_set():
            raise AuditStopped("cancelled")
        if time.monotonic() > self.deadline:
            raise AuditStopped("deadline")


def read_flags(h: Any) -> dict[str, Any]:
    """What the server itself advertises (no proxy in between)."""
    import nbd

    return {"size": h.get_size(), "can_zero": bool(h.can_zero()), "can_fast_zero": bool(h.can_fast_zero()),
            "can_trim": bool(h.can_trim()), "can_flush": bool(h.can_flush()), "can_fua": bool(h.can_fua()),
            "can_multi_conn": bool(h.can_multi_conn()), "is_read_only": bool(h.is_read_only()),
            "block_size_min": int(h.get_block_size(nbd.SIZE_MINIMUM)),
            "block_size_preferred": int(h.get_block_size(nbd.SIZE_PREFERRED)),
            "block_size_max": int(h.get_block_size(nbd.SIZE_MAXIMUM)),
            "protocol": h.get_protocol()}


class GroupRunner:
    """Runs one group on one connection; `cells` are plain dicts (the audit's JSON)."""

    def __init__(self, target: Target, group: Group, flags: dict[str, Any], limits: Limits, repeats: int) -> None:
        self.t, self.g, self.flags, self.lim, self.repeats = target, group, flags, limits, repeats
        self.piece = min(PIECE, flags["block_size_max"] or PIECE)
        self.seed = group.index + 1
        self.cells: list[dict[str, Any]] = []  # kept when the audit stops half-way through a group

    # -- what cannot be sent at all -----------------------------------------------------------
    def not_sendable(self) -> tuple[str, str] | None:
        f, g = self.flags, self.g
        if not f["can_zero"]:
            return "not-advertised", "the server does not advertise WRITE_ZEROES"
        if "fast-zero" in g.flags and not f["can_fast_zero"]:
            return "not-advertised", "the server does not advertise fast zero: a client must not send the flag"
        low = max(1, f["block_size_min"])
        if low > 1 and any(o % low or n % low for o, n in g.ranges()):
            return "not-allowed", f"the server's minimum block size is {low}: this request is not aligned to it"
        return None

    def run(self, h: Any) -> list[dict[str, Any]]:
        skip = self.not_sendable()
        for rep in range(self.repeats):
            cell = {**self.g.describe(), "position": "first" if rep == 0 else "repeated",
                    "cell": f"{self.g.index}.{rep}", "outcome": "interrupted"}
            self.cells.append(cell)
            if skip:
                cell.update(outcome=skip[0], why=skip[1])
                break
            if not self.one(h, cell):
                break
        return self.cells

    # -- one request ----------------------------------------------------------------------------
    def one(self, h: Any, cell: dict[str, Any]) -> bool:
        """Prepare, zero, read back; False when the group cannot go on (the range could not be prepared)."""
        prep = self.prepare(h)
        cell["prepared"] = prep
        if prep.get("unreachable"):
            cell.update(outcome="skipped", why=prep["unreachable"])
            return False
        before, mark = self.t.evidence(), self.t.debug_mark()
        outcome, errors, zero_s, per_request = self.zero(h)
        flush_s = self.flush(h)
        after = self.t.evidence()
        cell.update(errors=errors, zero_s=round(zero_s, 6), flush_s=round(flush_s, 6),
                    request_s=per_request, evidence={"before": before, "after": after},
                    debug=self.t.debug_since(mark)[-400:])
        inside, outside, unchanged = self.read_back(h, outcome)
        cell["outcome"] = outcome  # only once read back: a cell the deadline cut stays "interrupted"
        cell["stale"] = inside.to_dict() if inside else None
        cell["outside"] = outside.to_dict() if outside else None
        cell["unsafe"] = bool(inside or outside)
        if outcome == "refused" and unchanged is False:
            cell["warning"] = "a refused fast zero altered the range (the spec says SHOULD NOT)"
        return True

    def prepare(self, h: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"disk": self.g.disk}
        if self.g.disk == "dirty":
            spent = sum(self.write(h, off, n) for off, n in self.g.ranges())
            out["write_s"] = round(spent + self.flush(h), 6)
        else:
            how = self.make_sparse(h)
            if how is None:
                return {**out, "unreachable": "the range could not be made sparse here (no hole punch, discard "
                        "or trim that reads back zero)"}
            out["sparse_by"] = how
        for off, n in self.g.ranges():
            lo, hi = align_down(off) - GUARD, align_up(off + n) + GUARD
            self.write(h, lo, off - lo)
            self.write(h, off + n, hi - off - n)
        self.flush(h)
        return out

    def make_sparse(self, h: Any) -> str | None:
        """Make every range a hole; how it was done, or None."""
        disk = self.t.disk
        fmt = self.t.fields.get("disk_format") or "raw"
        if disk is not None and fmt == "raw":
            st = os.stat(disk)
            if stat.S_ISREG(st.st_mode):
                os.truncate(disk, 0)  # everything a hole again, on any filesystem (ramfs has no punch)
                os.truncate(disk, self.t.disk_size)
                return "file truncated and re-extended"
            if stat.S_ISBLK(st.st_mode) and self._discard(disk):
                return "BLKDISCARD" if self._reads_zero(h) else None
        if not self.flags["can_trim"]:
            return None
        for off, n in self.g.ranges():
            self.lim.check()
            h.trim(n, off)
        self.flush(h)
        return "NBD trim" if self._reads_zero(h) else None

    def _discard(self, disk: Any) -> bool:
        fd = os.open(disk, os.O_WRONLY)
        try:
            for off, n in self.g.ranges():
                lo, hi = align_down(off, 1 << 20), align_up(off + n, 1 << 20)
                fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", lo, hi - lo))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _reads_zero(self, h: Any) -> bool:
        d = Damage()
        for off, n in self.g.ranges():
            for o in range(off, off + n, self.piece):
                self.lim.check()
                m = min(self.piece, off + n - o)
                check_zero(h.pread(m, o), o, d)
        return not d

    def write(self, h: Any, offset: int, length: int) -> float:
        """The group's pattern over [offset, offset+length), made a piece at a time (a 1 GiB range never
        sits in memory whole); returns the seconds spent in the writes themselves (not making the pattern)."""
        spent = 0.0
        for p in range(offset, offset + length, self.piece):
            self.lim.check()
            data = pattern(p, min(self.piece, offset + length - p), self.seed)
            t0 = time.perf_counter()
            h.pwrite(data, p)
            spent += time.perf_counter() - t0
        return spent

    def flush(self, h: Any) -> float:
        if not self.flags["can_flush"]:
            return 0.0
        t0 = time.perf_counter()
        h.flush()
        return time.perf_counter() - t0

    def zero(self, h: Any) -> tuple[str, list[str], float, list[float]]:
        """Send the group's zero request(s); (outcome, errors, seconds, per-request seconds)."""
        self.lim.check()
        f = nbd_flags(self.g.flags)
        if self.g.inflight == 1:
            off, n = self.g.ranges()[0]
            t0 = time.perf_counter()
            err = _call(lambda: h.zero(n, off, f))
            s = time.perf_counter() - t0
            return _outcome([err]), [e for e in [err] if e], s, [round(s, 6)]
        return self._zero_in_flight(h, f)

    def _zero_in_flight(self, h: Any, f: int) -> tuple[str, list[str], float, list[float]]:
        import nbd

        t0 = time.perf_counter()
        cookies = {h.aio_zero(n, off, flags=f): i for i, (off, n) in enumerate(self.g.ranges())}
        done_at: dict[int, float] = {}
        errs: dict[int, str | None] = {}
        while len(done_at) < len(cookies):
            for c, i in cookies.items():
                if i in done_at:
                    continue
                try:
                    finished = h.aio_command_completed(c)
                    err = None
                except nbd.Error as e:
                    finished, err = True, _errname(e)
                if finished:
                    done_at[i], errs[i] = time.perf_counter() - t0, err
            if len(done_at) < len(cookies):
                self.lim.check()
                h.poll(200)
        errors = [e for e in errs.values() if e]
        return _outcome(list(errs.values())), errors, time.perf_counter() - t0, \
            [round(done_at[i], 6) for i in sorted(done_at)]

    def read_back(self, h: Any, outcome: str) -> tuple[Damage, Damage, bool | None]:
        """(stale bytes in the ranges, changed bytes in the guards, range unchanged after a refusal)."""
        inside, outside, changed = Damage(), Damage(), Damage()
        for off, n in self.g.ranges():
            lo, hi = align_down(off) - GUARD, align_up(off + n) + GUARD
            for o in range(lo, hi, self.piece):
                self.lim.check()
                m = min(self.piece, hi - o)
                data = h.pread(m, o)
                self._judge(data, o, off, n, outcome, inside, outside, changed)
        unchanged = None if outcome != "refused" or self.g.disk != "dirty" else not changed
        return inside, outside, unchanged

    def _judge(self, data: bytes, o: int, off: int, n: int, outcome: str, inside: Damage, outside: Damage,
               changed: Damage) -> None:
        end = o + len(data)
        for lo, hi, is_range in ((o, min(end, off), False), (max(o, off), min(end, off + n), True),
                                 (max(o, off + n), end, False)):
            if lo >= hi:
                continue
            part = data[lo - o:hi - o]
            if not is_range:
                check_same(part, pattern(lo, hi - lo, self.seed), lo, outside)
            elif outcome == "ok":
                check_zero(part, lo, inside)
            elif self.g.disk == "dirty":
                check_same(part, pattern(lo, hi - lo, self.seed), lo, changed)


def _errname(e: Any) -> str:
    return errno.errorcode.get(e.errnum or 0, str(e)) if getattr(e, "errnum", None) else str(e)


def _call(fn: Callable[[], Any]) -> str | None:
    import nbd

    try:
        fn()
    except nbd.Error as e:
        return _errname(e)
    return None


def _outcome(errs: list[str | None]) -> str:
    if all(e is None for e in errs):
        return "ok"
    refused = {errno.errorcode[c] for c in REFUSED}
    if all(e in refused for e in errs if e):
        return "refused" if all(e for e in errs) else "partly-refused"
    if any(e == "EINVAL" for e in errs):
        return "invalid"
    return "error"
