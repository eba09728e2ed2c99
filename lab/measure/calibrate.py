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

`calibrate()` measures the coefficients per client kind (qemu-img, nbdcopy, an era client at
queue depth 1 or deeper) and server build (one process, or the two-process chain) with
runs chosen so each term dominates one of them (a least-squares fit on relative error,
coefficients kept non-negative), and caches them in the data dir under a fingerprint of the
machine and the tool versions: a different machine or nbdkit means a new calibration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lab.host.places import Core, Places, resolve

VERSION = 3  # 3: "mib" is MiB stored (was: the log's writes); warm_mib and slept_mib added
MiB = 1 << 20
WARM_MIB = 32  # a fresh server's first MiB: measured slower per MiB up to about this far into a copy
TERMS = ("fixed", "wire_requests", "backend_requests", "sleeps", "mib", "warm_mib", "slept_mib", "delays")
# what each term is called in a breakdown
GROUPS = {"delays": "delays_s", "wire_requests": "per_request_s", "backend_requests": "per_request_s",
          "sleeps": "per_request_s", "mib": "per_byte_s", "warm_mib": "per_byte_s",
          "slept_mib": "per_byte_s", "fixed": "fixed_s"}

REPEAT = 2  # each plan point twice (see _chosen for which run counts)
EXTRA = 1  # ... and once more if all were contended (others used the CPU): a quieter moment may come,
EXTRA_UNTIL_S = 40.0  # while the whole calibration has taken less than this (it must stay under a minute)


class Point(NamedTuple):
    """One calibration geometry; `repeat` runs of it, the fastest counts."""

    size: str
    pattern: str
    maxdata: str
    delay_write_ms: int
    delay_zero_ms: int
    repeat: int = REPEAT


# Each point makes one term large. None of them is a geometry of the case study or of
# bench/fidelity.py's sweep.
PLAN_SERIAL = (
    Point("48M", "full", "1M", 0, 0),  # bytes, most of them in the warm-up
    # bytes at full speed: the steady per-MiB rate that every large copy extrapolates from, so the
    # longest point, and five runs, the median counting (a large copy varies by +-5% run to run; the
    # median of three still moved the rate by up to 9% between calibrations)
    Point("384M", "full", "1M", 0, 0, REPEAT + 3),
    Point("64M", "full", "1M", 1, 0),  # bytes that each waited out a sleep
    Point("8M", "full", "4k", 0, 0),  # backend requests (2048 of 4k)
    Point("12M", "alternate:64k", "64k", 0, 0),  # wire requests (96 writes + 96 zeroes)
    Point("12M", "full", "64k", 1, 1),  # sleeps (192 of 1 ms)
    Point("2M", "full", "256k", 0, 0),  # fixed
    # mixed points: more equations than terms, so one disturbed run cannot set a coefficient alone
    Point("24M", "alternate:256k", "256k", 2, 1),
    Point("32M", "full", "256k", 0, 0),
    Point("6M", "alternate:1M", "64k", 4, 2),
)
# A parallel client overlaps the sleeps: the delay factor is fitted too, from two delay levels.
PLAN_PARALLEL = (*PLAN_SERIAL, Point("12M", "full", "64k", 5, 5))


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


# --- calibrating -------------------------------------------------------------------------------


class Cancelled(Exception):
    pass


def _run_once(kind: Kind, point: Point, cancel: threading.Event, places: Places | None = None) -> Any:
    """One calibration copy on a fresh server (lab.domain.run.Run, succeeded), or Cancelled."""
    from lab.domain.run import Run
    from lab.measure.execute import execute
    from lab.nbd.servers import Server

    spec = point_spec(point)
    if cancel.is_set():
        raise Cancelled()
    with Server(spec, build=kind.build, places=places) as srv:
        run = execute(Run(client=kind.client, server=spec, queue_depth=kind.queue_depth), server=srv,
                      cancel=cancel, timeout=120, core=Core(places))
    if cancel.is_set():
        raise Cancelled()
    if run.status != "succeeded":
        raise RuntimeError(f"calibration run {kind.key} {tuple(point[:5])} failed: {run.error}")
    return run


def point_spec(point: Point) -> Any:
    from lab.domain.spec import build_spec

    return build_spec({"zeromode": "plugin", "fastzeromode": "none", "size": point.size, "pattern": point.pattern,
                       "maxdata": point.maxdata, "delay_write": f"{point.delay_write_ms}ms",
                       "delay_zero": f"{point.delay_zero_ms}ms"})


def _own_cpu(run: Any) -> float:
    return (run.contention or {}).get("own_cpu_s") or 0.0


def _chosen(runs: list[Any]) -> Any:
    """The run that stands for a point: the fastest of two (the less disturbed), the median of three or
    more (a large copy varies by +-5% from run to run even on a quiet machine), among the runs whose own
    processes used no more than SLOW_PATH_FACTOR x the CPU of the point's cheapest run (the repeats of a
    point do the same work; one that burned far more took the machine's slow copy path, lab.measure.contention)."""
    from lab.measure.contention import burned_too_much

    least = min(_own_cpu(r) for r in runs)
    clean = [r for r in runs if not burned_too_much(_own_cpu(r), least)] or runs
    ordered = sorted(clean, key=lambda r: r.duration_s)
    return ordered[0] if len(ordered) < 3 else ordered[(len(ordered) - 1) // 2]


def _measure_plan(kind: Kind, plan: Sequence[Point], cancel: threading.Event, extra_ok: Callable[[], bool],
                  places: Places | None = None) -> list[dict[str, Any]]:
    """Every point of `plan`, its repeats back to back. A large copy's time depends on what ran just
    before it (measured: 384 MiB right after another 384 MiB copy 0.275-0.295 s, after small copies
    0.30-0.34 s, on a quiet machine); the steady rate is taken in the first state, which matched the
    geometry sweep's large rows (they mostly follow large rows) better in the runs made here."""
    points = []
    for point in plan:
        done: list[Any] = []
        while len(done) < point.repeat or (len(done) < point.repeat + EXTRA and all(r.contended for r in done)
                                           and extra_ok()):
            done.append(_run_once(kind, point, cancel, places))
        run = _chosen(done)
        points.append({"geometry": list(point[:5]), "measured_s": run.duration_s, "contended": bool(run.contended),
                       "own_cpu_s": (run.contention or {}).get("own_cpu_s"),
                       "runs_s": [r.duration_s for r in done], "runs_cpu_s": [_own_cpu(r) for r in done],
                       "features": features(point_spec(point), run.backend, run.server_log, run.predicted_s or 0.0)})
    return points


def calibrate(progress: Callable[[str], None] | None = None, kinds: Sequence[Kind] = KINDS,
              cancel: threading.Event | None = None, places: Places | None = None) -> Calibration:
    """Measure every kind's coefficients (about 35-45 s on 2 cores) and cache them; a set
    `cancel` stops it between (or inside) runs with Cancelled, the cache untouched."""
    say = progress or (lambda _m: None)
    cancel = cancel or threading.Event()
    m = machine()
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    fits: dict[str, Fit] = {}
    for kind in kinds:
        plan = PLAN_PARALLEL if kind.parallel else PLAN_SERIAL
        points = _measure_plan(kind, plan, cancel, lambda: time.perf_counter() - t0 < EXTRA_UNTIL_S, places)
        for g, pt in zip(plan, points, strict=True):
            say(f"{kind.key}: {g.size} {g.pattern} maxdata {g.maxdata} delays {g.delay_write_ms}/"
                f"{g.delay_zero_ms} ms: {pt['measured_s']:.3f} s")
        coef = fit(points, {} if kind.parallel else {"delays": 1.0})
        for p in points:
            p["fitted_s"] = round(sum(coef.get(t, 0.0) * p["features"].get(t, 0.0) for t in TERMS), 4)
        cpu_points = [{**p, "measured_s": p["own_cpu_s"]} for p in points if p.get("own_cpu_s")]
        cpu = fit(cpu_points, {"delays": 0.0}) if len(cpu_points) == len(points) else {}
        fits[kind.key] = Fit(kind.key, {k: round(v, 9) for k, v in coef.items()}, points,
                             {k: round(v, 9) for k, v in cpu.items() if v})
    cal = Calibration(fingerprint(m), m, fits, took_s=round(time.perf_counter() - t0, 2), load_before=load)
    save(cal, places)
    return cal


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
