"""The calibration procedure: the copies `lab calibrate` runs to measure the expectation model's
coefficients (lab.measure.expectation) on this machine.

Each kind (client class and server build) runs a plan of geometries chosen so each term of the
model dominates one of them; none is a geometry of the case study or of bench/fidelity.py's sweep.
Every point runs on a fresh server, through the same `execute()` as any run, so what is measured
is what a run costs. The model, its fit and its cache are lab.measure.expectation and
lab.measure.fitting; this module measures.

It also measures the control (lab.measure.drift): the steady point at small size, a few short
copies, at the start and the end of each kind's plan (the reference and its spread), and again
later, before CPU-bound runs (`before_run`), to see how far the machine has moved since.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from lab.domain.run import Run
from lab.domain.spec import ServerSpec, build_spec
from lab.host.places import Core, Places
from lab.measure import drift, fitting
from lab.measure.contention import burned_too_much, cpu_bound
from lab.measure.execute import execute
from lab.measure.expectation import (
    ABS_FLOOR_S,
    BLIND_SPOTS,
    GROUPS,
    KINDS,
    SPREAD_FLOORS,
    TERMS,
    Calibration,
    Fit,
    Kind,
    Z,
    cache_path,
    features,
    fingerprint,
    kind_key,
    load,
    machine,
    regime,
    save,
)
from lab.nbd.clients import get_client
from lab.nbd.servers import Server, topology

REPEAT = 2  # each plan point twice (see _measured for what counts)
EXTRA = 1  # ... and once more if all were contended (others used the CPU): a quieter moment may come,
EXTRA_UNTIL_S = 50.0  # while the whole calibration has taken less than this (it must stay about a minute)


class Point(NamedTuple):
    """One calibration geometry; `repeat` runs of it (see _chosen for which counts)."""

    size: str
    pattern: str
    maxdata: str
    delay_write_ms: int
    delay_zero_ms: int
    repeat: int = REPEAT
    zeromode: str = "plugin"  # "none": the server offers no write-zeroes, so a client writes its holes


# The control: the steady point (384M below) at small size, past the warm-up, about 0.1 s a copy on
# the development machine. Run CONTROL_RUNS times at the start and at the end of each kind's plan
# (the reference), and CONTROL_RUNS times for a later control (a few hundred ms in all).
CONTROL_RUNS = 3
CONTROL = Point("128M", "full", "1M", 0, 0, CONTROL_RUNS)
# How old the newest control of a kind may be before a CPU-bound run measures it again: a sweep's
# CPU-bound rows are where drift moves figures most, so their controls are kept fresher.
SWEEP_CONTROL_S = 60.0
SINGLE_CONTROL_S = 600.0

# Each point makes one term large. None of them is a geometry of the case study or of
# bench/fidelity.py's sweep.
PLAN_SERIAL = (
    Point("48M", "full", "1M", 0, 0),  # bytes, most of them in the warm-up
    # bytes at full speed: the steady per-MiB rate that every large copy extrapolates from, so the
    # longest point, and five runs, the median counting (a large copy varies by +-5% run to run; the
    # median of three still moved the rate by up to 9% between calibrations); past GROWN_MIB, beside
    # the control's 128 MiB, it also says whether a growing server costs another rate
    Point("384M", "full", "1M", 0, 0, REPEAT + 3),
    Point("64M", "full", "1M", 1, 0),  # bytes that each waited out a (short) sleep
    Point("8M", "full", "4k", 0, 0),  # backend requests (2048 of 4k)
    Point("12M", "alternate:64k", "64k", 0, 0),  # wire requests (96 writes + 96 zeroes)
    Point("12M", "full", "64k", 1, 1),  # sleeps (192 of 1 ms: short ones)
    Point("6M", "full", "64k", 3, 3),  # sleeps (96 of 3 ms): against the 1 ms point, what a short sleep adds
    Point("2M", "full", "256k", 0, 0),  # fixed
    # zero-filled data: a server without write-zeroes, so the client writes every hole, 2 ms each (the
    # 1 GiB empty qemu-2.7 row of the sweep, at a tenth of its size)
    Point("96M", "empty", "1M", 2, 0, zeromode="none"),
    # mixed points: more equations than terms, so one disturbed run cannot set a coefficient alone
    Point("24M", "alternate:256k", "256k", 2, 1),
    Point("32M", "full", "256k", 0, 0),
    Point("6M", "alternate:1M", "64k", 4, 2),
    # long sleeps (expectation.LONG_SLEEP_MS): 64 writes behind 10 ms, and 16 behind 20 ms beside 4
    # zeroes behind 5 ms, so one disturbed run cannot set the long sleeps' extra alone
    Point("8M", "full", "128k", 10, 10),
    Point("4M", "alternate:512k", "128k", 20, 5),
)
# A parallel client overlaps the sleeps: the delay factor is fitted too, from two delay levels.
PLAN_PARALLEL = (*PLAN_SERIAL, Point("12M", "full", "64k", 5, 5))


class Cancelled(Exception):
    pass


def _run_once(kind: Kind, point: Point, cancel: threading.Event, places: Places | None = None,
              verify_bytes: bool = True) -> Run:
    """One calibration copy on a fresh server (a succeeded Run), or Cancelled. `verify_bytes=False`: a
    control copy, not verified (its time is the copy's alone either way)."""
    spec = point_spec(point)
    if cancel.is_set():
        raise Cancelled()
    with Server(spec, build=kind.build, places=places) as srv:
        run = execute(Run(client=kind.client, server=spec, queue_depth=kind.queue_depth), server=srv,
                      cancel=cancel, timeout=120, core=Core(places), verify_bytes=verify_bytes)
    if cancel.is_set():
        raise Cancelled()
    if run.status != "succeeded":
        raise RuntimeError(f"calibration run {kind.key} {tuple(point[:5])} failed: {run.error}")
    return run


def point_spec(point: Point) -> ServerSpec:
    return build_spec({"zeromode": point.zeromode, "fastzeromode": "none", "size": point.size,
                       "pattern": point.pattern, "maxdata": point.maxdata, "delay_write": f"{point.delay_write_ms}ms",
                       "delay_zero": f"{point.delay_zero_ms}ms"})


def _own_cpu(run: Any) -> float:
    return (run.contention or {}).get("own_cpu_s") or 0.0


def _off_slow_path(runs: list[Any]) -> list[Any]:
    """The runs whose own processes used no more than SLOW_PATH_FACTOR x the CPU of the cheapest (the
    repeats of a point do the same work; one that burned far more took the machine's slow copy path,
    lab.measure.contention); all of them if none did."""
    least = min(_own_cpu(r) for r in runs)
    return [r for r in runs if not burned_too_much(_own_cpu(r), least)] or runs


def _judged_slow(run: Any) -> bool:
    """The calibration in use judged this copy's own CPU the slow path (contention.slow_copy_path; set
    only once the machine has a calibration). The relative test (_off_slow_path) cannot see a control
    whose copies all took it: measured 2026-12-08, control copies after 4-8 s idle ran up to 3.4x the
    reference with 1.3-3.5x the calibrated CPU, while a row after such a control ran on the fast path
    (docs/benchmarks.md): such a control says nothing of the rate that row's runs will see."""
    return bool((run.contention or {}).get("slow_copy_path"))


def _chosen(runs: list[Any]) -> Any:
    """The run that stands for a point: the fastest of two (the less disturbed), the median of three or
    more (a large copy varies by +-5% from run to run even on a quiet machine), among the runs off the
    slow copy path."""
    ordered = sorted(_off_slow_path(runs), key=lambda r: r.duration_s)
    return ordered[0] if len(ordered) < 3 else ordered[(len(ordered) - 1) // 2]


def _measured(runs: list[Any]) -> float:
    """The time that stands for a point: the median of its runs off the slow copy path and not contended
    (of those off the slow path, when every one was contended); for two runs, their mean. A point is
    what a run of its geometry typically takes, the centre of the interval: the fastest of two (as
    before) sat low, by about half their difference; re-measured, the calibration's own 12 MiB point of
    192 sleeps of 1 ms ran 1.06-1.66x the variable part the fit had given it (median 1.37, 2026-12-07)."""
    clean = _off_slow_path(runs)
    quiet = [r for r in clean if not r.contended] or clean
    return statistics.median(r.duration_s for r in quiet)


def _quiet_runs_s(runs: list[Any]) -> list[float]:
    """A control's runs nobody disturbed: off the slow path (against the other copies and as the
    calibration in use judged it) and not contended; empty when none was (then no correction)."""
    off = {id(r) for r in _off_slow_path(runs)}
    return [r.duration_s for r in runs if id(r) in off and not r.contended and not _judged_slow(r) and r.duration_s]


def _point(point: Point, done: list[Run]) -> dict[str, Any]:
    run = _chosen(done)
    off = {id(r) for r in _off_slow_path(done)}
    return {"geometry": list(point[:5]), "zeromode": point.zeromode, "measured_s": round(_measured(done), 4),
            "contended": bool(run.contended), "own_cpu_s": (run.contention or {}).get("own_cpu_s"),
            "runs_s": [r.duration_s for r in done], "runs_cpu_s": [_own_cpu(r) for r in done],
            # the runs that count for the point's spread: a slow-path run says nothing about the model
            "clean_runs_s": [r.duration_s for r in done if id(r) in off],
            "quiet_runs_s": _quiet_runs_s(done),
            "features": features(point_spec(point), run.backend, run.server_log, run.predicted_s or 0.0)}


def steps(kind: Kind) -> tuple[Point, ...]:
    """What `lab calibrate` measures for one kind, in order: the control, the plan, the control again
    (each a unit a scheduler may hand out as one job: measure_point)."""
    return (CONTROL, *(PLAN_PARALLEL if kind.parallel else PLAN_SERIAL), CONTROL)


def measure_point(kind: Kind, point: Point, cancel: threading.Event, places: Places | None = None,
                  extra_ok: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """One point, its repeats back to back (one more while every run was contended and `extra_ok()`);
    the control's copies are not verified (nobody keeps their bytes). A large copy's time depends on
    what ran just before it (measured: 384 MiB right after another 384 MiB copy 0.275-0.295 s, after
    small copies 0.30-0.34 s, on a quiet machine); the steady rate is taken in the first state, which
    matched the geometry sweep's large rows (they mostly follow large rows) better."""
    done: list[Run] = []
    while len(done) < point.repeat or (len(done) < point.repeat + EXTRA and all(r.contended for r in done)
                                       and extra_ok()):
        done.append(_run_once(kind, point, cancel, places, verify_bytes=point != CONTROL))
    return _point(point, done)


def _measure_plan(kind: Kind, plan: Sequence[Point], cancel: threading.Event, extra_ok: Callable[[], bool],
                  places: Places | None = None) -> list[dict[str, Any]]:
    return [measure_point(kind, point, cancel, places, extra_ok) for point in plan]


def _reference(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The control's reference from its runs at the start and the end: the median of the undisturbed
    ones (of all, when every one was disturbed) and their spread."""
    times = first["quiet_runs_s"] + last["quiet_runs_s"] or first["runs_s"] + last["runs_s"]
    return {"geometry": list(CONTROL[:5]), "runs_s": first["runs_s"] + last["runs_s"], "clean_s": times,
            "reference_s": round(statistics.median(times), 4), "spread": round(drift.relative_sd(times), 4)}


def fit_kind(kind: Kind, measured: list[dict[str, Any]]) -> Fit:
    """A kind's Fit from its steps() measured in order: coefficients (blind spots where the points need
    them), the CPU fit, each part's spread and the control's reference. The control's copies (start
    and end together) are a point of the fit too: the steady rate below GROWN_MIB."""
    first, *plan, last = measured
    points = [*plan, {**first, "runs_s": first["runs_s"] + last["runs_s"],
                      "clean_runs_s": first["clean_runs_s"] + last["clean_runs_s"],
                      "measured_s": statistics.median(first["clean_runs_s"] + last["clean_runs_s"])}]
    fixed = {} if kind.parallel else {"delays": 1.0}
    coef, kept = fitting.select(points, TERMS, fixed, BLIND_SPOTS)
    terms = [t for t in TERMS if t not in BLIND_SPOTS or t in kept]
    for p in points:
        p["fitted_s"] = round(fitting.predict(coef, p["features"]), 4)
    spread = fitting.spread(points, coef, GROUPS, len([t for t in terms if t not in fixed]), regime, SPREAD_FLOORS,
                            exact=() if kind.parallel else ("delays_s",), abs_floor=ABS_FLOOR_S)
    cpu_points = [{**p, "measured_s": p["own_cpu_s"]} for p in points if p.get("own_cpu_s")]
    cpu = fitting.fit(cpu_points, terms, {"delays": 0.0}) if len(cpu_points) == len(points) else {}
    return Fit(kind.key, {k: round(v, 9) for k, v in coef.items()}, points,
               {k: round(v, 9) for k, v in cpu.items() if v}, spread, _reference(first, last), kept)


def calibrate(progress: Callable[[str], None] | None = None, kinds: Sequence[Kind] = KINDS,
              cancel: threading.Event | None = None, places: Places | None = None) -> Calibration:
    """Measure every kind's coefficients, spreads and control reference (about 45-75 s on 2 cores)
    and cache them; a set `cancel` stops it between (or inside) runs with Cancelled, the cache
    untouched."""
    say = progress or (lambda _m: None)
    cancel = cancel or threading.Event()
    m = machine()
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    fits: dict[str, Fit] = {}
    for kind in kinds:
        measured = []
        for point in steps(kind):
            measured.append(measure_point(kind, point, cancel, places,
                                          lambda: time.perf_counter() - t0 < EXTRA_UNTIL_S))
            say(f"{kind.key}: {describe(point)}: {measured[-1]['measured_s']:.3f} s")
        fits[kind.key] = fit_kind(kind, measured)
    cal = Calibration(fingerprint(m), m, fits, took_s=round(time.perf_counter() - t0, 2), load_before=load_before)
    save(cal, places)
    return cal


def describe(point: Point) -> str:
    return (f"{point.size} {point.pattern} maxdata {point.maxdata} delays {point.delay_write_ms}/"
            f"{point.delay_zero_ms} ms" + ("" if point.zeromode == "plugin" else f" zeromode {point.zeromode}")
            + (" (control)" if point == CONTROL else ""))


# --- controls: how far the machine has moved since ---------------------------------------------


def control(kind: Kind, cancel: threading.Event | None = None, places: Places | None = None) -> drift.Control | None:
    """Measure `kind`'s control now against the calibration in use, and record it (None: not calibrated)."""
    cal = load(places=places)
    fit = cal.fits.get(kind.key) if cal is not None else None
    if cal is None or fit is None or not fit.control:
        return None
    got = measure_point(kind, CONTROL, cancel or threading.Event(), places)
    c = drift.Control(kind.key, cal.id, got["runs_s"], got["quiet_runs_s"], fit.control["reference_s"],
                      stale_beyond=drift.stale_beyond(fit.control.get("spread", 0.0), Z))
    drift.record(cache_path(places), c)
    return c


def kind_of(client: str, queue_depth: int, build: str) -> Kind | None:
    """The calibration kind a run of this client, depth and build is expected with (its fallback
    to the single-process build, as Calibration.fit_for)."""
    by_key = {k.key: k for k in KINDS}
    return by_key.get(kind_key(client, queue_depth, build)) or by_key.get(kind_key(client, queue_depth, "single"))


def before_run(run: Run, core: Core | None = None, cancel: threading.Event | None = None,
               max_age_s: float | None = None) -> drift.Control | None:
    """Before a CPU-bound run (it has the machine alone), measure its kind's control again if the newest
    is older than `max_age_s` (default: SWEEP_CONTROL_S in a sweep, else SINGLE_CONTROL_S), so its
    expectation is scaled by the machine's state now. Adds a note to the run; never fails it."""
    places = (core or Core()).places
    spec = run.server
    try:
        client = get_client(run.client)
    except KeyError:  # execute() fails such a run itself
        return None
    if (getattr(spec, "kind", "nbdkit") != "nbdkit" or getattr(spec, "plugin", "memory") != "memory"
            or not cpu_bound(client.parallel, run.queue_depth, spec)):
        return None
    cal = load(places=places)
    kind = kind_of(run.client, run.queue_depth, topology(spec))
    if cal is None or kind is None:
        return None
    age = max_age_s if max_age_s is not None else SWEEP_CONTROL_S if run.sweep_id else SINGLE_CONTROL_S
    newest = drift.latest(cache_path(places), cal.id, kind.key, clean=False)
    if newest is not None and time.time() - newest.at <= age:
        return None
    try:
        c = control(kind, cancel, places)
    except Cancelled:
        return None
    except Exception as e:  # a failed control leaves the run as it was, uncorrected
        run.notes.append(f"control not measured: {type(e).__name__}: {e}")
        return None
    if c is not None:
        run.notes.append(control_note(c))
    return c


def control_note(c: drift.Control) -> str:
    f = c.factor
    head = (f"control: {len(c.runs_s)} copies of {CONTROL.size} just before ({', '.join(f'{t:.3f}' for t in c.runs_s)}"
            f" s) against {c.reference_s:.3f} s at calibration")
    if f is None:
        return head + ": every one disturbed (contended or slow), so no correction"
    return head + f": this machine now {f:.2f}x" + (" (calibration stale)" if c.stale else "")
