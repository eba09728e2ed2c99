"""The fast-zero probe: does a server advertise fast zero, and is its fast zero really fast?

One libnbd connection does, on ranges of `length` bytes, each step timed with its flush:

    fresh ranges (never written):  zero, fast zero, trim, write
    a written range:               write (overwrite), zero, fast zero, trim (refilled before each)

and every range that was zeroed is read back: it must read as zeroes. The verdict compares
the zeroes of the *written* range with the overwrite of it (fresh sparse ranges are cheap
to zero on almost any storage; the question is the range that holds data):

    unsafe               a zero answered success and does not read back as zeroes: overrides the rest
    fast                 fast zero advertised, accepted, and cheap
    advertised-but-slow  fast zero accepted but about as dear as writing: what the flag exists to prevent
    refused-but-cheap    fast zero refused (ENOTSUP) although a plain zero is cheap: a lost opportunity
    refused-quickly      fast zero refused, and a plain zero is indeed dear: the flag doing its job
    not-advertised-cheap no fast zero advertised, and a plain zero is cheap (the opportunity a client cannot see)
    not-advertised-dear  no fast zero advertised, and a plain zero costs what writing does
    no-zero              no write-zeroes at all

(The zero audit, lab.nbd.audit, asks the same of every request size and flag, and judges "cheap" by
what the storage did; the probe is its quick, timed sketch.)

"Cheap" is at most CHEAP_RATIO (half) of the overwrite's time. Bounded: at most MAX_LENGTH per
range (four ranges), and a deadline after which the probe stops and says so.
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.spec import ServerSpec, SpecError, build_spec
from lab.domain.units import format_size
from lab.host import storage
from lab.host.places import Places
from lab.nbd import backends
from lab.nbd.backends import Machine
from lab.nbd.handle import close_handle
from lab.nbd.servers import Server

VERDICTS = ("unsafe", "fast", "advertised-but-slow", "refused-but-cheap", "refused-quickly", "not-advertised-cheap",
            "not-advertised-dear", "no-zero")
CHEAP_RATIO = 0.5  # a zero costing at most half an overwrite is cheap; about as much or more is not
REPEATS = 3
DEFAULT_LENGTH = 64 << 20
MAX_LENGTH = 256 << 20
MIN_LENGTH = 1 << 20
DEFAULT_DEADLINE_S = 120.0
REQUEST_MAX = 32 << 20  # qemu's NBD client limit; servers may lower it (block size maximum)
FILL = 0xA5
# What a probe's server is, unless told otherwise: the real storage at full speed.
PROBE_SERVER_DEFAULTS = {"zeromode": "plugin", "fastzeromode": "default", "delay_write": 0, "delay_zero": 0,
                         "maxdata": "32M", "noextents": False, "pattern": "empty"}


class ProbeError(RuntimeError):
    pass


@dataclass
class Step:
    range: str  # "fresh" or "written"
    op: str  # "write", "zero", "fast-zero", "trim"
    offset: int
    length: int
    outcome: str = "ok"  # "ok", "refused" (ENOTSUP), "not-advertised" (not sent), "error"
    seconds: float | None = None  # the request(s) plus a flush
    requests: int = 0
    error: str | None = None
    reads_zero: bool | None = None  # checked after every zero that succeeded
    tries_ms: list[float] = field(default_factory=list)  # written range: every try (the fastest is `seconds`)
    first_nonzero: int | None = None  # the big zero: where the read-back found data left

    @property
    def mib_per_s(self) -> float | None:
        if not self.seconds or self.outcome != "ok":
            return None
        return round(self.length / (1 << 20) / self.seconds, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ms": None if self.seconds is None else round(self.seconds * 1000, 3),
                "mib_per_s": self.mib_per_s}


@dataclass
class _Run:
    h: Any
    length: int
    deadline: float
    can_flush: bool
    chunk: int
    steps: list[Step] = field(default_factory=list)
    cancel: threading.Event | None = None

    def check_time(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ProbeError("the probe was cancelled")
        if time.monotonic() > self.deadline:
            raise ProbeError("the probe ran out of time (deadline reached); try a smaller --length")

    def step(self, rng: str, op: str, offset: int, advertised: bool = True) -> Step:
        import nbd

        s = Step(rng, op, offset, self.length)
        self.steps.append(s)
        if not advertised:
            s.outcome = "not-advertised"
            return s
        t0 = time.perf_counter()
        try:
            for o in range(offset, offset + self.length, self.chunk):
                self.check_time()
                n = min(self.chunk, offset + self.length - o)
                if op == "write":
                    self.h.pwrite(_fill(n), o)
                elif op == "zero":
                    self.h.zero(n, o)
                elif op == "fast-zero":
                    self.h.zero(n, o, flags=nbd.CMD_FLAG_FAST_ZERO)
                else:
                    self.h.trim(n, o)
                s.requests += 1
            if self.can_flush:
                self.h.flush()
        except nbd.Error as e:
            s.outcome = "refused" if e.errnum in (errno.ENOTSUP, errno.EOPNOTSUPP) else "error"
            s.error = errno.errorcode.get(e.errnum or 0, str(e))
            s.requests += 1
        s.seconds = time.perf_counter() - t0
        if op in ("zero", "fast-zero") and s.outcome == "ok":
            s.reads_zero = self.reads_zero(offset)
        return s

    def reads_zero(self, offset: int) -> bool:
        for o in range(offset, offset + self.length, self.chunk):
            self.check_time()
            n = min(self.chunk, offset + self.length - o)
            if self.h.pread(n, o) != bytes(n):
                return False
        return True

    def refill(self, offset: int) -> None:
        for o in range(offset, offset + self.length, self.chunk):
            n = min(self.chunk, offset + self.length - o)
            self.h.pwrite(_fill(n), o)
        if self.can_flush:
            self.h.flush()


_FILL_CACHE: dict[int, bytes] = {}


def _fill(n: int) -> bytes:
    if n not in _FILL_CACHE:
        _FILL_CACHE[n] = bytes([FILL]) * n
    return _FILL_CACHE[n]


def probe_uri(uri: str, length: int = DEFAULT_LENGTH, deadline_s: float = DEFAULT_DEADLINE_S,
              cancel: threading.Event | None = None) -> dict[str, Any]:
    """Probe the NBD export at `uri` (it is written: its first 4 x length bytes are lost); a set
    `cancel` stops it between requests (ProbeError)."""
    import nbd

    if not MIN_LENGTH <= length <= MAX_LENGTH or length % 4096:
        raise ProbeError(f"length must be a multiple of 4 KiB between {format_size(MIN_LENGTH)} and "
                         f"{format_size(MAX_LENGTH)} (got {length})")
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
        flags = read_flags(h, length)
        r = _Run(h, length, time.monotonic() + deadline_s, flags["can_flush"],
                 min(REQUEST_MAX, flags["block_size_max"] or REQUEST_MAX), cancel=cancel)
        t0 = time.perf_counter()
        run_steps(r, flags)
        total = time.perf_counter() - t0
    finally:
        close_handle(h)
    verdict, why, figures = decide(r.steps, flags)
    return {"flags": flags, "length": length, "results": [s.to_dict() for s in r.steps], "verdict": verdict,
            "why": why, "figures": figures, "problems": problems(r.steps), "all_zero_ranges_read_zero":
            all(s.reads_zero for s in r.steps if s.reads_zero is not None), "seconds": round(total, 3)}


def read_flags(h: Any, length: int) -> dict[str, Any]:
    """What the export advertises; ProbeError if the probe cannot write its 4 ranges there."""
    import nbd

    size = h.get_size()
    if size < 4 * length:
        raise ProbeError(f"the export ({format_size(size)}) is smaller than the probe's 4 ranges of "
                         f"{format_size(length)}")
    if h.is_read_only():
        raise ProbeError("the export is read-only: the probe writes")
    return {
        "size": size,
        "can_zero": bool(h.can_zero()),
        "can_fast_zero": bool(h.can_fast_zero()),
        "can_trim": bool(h.can_trim()),
        "can_flush": bool(h.can_flush()),
        "block_size_min": int(h.get_block_size(nbd.SIZE_MINIMUM)),
        "block_size_preferred": int(h.get_block_size(nbd.SIZE_PREFERRED)),
        "block_size_max": int(h.get_block_size(nbd.SIZE_MAXIMUM)),
    }


def run_steps(r: _Run, flags: dict[str, Any]) -> None:
    z, fz, tr = flags["can_zero"], flags["can_zero"] and flags["can_fast_zero"], flags["can_trim"]
    length = r.length
    r.step("fresh", "zero", 0, z)
    r.step("fresh", "fast-zero", length, fz)
    r.step("fresh", "trim", 2 * length, tr)
    w = 3 * length
    r.step("fresh", "write", w)
    # The written range decides the verdict: each step REPEATS times (refilled before
    # each), the fastest kept, so one stall on a busy machine does not make the verdict.
    for op, advertised in (("write", True), ("zero", z), ("fast-zero", fz), ("trim", tr)):
        tries = []
        for _ in range(REPEATS if advertised else 1):
            if op != "write":
                r.refill(w)
            tries.append(r.step("written", op, w, advertised))
            if tries[-1].outcome != "ok":
                break
        r.steps = [st for st in r.steps if st not in tries] + [_best(tries)]
    if z:
        r.steps.append(big_zero(r, 4 * length))


def problems(steps: list[Step]) -> list[str]:
    out = []
    for s in steps:
        if s.reads_zero is False:
            where = f" (data left from offset {format_size(s.first_nonzero)})" if s.first_nonzero is not None else ""
            out.append(f"{s.range} {s.op} of {format_size(s.length)} at {s.offset} answered success but does not "
                       f"read back as zeroes{where}")
        if s.outcome == "error":
            out.append(f"{s.range} {s.op} failed: {s.error}")
    return out


def big_zero(r: _Run, n: int) -> Step:
    """All four ranges filled, then zeroed by ONE request, then read back.

    A correctness check, not a timing: a server may split a large zero internally and get
    it wrong (nbd-server 3.24 answers success having zeroed only the first 64 MiB)."""
    import nbd

    saved, r.length = r.length, n
    try:
        r.refill(0)
        s = Step("whole", "zero", 0, n, requests=1)
        t0 = time.perf_counter()
        try:
            r.h.zero(n, 0)
            if r.can_flush:
                r.h.flush()
        except nbd.Error as e:
            s.outcome = "refused" if e.errnum in (errno.ENOTSUP, errno.EOPNOTSUPP) else "error"
            s.error = errno.errorcode.get(e.errnum or 0, str(e))
        s.seconds = time.perf_counter() - t0
        if s.outcome == "ok":
            s.first_nonzero = first_nonzero(r, n)
            s.reads_zero = s.first_nonzero is None
        return s
    finally:
        r.length = saved


def first_nonzero(r: _Run, n: int) -> int | None:
    step = 1 << 20
    for o in range(0, n, step):
        r.check_time()
        m = min(step, n - o)
        if r.h.pread(m, o) != bytes(m):
            return o
    return None


def _best(tries: list[Step]) -> Step:
    ok = [t for t in tries if t.outcome == "ok" and t.seconds is not None]
    if not ok:
        return tries[-1]
    best = min(ok, key=lambda t: t.seconds or 0.0)
    best.tries_ms = [round((t.seconds or 0) * 1000, 3) for t in tries]
    best.reads_zero = None if any(t.reads_zero is None for t in ok) else all(t.reads_zero for t in ok)
    return best


def _find(steps: list[Step], rng: str, op: str) -> Step | None:
    return next((s for s in steps if s.range == rng and s.op == op), None)


def decide(steps: list[Step], flags: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The verdict, a sentence saying why, and the figures it rests on (pure: testable alone)."""
    write = _find(steps, "written", "write")
    zero = _find(steps, "written", "zero")
    fast = _find(steps, "written", "fast-zero")
    write_s = write.seconds if write and write.outcome == "ok" else None

    def ratio(s: Step | None) -> float | None:
        if s is None or s.outcome != "ok" or not s.seconds or not write_s:
            return None
        return round(s.seconds / write_s, 4)

    figures = {"write_ms": _ms(write), "zero_ms": _ms(zero), "fast_zero_ms": _ms(fast),
               "zero_vs_write": ratio(zero), "fast_zero_vs_write": ratio(fast), "cheap_ratio": CHEAP_RATIO}
    verdict, why = _before_speed(steps, flags, ratio(zero)) or _speed(fast, ratio(zero), ratio(fast))
    return verdict, why, figures


def _before_speed(steps: list[Step], flags: dict[str, Any], zr: float | None) -> tuple[str, str] | None:
    """Safety first (a zero that answered success and left data behind), then what is not advertised."""
    wrong = [s for s in steps if s.reads_zero is False]
    if wrong:
        return "unsafe", f"{problems(wrong)[0]}: the server acknowledged a zero it did not do"
    if not flags.get("can_zero"):
        return "no-zero", "no write-zeroes at all: a client must write zero bytes"
    if not flags.get("can_fast_zero"):
        cheap = zr is not None and zr <= CHEAP_RATIO
        return f"not-advertised-{'cheap' if cheap else 'dear'}", \
            f"fast zero not advertised; a plain zero of written data is {'cheap' if cheap else 'as dear as writing'}" \
            f" ({_pct(zr)} of an overwrite)"
    return None


def _speed(fast: Step | None, zr: float | None, fr: float | None) -> tuple[str, str]:
    """The verdict of an advertised fast zero: accepted or refused, cheap or dear."""
    zero_cheap = zr is not None and zr <= CHEAP_RATIO
    if fast is not None and fast.outcome == "refused":
        if zero_cheap:
            return "refused-but-cheap", f"fast zero refused although a plain zero costs {_pct(zr)} " \
                                        "of an overwrite: a lost opportunity"
        return "refused-quickly", f"fast zero refused in {_ms(fast)} ms; a plain zero costs {_pct(zr)} " \
                                  "of an overwrite: the refusal saved that"
    if fr is None:
        return f"not-advertised-{'cheap' if zero_cheap else 'dear'}", \
            f"fast zero advertised but failed ({fast.error if fast else 'not run'})"
    if fr <= CHEAP_RATIO:
        return "fast", f"fast zero accepted and cheap: {_pct(fr)} of an overwrite"
    return "advertised-but-slow", f"fast zero accepted but costs {_pct(fr)} of an overwrite"


def _ms(s: Step | None) -> float | None:
    return None if s is None or s.seconds is None else round(s.seconds * 1000, 3)


def _pct(r: float | None) -> str:
    return "?" if r is None else f"{r * 100:.0f}%"


def probe_spec(fields: dict[str, Any], length: int = DEFAULT_LENGTH, limits: Limits | None = None,
               places: Places | None = None) -> ServerSpec:
    """The server a probe of `fields` starts (probe defaults: zeroing passed through, no delays), or
    SpecError naming the field, before anything starts."""
    raw = {**PROBE_SERVER_DEFAULTS, "size": 4 * length, **{k: v for k, v in fields.items() if v is not None}}
    spec = build_spec(raw, limits or DEFAULT_LIMITS, Machine(places))
    if spec.size < 4 * length:
        raise SpecError("size", f"must hold the probe's 4 ranges of {format_size(length)} "
                                f"(at least {format_size(4 * length)}; got {format_size(spec.size)})")
    return spec


def probe_server(fields: dict[str, Any], length: int = DEFAULT_LENGTH, deadline_s: float = DEFAULT_DEADLINE_S,
                 limits: Limits | None = None, places: Places | None = None,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
    """Start a server from `fields` (see probe_spec), probe it, stop it. `limits` and `places`
    (lab.host.places.Places) come from the driver's settings; a set `cancel` stops it (ProbeError)."""
    spec = probe_spec(fields, length, limits, places)
    t0 = time.perf_counter()
    with Server(spec, places=places, limits=limits or DEFAULT_LIMITS) as srv:
        out = probe_uri(srv.uri, length, deadline_s, cancel)
        server = {**spec.to_dict(), "real_server": srv.backend_kind.info(), "proxy_cost": srv.proxy_cost}
    return {"server": server, **out, "wall_s": round(time.perf_counter() - t0, 3)}


def table(results: list[dict[str, Any]]) -> str:
    """Rows for docs/servers.md and the CLI: one per probed server."""
    head = ("| server | zero | fast zero | trim | write (written) | zero | fast zero | trim | one big zero "
            "| verdict |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for p in results:
        f = p["flags"]
        by = {(s["range"], s["op"]): s for s in p["results"]}

        def cell(rng: str, op: str, by: dict = by) -> str:
            s = by.get((rng, op))
            if s is None:
                return "-"
            if s["outcome"] != "ok":
                return s["outcome"] + (f" ({s['ms']:.1f} ms)" if s["ms"] is not None else "")
            return f"{s['ms']:.1f} ms"

        lines.append("| " + " | ".join([
            label(p["server"]), _yn(f["can_zero"]), _yn(f["can_fast_zero"]), _yn(f["can_trim"]),
            cell("written", "write"), cell("written", "zero"), cell("written", "fast-zero"),
            cell("written", "trim"), big(by.get(("whole", "zero"))), f"**{p['verdict']}**"]) + " |")
    return "\n".join(lines)


def big(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    if s["outcome"] != "ok":
        return s["outcome"]
    if s["reads_zero"]:
        return f"reads 0 ({format_size(s['length'])})"
    return f"**WRONG**: data left from {format_size(s['first_nonzero'])}"


def label(server: dict[str, Any]) -> str:
    kind = server.get("kind", "nbdkit")
    what = f"nbdkit {server.get('plugin', 'memory')}" if kind == "nbdkit" else kind
    if kind == "qemu-nbd":
        what += f" {server.get('disk_format', 'raw')}"
    return what + (f" on {server['storage']}" if server.get("storage") else "")


def _yn(v: bool) -> str:
    return "yes" if v else "no"


def matrix(places: Places | None = None) -> list[dict[str, Any]]:
    """Every available kind x storage worth probing (docs/servers.md's table); external is left out."""
    k_ok = {k for k, a in backends.availability().items() if a["available"]}
    stores = [s for s, a in storage.availability(places).items() if a["available"]]
    out: list[dict[str, Any]] = [{"kind": "nbdkit", "plugin": "memory"}]
    out += [{"kind": "nbdkit", "plugin": "file", "storage": s} for s in stores]
    if "qemu-nbd" in k_ok:
        out += [{"kind": "qemu-nbd", "disk_format": "raw", "storage": s} for s in stores]
        out += [{"kind": "qemu-nbd", "disk_format": "qcow2", "storage": s} for s in stores if s != "blockdev"]
    if "nbd-server" in k_ok:
        out += [{"kind": "nbd-server", "storage": s} for s in stores]
    return out
