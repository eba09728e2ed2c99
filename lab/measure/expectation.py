"""A calibrated expectation beside the floor: what a copy should take on *this* machine, and how sure.

The floor (`lab.domain.floor.predict_seconds`) counts only the injected sleeps. Everything else a
copy costs is, to a good approximation, linear in things the lab counts exactly:

    expected = d x delays            (the floor; d = 1 for a client with one request in flight)
             + a_w x wire requests   (a round trip: client, socket, nbdkit's core and filters)
             + a_b x backend requests (blocksize split, the plugin's work, the debug lines)
             + a_s x sleeps          (the delay filter's timer overshoot, per sleeping request)
             + a_1 x short sleeps    (blind spot: the extra of a sleep of at most SHORT_SLEEP_MS)
             + a_l x long sleeps     (the extra of a sleep of at least LONG_SLEEP_MS)
             + c   x MiB stored      (the socket, then the plugin copying into fresh memory)
             + c_w x min(MiB stored, WARM_MIB)  (a fresh server's first MiB cost more: warm-up)
             + c_g x MiB stored past GROWN_MIB  (blind spot: a fresh server's growth past that)
             + c_s x MiB stored, if writes sleep (data that waited out a delay is out of cache)
             + c_z x zero-filled MiB the client wrote (blind spot: a client that sends holes as data)
             + k                     (connect, handshake, flush, a binary's start and exit)

Why the per-byte cost has several terms (figures in docs/benchmarks.md): small copies cost more
per MiB than large ones (nbdkit's CPU per MiB stored is ~1.0 ms for a ~16 MiB stretch early in a
fresh server's life and ~0.6 ms after it), so the steady rate comes from a large copy and the
warm-up is fitted beside it; bytes that waited out a sleep cost more (a CPU woken from idle, data
out of cache). Bytes are counted where they are stored (the plugin's writes): a zero the server
emulates is stored as written zeroes. The three blind-spot terms (docs/design.md#measurement-model)
are measured by `lab calibrate` like the others and kept only where the calibration's points need
them (lab.measure.fitting.select).

An expectation is an interval: `low_s`-`high_s` holds COVERAGE of runs. Its variable part (all but
an in-order client's sleeps) varies by a relative amount measured at calibration for the run's
regime (the points' run-to-run spread and misfit, lab.measure.fitting.spread), and its non-sleep
parts also by how far the machine may have moved since the calibration: little right after a
control measured it (the expectation's per-byte part, what the control's copy measures, is then
scaled by the control's factor, lab.measure.drift), as far as the machine's controls have shown it to
move otherwise (machine_drift; UNCORRECTED_DRIFT until they showed anything, and always for the
parts the control does not measure). A run outside its interval gets a verdict (`slower-than-model`,
`faster-than-model`) and the part most likely off (the largest variable part).

The coefficients are per client kind (qemu-img, nbdcopy, an era client at queue depth 1 or
deeper) and server build (one process, or the two-process chain), measured by
lab.measure.calibration and cached in the data dir under a fingerprint of the machine and the
tool versions: a different machine or nbdkit means a new calibration. This module runs no copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, get_args

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.layout import parse_pattern
from lab.domain.run import ModelVerdict, Regime
from lab.domain.spec import ServerSpec
from lab.host.places import Places, resolve
from lab.measure import drift, fitting

VERSION = 6  # 4: intervals, controls, the blind-spot terms; 5: the spread per regime (was per part);
# 6: long sleeps (a term and two plan points), a control scales the per-byte part only, the points'
# variance from their runs off the slow copy path, each regime's run-to-run part in the spread ("noise:...")
MiB = 1 << 20
WARM_MIB = 32  # a fresh server's first MiB: measured slower per MiB up to about this far into a copy
GROWN_MIB = 128  # past this many MiB stored, a fresh server's growth may cost another rate
SHORT_SLEEP_MS = 1.0  # a sleep this short may cost more than its timer's overshoot (1 ms rows ran 5% over)
# A sleep this long costs more than a short one beyond its length: measured on a quiet machine (8 MiB in
# 256 KiB writes, 32 sleeps, 3 runs each, 2026-12-07), the era client's time per sleep beyond the sleep
# (its bytes and fixed cost included) was, median, 0.79, 0.80, 0.86 ms at 1, 2, 5 ms delays and 0.92, 0.93
# ms at 10, 20 ms (a longer idle: plausibly a deeper CPU idle state to wake from; qemu-img's, 1.2-2.1 ms,
# too noisy to tell). The sweep's 10 and 20 ms rows ran 0.08-0.22 ms per sleep over a model fitted on
# 1-5 ms sleeps only (docs/benchmarks.md, issue 27). Not a blind spot kept by the Akaike rule: an extra
# of 0.1 ms on a 10 ms sleep is 1% of the point, below what the rule can tell from its noise, so the
# plan measures it on two points of its own and the fit keeps it at >= 0.
LONG_SLEEP_MS = 10.0
TERMS = ("fixed", "wire_requests", "backend_requests", "sleeps", "short_sleeps", "long_sleeps", "mib", "warm_mib",
         "grown_mib", "slept_mib", "zero_mib", "delays")
BLIND_SPOTS = ("zero_mib", "short_sleeps", "grown_mib")  # kept only where the calibration's points need them
# what each term is called in a breakdown
GROUPS = {"delays": "delays_s", "wire_requests": "per_request_s", "backend_requests": "per_request_s",
          "sleeps": "per_request_s", "short_sleeps": "per_request_s", "long_sleeps": "per_request_s",
          "mib": "per_byte_s", "warm_mib": "per_byte_s",
          "grown_mib": "per_byte_s", "slept_mib": "per_byte_s", "zero_mib": "per_byte_s", "fixed": "fixed_s"}
PARTS = ("delays_s", "per_request_s", "per_byte_s", "fixed_s")
# A run's regime: the part its expectation is mostly made of (fixed costs count as per-request).
REGIMES: tuple[str, ...] = get_args(Regime)
_REGIME_OF = {"delays_s": "delay-bound", "per_request_s": "per-request-bound", "fixed_s": "per-request-bound",
              "per_byte_s": "bandwidth-bound"}
VERDICTS: tuple[str, ...] = get_args(ModelVerdict)

COVERAGE = 0.90  # the share of runs an interval is built to hold
Z = NormalDist().inv_cdf(0.5 + COVERAGE / 2)
# The least the variable part of an expectation varies per regime, relative (its scatter is measured;
# this keeps a lucky calibration, whose few points happened to agree, from promising more than the
# machine keeps): a large copy varies by +-5% run to run on a quiet machine, a request's handling and a
# timer's overshoot by more. The variable part of a sleeping row (its sleeps' overshoot and wake-ups, a
# process start) varies more between minutes than two back-to-back runs of a calibration point show:
# on a quiet two-pass fidelity run (2026-12-07 16:03, docs/benchmarks.md issue 27) the variable part of
# 37 delay-bound rows landed off its expectation by a standard deviation of 18% for qemu-img and 21%
# for the era client, where that calibration's own points had said 12% and 23% (an evening calibration
# said 6% for qemu-img): hence 15% for delay-bound rows, at most 2-3% of such a row's time.
SPREAD_FLOORS = {"delay-bound": 0.15, "per-request-bound": 0.05, "bandwidth-bound": 0.03}
ABS_FLOOR_S = 0.003  # and every copy by a few ms however short (the clock, a scheduler tick)


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
    """qemu-img and nbdcopy are themselves (their variants with options too); every era client shares one
    libnbd engine."""
    from lab.domain.clients import CLIENTS

    about = CLIENTS.get(client)
    client = (about.base if about is not None and about.base else client)
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
_SERIAL = frozenset(k.key for k in KINDS if not k.parallel)


@dataclass
class Fit:
    key: str
    coef: dict[str, float]
    points: list[dict[str, Any]] = field(default_factory=list)  # features, measured, fitted
    # the same model fitted to the CPU the run's own processes used (no delay term: a sleep costs none)
    cpu_coef: dict[str, float] = field(default_factory=dict)
    # per regime, the variable part's relative standard deviation, "abs_s" the absolute one, and "noise:<regime>",
    # "noise:abs_s" their run-to-run parts alone (lab.measure.fitting.spread)
    spread: dict[str, float] = field(default_factory=dict)
    # the control point's reference: {"geometry", "runs_s", "reference_s", "spread"} (lab.measure.drift)
    control: dict[str, Any] = field(default_factory=dict)
    blind_spots: list[str] = field(default_factory=list)  # the blind-spot terms this kind's points needed

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
    def id(self) -> str:
        """This calibration (machine and moment): what a control compares with."""
        return f"{self.fingerprint}@{int(self.created_at)}"

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
        d["id"], d["coverage"] = self.id, COVERAGE
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        fits = {k: Fit(v["key"], v["coef"], v.get("points", []), v.get("cpu_coef", {}), v.get("spread", {}),
                       v.get("control", {}), v.get("blind_spots", [])) for k, v in d["fits"].items()}
        return cls(d["fingerprint"], d["machine"], fits, d.get("created_at", 0.0), d.get("took_s", 0.0),
                   d.get("load_before", 0.0), d.get("version", 0))

    def fit_for(self, client: str, queue_depth: int, build: str) -> Fit | None:
        return self.fits.get(kind_key(client, queue_depth, build)) or self.fits.get(
            kind_key(client, queue_depth, "single"))

    def expect(self, client: str, queue_depth: int, build: str, features: dict[str, float],
               control: drift.Control | None = None, runs: int = 1,
               machine_drift: float = drift.UNCORRECTED_DRIFT, control_noise: float = 0.0) -> Expectation | None:
        """The expectation of a run with these counts; its per-byte part scaled by `control`'s factor when
        given. `runs` > 1: the interval of the median of that many runs (median_variance).
        `machine_drift`: how far this machine's byte rate moves from the calibration (drift.machine_drift);
        `control_noise`: what a control misses it by beyond its runs' scatter (drift.control_noise)."""
        fit = self.fit_for(client, queue_depth, build)
        if fit is None:
            return None
        factor, moved = _correction(fit, control, machine_drift, control_noise)
        parts = _scaled(fitting.parts({t: fit.coef.get(t, 0.0) for t in TERMS}, features, GROUPS), factor)
        total = sum(parts.values())
        serial = fit.key in _SERIAL
        variable = {g: v for g, v in parts.items() if not (serial and g == "delays_s")}
        sd = _sd(fit, parts, sum(variable.values()), moved, runs)
        floor = parts["delays_s"] if serial else 0.0  # a serial client never beats its sleeps
        cpu = fitting.predict(fit.cpu_coef, features) * (factor or 1.0) if fit.cpu_coef else None
        return Expectation(
            round(total, 4), {k: round(v, 4) for k, v in parts.items()}, fit.key, self.fingerprint,
            None if cpu is None else round(cpu, 4), low_s=round(max(total - Z * sd, floor), 4),
            high_s=round(total + Z * sd, 4), regime=regime(parts), likely=max(variable, key=lambda g: variable[g]),
            machine_factor=factor, control_age_s=None if control is None else round(time.time() - control.at, 1))


# The parts a control's factor scales: what its copy measures. The control is a 128 MiB copy in 1 MiB
# requests without sleeps, about 93% bytes; the per-request and fixed costs of a sleeping row (a timer's
# overshoot, a wake-up) are other mechanisms. Measured on a quiet machine (docs/benchmarks.md, issue 27):
# between two passes ten minutes apart the controls' factors moved by -9 to -10%, while the variable
# (non-sleep) part of the 37 delay-bound rows moved by a median -3% (-15% to +20%, sd 8%): scaled by
# the factor, their expectations moved three times as far as the rows.
SCALED_PARTS = ("per_byte_s",)


def _scaled(parts: dict[str, float], factor: float | None) -> dict[str, float]:
    """The parts a control measures (SCALED_PARTS) scaled by its factor: the machine moves bytes that
    much slower (or faster) now than at its calibration."""
    return parts if factor is None else {g: v * factor if g in SCALED_PARTS else v for g, v in parts.items()}


def median_variance(runs: int) -> float:
    """The variance of the median of `runs` runs, relative to one run's (normal scatter: 1, 0.5 for two
    (their mean), 0.449 for three, 0.361, 0.287; about pi / 2n beyond)."""
    known = {1: 1.0, 2: 0.5, 3: 0.449, 4: 0.361, 5: 0.287}
    return known.get(runs, math.pi / (2 * runs)) if runs >= 1 else 1.0


def _sd(fit: Fit, parts: dict[str, float], variable: float, moved: float, runs: int = 1) -> float:
    """A run's standard deviation around its expectation (seconds): the variable part's spread for the
    run's regime, the machine's drift on the non-sleep parts (`moved` on the parts a control measures,
    _correction; UNCORRECTED_DRIFT on the others), a copy's absolute jitter. For the median of `runs` runs
    the run-to-run part of the spread and of the jitter shrinks (median_variance); the fit's error, the
    model's bias, the drift and the floors do not."""
    r = regime(parts)
    less = 1.0 - median_variance(runs)
    spread = math.sqrt(max(fit.spread.get(r, SPREAD_FLOORS[r]) ** 2 - less * fit.spread.get(f"noise:{r}", 0.0) ** 2,
                           SPREAD_FLOORS[r] ** 2))
    jitter = math.sqrt(max(fit.spread.get("abs_s", ABS_FLOOR_S) ** 2 - less * fit.spread.get("noise:abs_s", 0.0) ** 2,
                           ABS_FLOOR_S ** 2))
    measured = sum(parts[g] for g in SCALED_PARTS)
    others = sum(parts.values()) - parts["delays_s"] - measured
    # the machine moves every part at once as far as anyone knows: the two drifts add (the parts a control
    # does not measure by UNCORRECTED_DRIFT: the controls' drift is of bytes, another mechanism than a
    # sleep's wake-up or a request's round trip)
    drifted = moved * measured + drift.UNCORRECTED_DRIFT * others
    return math.sqrt((spread * variable) ** 2 + drifted ** 2 + jitter ** 2)


REFERENCE_RUNS = 6  # the control's runs at a calibration's start and end (a reference that does not say)


def reference_of(fit: Fit) -> tuple[float, int]:
    """A kind's control reference as drift.measurement_variance needs it: (spread, runs)."""
    return float(fit.control.get("spread") or 0.0), len(fit.control.get("clean_s") or []) or REFERENCE_RUNS


def _correction(fit: Fit, control: drift.Control | None, machine_drift: float = drift.UNCORRECTED_DRIFT,
                control_noise: float = 0.0) -> tuple[float | None, float]:
    """(the factor applied to the parts a control measures, None without one; how far the machine may have
    moved since the calibration for those parts, relative).

    Without a control the machine may have drifted by D, `machine_drift` (what its controls have shown,
    drift.machine_drift; UNCORRECTED_DRIFT before they showed anything). A control measures the drift as
    its factor, known to m (drift.measurement_variance, with `control_noise`). The two are weighed as
    any two measurements of one quantity (on the log scale): the factor applied is factor^w,
    w = D^2 / (D^2 + m^2), and what is left uncertain is D m / sqrt(D^2 + m^2). A precise control on a
    machine that moves (m of 4%, D of 15%) is applied almost whole; a noisy one (the reference's runs
    scattering by 23%, as one calibration's did, so m ~ 10%) on a steady machine (D of 5%) moves the
    expectation by a fifth of its factor instead of scaling a row by 1.33 that had not moved
    (docs/benchmarks.md)."""
    d2 = max(machine_drift, drift.UNCORRECTED_DRIFT) ** 2
    factor = control.factor if control is not None else None
    if control is None or factor is None or not control.clean_s:
        return None, math.sqrt(d2)
    m2 = drift.measurement_variance(control, *reference_of(fit), control_noise)
    w = d2 / (d2 + m2)
    return round(math.exp(w * math.log(factor)), 4), math.sqrt(d2 * m2 / (d2 + m2))


def regime(parts: dict[str, float]) -> str:
    """The part an expectation is mostly made of (fixed costs count as per-request)."""
    top = max(("delays_s", "per_request_s", "per_byte_s"),
              key=lambda g: parts[g] + (parts["fixed_s"] if g == "per_request_s" else 0.0))
    return _REGIME_OF[top]


@dataclass(frozen=True)
class Expectation:
    expected_s: float
    breakdown: dict[str, float]  # delays_s, per_request_s, per_byte_s, fixed_s (sum = expected_s)
    calibration: str  # the coefficient set used, e.g. "era-q1/single"
    fingerprint: str
    own_cpu_s: float | None = None  # the CPU the run's own processes should use (None: not calibrated for it)
    low_s: float | None = None  # the interval that holds COVERAGE of runs
    high_s: float | None = None
    coverage: float = COVERAGE
    regime: str | None = None  # REGIMES
    likely: str | None = None  # the part most likely off when a run falls outside (the most uncertain one)
    machine_factor: float | None = None  # the control's correction applied (None: no fresh control)
    control_age_s: float | None = None
    # this kind's newest control's factor, when it drifted beyond what the intervals allow for (None: not stale)
    stale: float | None = None

    def verdict(self, measured_s: float) -> tuple[str, str | None]:
        """(VERDICTS, the breakdown part most likely short or long; None when within)."""
        if self.high_s is not None and measured_s > self.high_s:
            return "slower-than-model", self.likely
        if self.low_s is not None and measured_s < self.low_s:
            return "faster-than-model", self.likely
        return "within", None


# --- features of a finished run -----------------------------------------------------------


def features(spec: ServerSpec, backend: BackendCounts, server_log: WireCounts, floor_s: float) -> dict[str, float]:
    """The model's inputs from a run's exact counts (backend: BackendCounts, server_log: WireCounts).

    Bytes stored are the plugin's writes (a zero the server emulates is stored as written zeroes,
    wherever in the stack it was emulated; a plugin zero stores nothing). Every backend write
    sleeps when delay_write is set, so then all stored bytes waited. Zero-filled MiB are what the
    client wrote beyond the source's data: holes sent as data (qemu 2.7, or any client when the
    server offers no write-zeroes)."""
    wire = server_log.write + server_log.zero + server_log.trim + server_log.flush
    w_sleeps = backend.write_ops if spec.delay_write > 0 else 0
    z_sleeps = backend.zero_ops if spec.delay_zero > 0 else 0
    short = ((w_sleeps if spec.delay_write <= SHORT_SLEEP_MS else 0)
             + (z_sleeps if spec.delay_zero <= SHORT_SLEEP_MS else 0))
    long = ((w_sleeps if spec.delay_write >= LONG_SLEEP_MS else 0)
            + (z_sleeps if spec.delay_zero >= LONG_SLEEP_MS else 0))
    stored = backend.write_bytes / MiB
    data = sum(n for _, n in parse_pattern(spec.pattern, spec.size))
    zero_filled = min(max(0, server_log.write_bytes - data) / MiB, stored)
    return {"fixed": 1.0, "wire_requests": float(wire),
            "backend_requests": float(backend.write_ops + backend.zero_ops + backend.trim_ops + backend.flush_ops),
            "sleeps": float(w_sleeps + z_sleeps), "short_sleeps": float(short), "long_sleeps": float(long),
            "mib": stored,
            "warm_mib": min(stored, float(WARM_MIB)), "grown_mib": max(0.0, stored - GROWN_MIB),
            "slept_mib": stored if spec.delay_write > 0 else 0.0, "zero_mib": zero_filled, "delays": floor_s}


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


def expectation(client: str, queue_depth: int, build: str, spec: ServerSpec, backend: BackendCounts | None,
                server_log: WireCounts | None, floor_s: float, places: Places | None = None,
                runs: int = 1) -> Expectation | None:
    """The calibrated expectation of a finished run, scaled by a fresh control of its kind if there
    is one, or None when this machine is not calibrated. `runs` > 1: the interval of the median of that
    many runs of this geometry."""
    if backend is None or server_log is None:
        return None
    return of_counts(client, queue_depth, build, features(spec, backend, server_log, floor_s), places, runs)


def of_counts(client: str, queue_depth: int, build: str, feats: dict[str, float], places: Places | None = None,
              runs: int = 1, corrected: bool = True) -> Expectation | None:
    """The expectation of a run with these counts (features()): scaled by a fresh control of its kind
    when `corrected` and there is one, marked stale when its kind is; None when this machine is not
    calibrated for it."""
    cal = load(places=places)
    if cal is None:
        return None
    fit = cal.fit_for(client, queue_depth, build)
    if fit is None:
        return None
    controls = drift.history(cache_path(places), cal.id)
    control = drift.fresh_among(controls, fit.key) if corrected else None
    moves, noise = _learned(cal, controls)
    exp = cal.expect(client, queue_depth, build, feats, control, runs, moves, noise)
    stale = drift.stale_among(controls).get(fit.key)
    return exp if exp is None or stale is None else replace(exp, stale=stale)


def _learned(cal: Calibration, controls: list[drift.Control]) -> tuple[float, float]:
    """What the controls measured against `cal` taught: (how far the machine's byte rate moves from it,
    beyond the controls' own error: drift.machine_drift; what a control misses that rate by beyond its
    runs' scatter: drift.control_noise)."""
    references = {k: reference_of(f) for k, f in cal.fits.items() if f.control}
    noise = drift.control_noise(controls, references)
    return drift.machine_drift(controls, references, noise), noise


def machine_drift(cal: Calibration, places: Places | None = None) -> float:
    """How far this machine's byte rate moves from `cal`, as the controls measured against it showed
    (UNCORRECTED_DRIFT until a few were measured)."""
    return _learned(cal, drift.history(cache_path(places), cal.id))[0]


def state(places: Places | None = None) -> dict[str, Any]:
    """The calibration's standing against this machine now: `stale` when a kind's newest control
    drifted beyond what the intervals allow for, with each such kind's factor, the newest controls (a
    drift table) and how far the machine's byte rate moves (machine_drift)."""
    cal = load(places=places)
    if cal is None:
        return {"stale": False, "stale_kinds": {}, "controls": [], "machine_drift": drift.UNCORRECTED_DRIFT,
                "control_noise": 0.0}
    controls = drift.history(cache_path(places), cal.id)
    kinds = drift.stale_among(controls)
    moves, noise = _learned(cal, controls)
    return {"stale": bool(kinds), "stale_kinds": kinds, "controls": [c.to_dict() for c in controls[-20:]],
            "machine_drift": moves, "control_noise": noise}
