"""The intervals' method, checked where the truth is known: calibrations simulated from a model with a
known scatter (each run's per-request part off by 20%, its bytes by 5%, a process start by 15%, one run
in ten disturbed; the machine drifting 3% between calibration and runs), fitted and judged by the lab's
own code (lab.measure.fitting, lab.measure.expectation), then held-out geometries drawn from the same
truth. About 90% of them must land inside their intervals, in each regime, and no interval may be
wider than the scatter calls for. It says nothing about a real machine (bench/fidelity.py does);
it catches an estimator that no longer means what it says (a lost degrees-of-freedom term, noise
counted twice, a drift term dropped)."""

from __future__ import annotations

import math
import random
import statistics

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.layout import parse_pattern
from lab.domain.spec import build_spec
from lab.measure import drift, expectation, fitting
from lab.measure.calibration import CONTROL, PLAN_SERIAL

# long sleeps: the extra of a 10 ms or longer sleep, as measured (lab.measure.expectation.LONG_SLEEP_MS)
TRUE = {"fixed": 0.012, "wire_requests": 25e-6, "backend_requests": 4.5e-6, "sleeps": 90e-6, "long_sleeps": 100e-6,
        "mib": 0.72e-3, "warm_mib": 0.3e-3, "slept_mib": 0.1e-3, "delays": 1.0}
SCATTER = {"delays_s": 0.0, "per_request_s": 0.2, "per_byte_s": 0.05, "fixed_s": 0.15}
DISTURBED, DRIFT, JITTER_S = 0.1, 0.03, 0.002
HELD_OUT = (("16M", "alternate:1M", "64k", 10, 5), ("32M", "full", "64k", 1, 1),
            ("64M", "alternate:64k", "256k", 5, 2), ("128M", "alternate:1M", "1M", 20, 5, "emulate"),
            ("256M", "full", "256k", 0, 0), ("1G", "full", "1M", 0, 0), ("1G", "empty", "1M", 2, 20, "none"),
            ("96M", "alternate:512k:1536k", "128k", 3, 1, "emulate"), ("512M", "alternate:2M:6M", "512k", 0, 0),
            ("48M", "alternate:256k", "64k", 2, 0), ("100M", "alternate:1M", "256k", 20, 5))


def features(size: str, pattern: str, maxdata: str, dw: int, dz: int, zeromode: str = "plugin") -> dict[str, float]:
    """A run's counts as nbdkit would report them for an in-order client (qemu 4.2's way)."""
    spec = build_spec({"size": size, "pattern": pattern, "maxdata": maxdata, "delay_write": f"{dw}ms",
                       "delay_zero": f"{dz}ms", "zeromode": zeromode, "fastzeromode": "none"})
    data = parse_pattern(spec.pattern, spec.size)
    holes = len(data) if data else 1
    if zeromode == "none":  # the client writes its holes
        writes, wbytes, zeroes = math.ceil(spec.size / spec.maxdata), spec.size, 0
    else:
        writes, wbytes, zeroes = sum(math.ceil(n / spec.maxdata) for _, n in data), sum(n for _, n in data), holes
    backend = BackendCounts(write_ops=writes, write_bytes=wbytes, zero_ops=zeroes)
    wire = WireCounts(write=writes, write_bytes=wbytes, zero=zeroes, flush=1)
    return expectation.features(spec, backend, wire, (writes * spec.delay_write + zeroes * spec.delay_zero) / 1000)


def run_time(f: dict[str, float], rng: random.Random, machine: float = 1.0) -> float:
    """One run: every part off by its own scatter, one run in ten disturbed (slower only)."""
    hit = rng.random() < DISTURBED
    t = 0.0
    for part, v in fitting.parts({t: TRUE.get(t, 0.0) for t in expectation.TERMS}, f, expectation.GROUPS).items():
        u = SCATTER[part]
        off = rng.gauss(0, u) + (rng.uniform(0, 3 * u) if hit else 0.0)
        t += v * (1.0 if part == "delays_s" else machine) * max(0.05, 1 + off)
    return t + abs(rng.gauss(0, JITTER_S))


def calibrate(rng: random.Random) -> expectation.Calibration:
    """The procedure's choices: two runs per point (their mean counts), five for the steady point
    (the median), the control six times (start and end), one more point of the fit."""
    plan = [(*p[:5], p.zeromode) for p in PLAN_SERIAL] + [(*CONTROL[:5], "plugin")]
    points = []
    for g in plan:
        f = features(*g)
        runs = [run_time(f, rng) for _ in range(5 if g[0] == "384M" else 6 if g == plan[-1] else 2)]
        chosen = statistics.median(runs)
        points.append({"features": f, "measured_s": chosen, "runs_s": runs})
    coef, kept = fitting.select(points, expectation.TERMS, {"delays": 1.0}, expectation.BLIND_SPOTS)
    free = len([t for t in expectation.TERMS if t != "delays" and (t not in expectation.BLIND_SPOTS or t in kept)])
    spread = fitting.spread(points, coef, expectation.GROUPS, free, expectation.regime, expectation.SPREAD_FLOORS,
                            exact=("delays_s",), abs_floor=expectation.ABS_FLOOR_S)
    ctl = points[-1]["runs_s"]
    fit = expectation.Fit("era-q1/single", coef, points, {}, spread,
                          {"reference_s": statistics.median(ctl), "spread": drift.relative_sd(ctl)}, kept)
    return expectation.Calibration("simulated", {}, {fit.key: fit})


def test_intervals_hold_about_their_coverage_in_each_regime():
    rng = random.Random(27)
    inside: dict[str, list[bool]] = {r: [] for r in expectation.REGIMES}
    half: dict[str, list[float]] = {r: [] for r in expectation.REGIMES}
    control_point = features(*CONTROL[:5])
    long_sleeps = []
    for _ in range(80):
        cal = calibrate(rng)
        fit = cal.fits["era-q1/single"]
        long_sleeps.append(fit.coef["long_sleeps"])
        machine = math.exp(rng.gauss(0, DRIFT))  # the machine later, as a sweep finds it
        runs = [run_time(control_point, rng, machine) for _ in range(3)]
        control = drift.Control(fit.key, cal.id, runs, runs, fit.control["reference_s"], stale_beyond=0.1)
        for g in HELD_OUT:
            f = features(*g)
            cpu_bound = not (g[3] or g[4])  # as before_run: a control before a CPU-bound row only
            e = cal.expect("qemu-4.2", 1, "single", f, control if cpu_bound else None)
            t = run_time(f, rng, machine)
            inside[e.regime].append(e.low_s <= t <= e.high_s)
            half[e.regime].append((e.high_s - e.low_s) / 2 / e.expected_s)
    for regime in ("delay-bound", "bandwidth-bound"):
        share = sum(inside[regime]) / len(inside[regime])
        assert 0.82 <= share <= 0.97, (regime, share, statistics.median(half[regime]))
    assert statistics.median(half["delay-bound"]) < 0.05 and statistics.median(half["bandwidth-bound"]) < 0.16
    # the plan's long-sleep points find the long sleeps' extra
    assert 0.5 < statistics.median(long_sleeps) / TRUE["long_sleeps"] < 1.5, statistics.median(long_sleeps)


def test_the_median_of_three_runs_holds_its_own_narrower_interval():
    """A sweep row without delays is the median of three runs: its interval keeps the fit's error, the
    model's bias and the drift, and only the run-to-run part shrinks. About 90% of medians inside, and
    narrower than one run's interval."""
    rng = random.Random(28)
    inside, narrower = [], []
    control_point = features(*CONTROL[:5])
    for _ in range(80):
        cal = calibrate(rng)
        fit = cal.fits["era-q1/single"]
        assert fit.spread["noise:bandwidth-bound"] <= fit.spread["bandwidth-bound"]
        machine = math.exp(rng.gauss(0, DRIFT))
        runs = [run_time(control_point, rng, machine) for _ in range(3)]
        control = drift.Control(fit.key, cal.id, runs, runs, fit.control["reference_s"], stale_beyond=0.1)
        for g in HELD_OUT:
            if g[3] or g[4]:
                continue
            f = features(*g)
            one = cal.expect("qemu-4.2", 1, "single", f, control)
            three = cal.expect("qemu-4.2", 1, "single", f, control, runs=3)
            t = statistics.median(run_time(f, rng, machine) for _ in range(3))
            inside.append(three.low_s <= t <= three.high_s)
            narrower.append((three.high_s - three.low_s) / (one.high_s - one.low_s))
            assert three.expected_s == one.expected_s
    share = sum(inside) / len(inside)
    assert 0.82 <= share <= 0.97, (share, statistics.median(narrower))
    assert max(narrower) <= 1.0 and statistics.median(narrower) < 0.9, statistics.median(narrower)
