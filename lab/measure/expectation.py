"""A calibrated expectation beside the floor: what a copy should take on *this* machine.

The floor (`lab.domain.floor.predict_seconds`) counts only the injected sleeps. Everything else a
copy costs is, to a good approximation, linear in things the lab counts exactly:

    expected = d x delays            (the floor; d = 1 for a client with one request in flight)
             + a_w x wire requests   (a round trip: client, socket, nbdkit's core and filters)
             + a_b x backend requests (blocksize split, the plugin's work, the debug lines)
             + a_s x sleeps          (the delay filter's timer overshoot, per sleeping request)
             + c   x MiB stored      (the socket, then the plugin copying into fresh memory)
             + c_w x min(MiB stored, WARM_MIB)  (a fresh server's first MiB cost more: warm-up)
             + c_z x MiB stored, if writes sleep (data that waited out a delay is out of cache)
             + k                     (connect, handshake, flush, a binary's start and exit)

Why the per-byte cost has three terms (issue 12; figures in docs/benchmarks.md): version 2 fitted
one per-MiB coefficient on copies of at most 48 MiB, and bandwidth-bound 256 MiB-1 GiB copies
then ran at 0.68-0.91 of expected. Small copies cost more per MiB than large ones: nbdkit's CPU
per MiB stored (per-thread schedstat, 1 MiB writes) is ~1.0 ms for a ~16 MiB stretch early in
a fresh server's life and ~0.6 ms after it, and the client warms up likewise; a least-squares
fit on relative error lets the many small points set the rate, so it came out 1.5x too high.
Bytes that wait out a sleep cost more too (1 MiB writes: ~1.0 ms per MiB beyond a 2 ms sleep
against ~0.8 back to back, nbdkit's CPU per MiB +10%: a CPU woken from idle, data out of cache).
So the plan now measures the steady rate on a large copy,
and `warm_mib` and `slept_mib` are fitted beside it (a term the data does not need comes out 0).
Bytes are counted where they are stored (the plugin's writes): a zero the server emulates is
stored as written zeroes, which cost memory like any data.

The coefficients are per client kind (qemu-img, nbdcopy, an era client at queue depth 1 or
deeper) and server build (one process, or the two-process chain), fitted here (least squares on
relative error, coefficients kept non-negative) to what lab.measure.calibration measured, and
cached in the data dir under a fingerprint of the machine and the tool versions: a different
machine or nbdkit means a new calibration. This module is the model only: it runs no copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.host.places import Places, resolve

VERSION = 3  # 3: "mib" is MiB stored (was: the log's writes); warm_mib and slept_mib added
MiB = 1 << 20
WARM_MIB = 32  # a fresh server's first MiB: measured slower per MiB up to about this far into a copy
TERMS = ("fixed", "wire_requests", "backend_requests", "sleeps", "mib", "warm_mib", "slept_mib", "delays")
# what each term is called in a breakdown
GROUPS = {"delays": "delays_s", "wire_requests": "per_request_s", "backend_requests": "per_request_s",
          "sleeps": "per_request_s", "mib": "per_byte_s", "warm_mib": "per_byte_s",
          "slept_mib": "per_byte_s", "fixed": "fixed_s"}


@dataclass(frozen=True)
class Kind:
    client: str  # the client the calibration runs use
    queue_depth: int
    build: str  # "single" | "chain"
    parallel: bool

    @property
    def key(self) -> str:
        return kind_key(self.client, self.queue_depth, self.build)


def client_class(client: str, queue_depth: int) -> str:
    """qemu-img and nbdcopy are themselves; every era client shares one libnbd engine."""
    if client in ("qemu-img", "nbdcopy"):
        return client
    return "era-q1" if queue_depth <= 1 else "era-qN"


def kind_key(client: str, queue_depth: int, build: str) -> str:
    return f"{client_class(client, queue_depth)}/{build}"


KINDS = (
    Kind("qemu-img", 1, "single", False),
    Kind("nbdcopy", 1, "single", True),
    Kind("qemu-2.8", 1, "single", False),
    Kind("qemu-2.8", 16, "single", True),
    Kind("qemu-2.8", 1, "chain", False),
)


@dataclass
class Fit:
    key: str
    coef: dict[str, float]
    points: list[dict[str, Any]] = field(default_factory=list)  # features, measured, fitted
    # the same model fitted to the CPU the run's own processes used (no delay term: a sleep costs none)
    cpu_coef: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max((abs(p["fitted_s"] / p["measured_s"] - 1) for p in self.points), default=0.0)


@dataclass
class Calibration:
    fingerprint: str
    machine: dict[str, Any]
    fits: dict[str, Fit]
    created_at: float = field(default_factory=time.time)
    took_s: float = 0.0
    load_before: float = 0.0
    version: int = VERSION

    @property
    def contended(self) -> tuple[int, int]:
        """(points measured while others used the CPU, all points): a noisy calibration says so."""
        pts = [p for f in self.fits.values() for p in f.points]
        return sum(1 for p in pts if p.get("contended")), len(pts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, f in self.fits.items():
            d["fits"][k]["worst"] = round(f.worst, 4)
        d["contended_points"], d["points"] = self.contended
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        fits = {k: Fit(v["key"], v["coef"], v.get("points", []), v.get("cpu_coef", {})) for k, v in d["fits"].items()}
        return cls(d["fingerprint"], d["machine"], fits, d.get("created_at", 0.0), d.get("took_s", 0.0),
                   d.get("load_before", 0.0), d.get("version", 0))

    def expect(self, client: str, queue_depth: int, build: str, features: dict[str, float]) -> Expectation | None:
        fit = self.fits.get(kind_key(client, queue_depth, build)) or self.fits.get(kind_key(client, queue_depth,
                                                                                            "single"))
        if fit is None:
            return None
        parts = {g: 0.0 for g in ("delays_s", "per_request_s", "per_byte_s", "fixed_s")}
        for term in TERMS:
            parts[GROUPS[term]] += fit.coef.get(term, 0.0) * features.get(term, 0.0)
        total = sum(parts.values())
        cpu = sum(c * features.get(t, 0.0) for t, c in fit.cpu_coef.items()) if fit.cpu_coef else None
        return Expectation(round(total, 4), {k: round(v, 4) for k, v in parts.items()}, fit.key, self.fingerprint,
                           None if cpu is None else round(cpu, 4))


@dataclass(frozen=True)
class Expectation:
    expected_s: float
    breakdown: dict[str, float]  # delays_s, per_request_s, per_byte_s, fixed_s (sum = expected_s)
    calibration: str  # the coefficient set used, e.g. "era-q1/single"
    fingerprint: str
    own_cpu_s: float | None = None  # the CPU the run's own processes should use (None: not calibrated for it)


# --- features of a finished run -----------------------------------------------------------


def features(spec: Any, backend: Any, server_log: Any, floor_s: float) -> dict[str, float]:
    """The model's inputs from a run's exact counts (backend: BackendCounts, server_log: WireCounts).

    Bytes stored are the plugin's writes (a zero the server emulates is stored as written zeroes,
    wherever in the stack it was emulated; a plugin zero stores nothing). Every backend write
    sleeps when delay_write is set, so then all stored bytes waited."""
    wire = server_log.write + server_log.zero + server_log.trim + server_log.flush
    sleeps = (backend.write_ops if spec.delay_write > 0 else 0) + (backend.zero_ops if spec.delay_zero > 0 else 0)
    stored = backend.write_bytes / MiB
    return {"fixed": 1.0, "wire_requests": float(wire),
            "backend_requests": float(backend.write_ops + backend.zero_ops + backend.trim_ops + backend.flush_ops),
            "sleeps": float(sleeps), "mib": stored, "warm_mib": min(stored, float(WARM_MIB)),
            "slept_mib": stored if spec.delay_write > 0 else 0.0, "delays": floor_s}


# --- fitting ---------------------------------------------------------------------------------


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None if singular."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-15:
            return None
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    return [m[i][n] / m[i][i] for i in range(n)]


def _least_squares(points: Sequence[dict[str, Any]], free: list[str], fixed: dict[str, float]) -> list[float]:
    """The free terms minimising the relative error, by the normal equations."""
    rows, rhs = [], []
    for p in points:
        t = p["measured_s"]
        rows.append([p["features"].get(k, 0.0) / t for k in free])
        rhs.append((t - sum(c * p["features"].get(k, 0.0) for k, c in fixed.items())) / t)
    n = len(free)
    ata = [[sum(r[i] * r[j] for r in rows) + (1e-9 if i == j else 0.0) for j in range(n)] for i in range(n)]
    atb = [sum(r[i] * y for r, y in zip(rows, rhs, strict=True)) for i in range(n)]
    return _solve(ata, atb) or [0.0] * n  # the ridge touch keeps a near-collinear pair finite


def fit(points: Sequence[dict[str, Any]], fixed: dict[str, float]) -> dict[str, float]:
    """Least squares on relative error: minimise sum((model - t) / t)^2 over the free terms,
    with `fixed` terms held (e.g. delays = 1 for a serial client); negative terms are dropped."""
    free = [t for t in TERMS if t not in fixed]
    while True:
        sol = _least_squares(points, free, fixed) if free else []
        neg = [k for k, v in zip(free, sol, strict=True) if v < 0]
        if not neg:
            return {**fixed, **dict(zip(free, sol, strict=True))}
        worst = min(neg, key=lambda k: sol[free.index(k)])
        fixed = {**fixed, worst: 0.0}
        free.remove(worst)


# --- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from lab.nbd.clients.real import version
    from lab.nbd.servers import nbdkit_version

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import nbd

        libnbd = str(nbd.NBD().get_version())
    except Exception:
        libnbd = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "nbdkit": nbdkit_version(), "qemu-img": version("qemu-img"), "nbdcopy": version("nbdcopy"),
            "libnbd": libnbd, "calibration_version": VERSION}


def fingerprint(m: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(places: Places | None = None) -> Path:
    """The places' calibration file (LAB_CALIBRATION_FILE, else calibration.json in the data dir)."""
    return resolve(places).calibration_file


def save(cal: Calibration, places: Places | None = None) -> None:
    path = cache_path(places)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_dict(), indent=1))
    os.replace(tmp, path)
    with _lock:
        _cached[path] = cal  # a new calibration replaces the one in use at once


_lock = threading.Lock()
_cached: dict[Path, Calibration] = {}  # per calibration file


def load(fingerprint_now: str | None = None, places: Places | None = None) -> Calibration | None:
    """The cached calibration if it was made on this machine with these tools, else None."""
    path = cache_path(places)
    with _lock:
        fp = fingerprint_now or _fingerprint_now()
        hit = _cached.get(path)
        if hit is not None and hit.fingerprint == fp:
            return hit
        try:
            d = json.loads(path.read_text())
            cal = Calibration.from_dict(d)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if cal.fingerprint != fp or cal.version != VERSION:
            return None
        _cached[path] = cal
        return cal


_fp_now: str | None = None


def _fingerprint_now() -> str:
    global _fp_now
    if _fp_now is None:
        _fp_now = fingerprint(machine())
    return _fp_now


def forget() -> None:
    with _lock:
        _cached.clear()


def expectation(client: str, queue_depth: int, build: str, spec: Any, backend: Any, server_log: Any,
                floor_s: float, places: Places | None = None) -> Expectation | None:
    """The calibrated expectation of a finished run, or None when this machine is not calibrated."""
    cal = load(places=places)
    if cal is None or backend is None or server_log is None:
        return None
    return cal.expect(client, queue_depth, build, features(spec, backend, server_log, floor_s))
