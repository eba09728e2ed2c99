"""The arithmetic behind the expectation model: coefficients, which terms the data need, and how
much each part of an expectation varies. Pure functions over calibration points; no copies.

A point is a dict with `features` (term -> count, lab.measure.expectation.features), `measured_s`
(the time that stands for the point) and, when the point ran more than once, `runs_s` (every
run's time). Fits minimise the relative error, so a 2 MiB copy and a 384 MiB copy weigh alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

Point = Mapping[str, Any]

RIDGE = 1e-9  # keeps a near-collinear pair of terms finite
# A blind-spot term stays in the model only when leaving it out costs more than this many times the
# points' own run-to-run variance (about a 2-sigma improvement): a term the data do not need is noise.
KEEP_PENALTY = 4.0


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
    """A point's relative run-to-run variance (0 with fewer than two runs)."""
    runs = [r for r in p.get("runs_s") or [] if r]
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


# A point that lands further off than this (relative) was disturbed, not scattered by the model: it
# counts as this far, so one disturbed point cannot set a part's spread alone.
WORST_COUNTED = 0.5


def spread(points: Sequence[Point], coef: Mapping[str, float], groups: Mapping[str, str], free: int,
           floors: Mapping[str, float], exact: Sequence[str] = ()) -> dict[str, float]:
    """How much each part of an expectation varies, as a relative standard deviation per part.

    Each point says how far off a run of it lands: its misfit (the fit's relative residual, scaled up
    by n / (n - free) for the degrees of freedom the fit used) plus its run-to-run variance. That
    squared error is shared among the point's parts in proportion to their squared shares, and the
    per-part variances come from a non-negative least squares over all points, each at least its
    floor. So a per-byte part inherits the scatter of the byte-heavy points, a per-request part that
    of the request-heavy ones. `exact` parts vary by nothing of their own (an in-order client's
    sleeps are what the delay filter injects: their overshoot is a per-request cost)."""
    names = [g for g in floors if g not in exact]
    n = len(points)
    dof = n / (n - free) if n > free else 2.0
    rows, rhs = [], []
    for p in points:
        t = p["measured_s"]
        share = parts(coef, p["features"], groups)
        rows.append([(share.get(g, 0.0) / t) ** 2 for g in names])
        rhs.append(min(((predict(coef, p["features"]) - t) / t) ** 2 * dof + run_variance(p), WORST_COUNTED ** 2))
    var = nonnegative(rows, rhs, names) if rows else {}
    return {g: 0.0 if g in exact else round(max(math.sqrt(max(var.get(g, 0.0), 0.0)), floors[g]), 5) for g in floors}
