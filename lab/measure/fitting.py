"""The arithmetic behind the expectation model: coefficients, which terms the data need, and how
much each part of an expectation varies. Pure functions over calibration points; no copies.

A point is a dict with `features` (term -> count, lab.measure.expectation.features), `measured_s`
(the time that stands for the point) and, when the point ran more than once, `runs_s` (every
run's time) and `clean_runs_s` (those off the machine's slow copy path, lab.measure.contention).
Fits minimise the relative error, so a 2 MiB copy and a 384 MiB copy weigh alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Point = Mapping[str, Any]

RIDGE = 1e-9  # keeps a near-collinear pair of terms finite
# A blind-spot term stays in the model only when leaving it out costs more than this many times the
# points' mean run-to-run variance (the Akaike rule: two units of noise per term), so a term the data
# do not need does not fit noise. (Checked on simulated calibrations: a zero-filled-write extra of
# 0.5 ms/MiB is kept in most, none is kept where there is none.)
KEEP_PENALTY = 2.0


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


def _normal(rows: list[list[float]], rhs: list[float]) -> list[float]:
    n = len(rows[0]) if rows else 0
    ata = [[sum(r[i] * r[j] for r in rows) + (RIDGE if i == j else 0.0) for j in range(n)] for i in range(n)]
    atb = [sum(r[i] * y for r, y in zip(rows, rhs, strict=True)) for i in range(n)]
    return _solve(ata, atb) or [0.0] * n


def nonnegative(rows: list[list[float]], rhs: list[float], names: list[str]) -> dict[str, float]:
    """Least squares with every coefficient >= 0: solve, drop the most negative term, again."""
    free = list(range(len(names)))
    while True:
        sol = _normal([[r[i] for i in free] for r in rows], rhs) if free else []
        neg = [k for k, v in zip(free, sol, strict=True) if v < 0]
        if not neg:
            got = dict(zip(free, sol, strict=True))
            return {names[i]: got.get(i, 0.0) for i in range(len(names))}
        free.remove(min(neg, key=lambda k: sol[free.index(k)]))


def fit(points: Sequence[Point], terms: Sequence[str], fixed: Mapping[str, float]) -> dict[str, float]:
    """Least squares on relative error: minimise sum((model - t) / t)^2 over `terms` not in `fixed`,
    with `fixed` terms held (e.g. delays = 1 for a serial client); no coefficient is negative."""
    free = [t for t in terms if t not in fixed]
    rows, rhs = [], []
    for p in points:
        t = p["measured_s"]
        rows.append([p["features"].get(k, 0.0) / t for k in free])
        rhs.append((t - sum(c * p["features"].get(k, 0.0) for k, c in fixed.items())) / t)
    return {**{t: 0.0 for t in terms}, **dict(fixed), **nonnegative(rows, rhs, free)}


def predict(coef: Mapping[str, float], features: Mapping[str, float]) -> float:
    return sum(c * features.get(t, 0.0) for t, c in coef.items())


def sse(points: Sequence[Point], coef: Mapping[str, float]) -> float:
    """Sum of squared relative errors."""
    return sum(((predict(coef, p["features"]) - p["measured_s"]) / p["measured_s"]) ** 2 for p in points)


def run_variance(p: Point) -> float:
    """A point's relative run-to-run variance (0 with fewer than two runs), from its runs off the machine's
    slow copy path (`clean_runs_s`, when the point says which they are): a run on that path is a typed
    outlier, as hyperfine types its own, and not scatter the model's parts should be credited with (one
    such runs among a control's six, and one of a point's two, had set a client's bandwidth-bound spread
    to 58% instead of 19%)."""
    clean = p.get("clean_runs_s")
    runs = [r for r in (clean if clean else p.get("runs_s")) or [] if r]
    if len(runs) < 2:
        return 0.0
    return statistics.variance(runs) / statistics.median(runs) ** 2


def select(points: Sequence[Point], terms: Sequence[str], fixed: Mapping[str, float],
           optional: Sequence[str]) -> tuple[dict[str, float], list[str]]:
    """Fit, then drop each `optional` term the data do not need: one whose removal raises the squared
    error by less than KEEP_PENALTY x the points' mean run-to-run variance. Returns (coefficients, the
    optional terms kept)."""
    noise = max(statistics.fmean([run_variance(p) for p in points]) if points else 0.0, 1e-6)
    kept = list(terms)
    for term in optional:
        if term not in kept:
            continue
        with_it = fit(points, kept, fixed)
        without = [t for t in kept if t != term]
        if sse(points, fit(points, without, fixed)) - sse(points, with_it) < KEEP_PENALTY * noise:
            kept = without
    coef = fit(points, kept, fixed)
    return {**{t: 0.0 for t in terms}, **coef}, [t for t in optional if t in kept]


def parts(coef: Mapping[str, float], features: Mapping[str, float], groups: Mapping[str, str]) -> dict[str, float]:
    """The expectation split by breakdown part (groups: term -> part name)."""
    out = {g: 0.0 for g in dict.fromkeys(groups.values())}
    for term, c in coef.items():
        out[groups[term]] += c * features.get(term, 0.0)
    return out


# A point whose variable part lands further off than this (relative) was disturbed, not scattered by
# the model: it counts as this far, so one disturbed point cannot set a regime's spread alone.
WORST_COUNTED = 1.0


def spread(points: Sequence[Point], coef: Mapping[str, float], groups: Mapping[str, str], free: int,
           regime_of: Callable[[Mapping[str, float]], str], floors: Mapping[str, float],
           exact: Sequence[str] = (), abs_floor: float = 0.0) -> dict[str, float]:
    """How much a run lands off its expectation: per regime, a relative standard deviation of the
    variable part (all but the `exact` parts: an in-order client's sleeps are what the delay filter
    injects), and `abs_s`, what any copy varies by in seconds (the clock, a scheduler tick, a
    process start), so that a 50 ms copy and a 1 s copy of one regime are not held to one percentage.

    A new run lands off by its point's run-to-run scatter, plus the fit's own error there (on average
    free / n of that), plus the model's bias beyond that noise (from the residuals, scaled up by
    n / (n - free) for the degrees of freedom the fit used). Both the runs' variance and the squared
    residuals, relative to each point's variable part (at most WORST_COUNTED), are regressed
    (non-negative least squares) on one indicator per regime (`regime_of` a point's parts) and on one
    over the variable part squared (the absolute jitter): two runs say little of one point's noise,
    all points together say more. A regime without points of its own
    takes the pooled one; none goes below its floor. The run-to-run part is also returned alone, per
    regime and for the jitter (`noise:<regime>`, `noise:abs_s`), for the interval of a median of
    several runs (lab.measure.expectation.median_variance)."""
    n = len(points)
    dof = n / (n - free) if n > free else 2.0
    regimes = list(floors)
    rows, noise, misfit, tags = [], [], [], []
    for p in points:
        t = p["measured_s"]
        share = parts(coef, p["features"], groups)
        variable = sum(v for g, v in share.items() if g not in exact)
        if variable <= 0:
            continue
        # relative to the point's variable part, so that every point weighs alike in what it says of
        # its regime's spread (a 20 ms-delay row's variable part is a few % of its time)
        r, v = regime_of(share), variable / t
        rows.append([1.0 if r == q else 0.0 for q in regimes] + [1.0 / variable ** 2])
        noise.append(min(run_variance(p) / v ** 2, WORST_COUNTED ** 2))
        misfit.append(min(((predict(coef, p["features"]) - t) / t / v) ** 2 * dof, WORST_COUNTED ** 2))
        tags.append(r)
    if not rows:
        return {**dict(floors), "abs_s": abs_floor}
    names = [*regimes, "abs"]
    a = nonnegative(rows, noise, names)
    b = nonnegative(rows, misfit, names)
    pooled = nonnegative([[1.0, row[-1]] for row in rows], noise, ["all", "abs"])["all"]
    pooled_b = nonnegative([[1.0, row[-1]] for row in rows], misfit, ["all", "abs"])["all"]

    def var(x: float, y: float) -> float:  # noise x, misfit y: the scatter, the fit's error, the bias
        return x * (1 + free / n) + max(0.0, y - x)

    out = {q: round(max(math.sqrt(var(a[q], b[q]) if q in tags else var(pooled, pooled_b)), floors[q]), 5)
           for q in regimes}
    out["abs_s"] = round(max(math.sqrt(var(a["abs"], b["abs"])), abs_floor), 5)
    # and the run-to-run part of each alone ("noise:<regime>", "noise:abs_s"): what the median of several
    # runs has less of (the fit's error and the model's bias it keeps)
    out.update({f"noise:{q}": round(math.sqrt(a[q] if q in tags else pooled), 5) for q in regimes})
    out["noise:abs_s"] = round(math.sqrt(a["abs"]), 5)
    return out
