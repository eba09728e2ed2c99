"""The calibration procedure: the copies `lab calibrate` runs to measure the expectation model's
coefficients (lab.measure.expectation) on this machine.

Each kind (client class and server build) runs a plan of geometries chosen so each term of the
model dominates one of them; none is a geometry of the case study or of bench/fidelity.py's sweep.
Every point runs on a fresh server, through the same `execute()` as any run, so what is measured
is what a run costs. The fit and the cache are the model's (lab.measure.expectation); this module
only measures.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from lab.domain.run import Run
from lab.domain.spec import ServerSpec, build_spec
from lab.host.places import Core, Places
from lab.measure.contention import burned_too_much
from lab.measure.execute import execute
from lab.measure.expectation import KINDS, TERMS, Calibration, Fit, Kind, features, fingerprint, fit, machine, save
from lab.nbd.servers import Server

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


class Cancelled(Exception):
    pass


def _run_once(kind: Kind, point: Point, cancel: threading.Event, places: Places | None = None) -> Run:
    """One calibration copy on a fresh server (a succeeded Run), or Cancelled."""
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


def point_spec(point: Point) -> ServerSpec:
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


