"""How far the machine has moved since its calibration: the control measurements and what they say.

A control is a short copy, the calibration's steady point at small size (lab.measure.calibration.
CONTROL), a few runs on fresh servers. The calibration measures it for every kind at its start and
its end: the reference time and its spread. Later controls (before a sweep's CPU-bound rows, now and
then before a single CPU-bound run) measure it again; `factor` = now / reference says how much
faster or slower this machine moves bytes and requests than when it was calibrated, and a run's
expectation scales its non-sleep parts by it (the correction is shown with the run). A control whose
factor is beyond what the intervals allow for uncorrected drift marks the calibration `stale`.

This module keeps the records (a small JSON file beside the calibration file, shared by every
process that uses that calibration) and answers from them; it runs no copy.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FRESH_S = 900.0  # a control older than this no longer corrects an expectation
KEEP = 60  # records kept in the file (the drift table's history)
# Without a fresh control, the machine may have moved since the calibration by this much (relative
# standard deviation): the calibration's steady point, measured again minutes later on a quiet
# machine, read 0.96-1.12 of itself (docs/benchmarks.md, round 3). Intervals of uncorrected
# expectations include it; a control beyond Z x this marks the calibration stale.
UNCORRECTED_DRIFT = 0.05


@dataclass
class Control:
    """One control measurement of one kind."""

    kind: str  # lab.measure.expectation.kind_key
    calibration: str  # the calibration it compares with (fingerprint@created_at)
    runs_s: list[float]
    clean_s: list[float]  # the runs nobody disturbed (not contended, not on the slow copy path)
    reference_s: float
    at: float = field(default_factory=time.time)
    stale_beyond: float = 0.0  # |factor - 1| above this marks the calibration stale

    @property
    def now_s(self) -> float | None:
        return statistics.median(self.clean_s) if self.clean_s else None

    @property
    def factor(self) -> float | None:
        """now / reference from the clean runs; None when every run was disturbed."""
        now = self.now_s
        return None if now is None or not self.reference_s else round(now / self.reference_s, 4)

    @property
    def spread(self) -> float:
        """The clean runs' relative standard deviation (how well the factor is known)."""
        return relative_sd(self.clean_s)

    @property
    def stale(self) -> bool:
        """Drifted beyond `stale_beyond`. With every run disturbed the factor is unknown, but others' work
        only slows a copy: a machine that copies faster than calibrated even then has moved."""
        f = self.factor
        if f is None and self.runs_s and self.reference_s:
            return min(self.runs_s) / self.reference_s < 1 - self.stale_beyond
        return f is not None and abs(f - 1) > self.stale_beyond

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "now_s": self.now_s, "factor": self.factor, "spread": round(self.spread, 4),
                "stale": self.stale}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Control:
        return cls(d["kind"], d["calibration"], list(d["runs_s"]), list(d["clean_s"]), d["reference_s"],
                   d.get("at", 0.0), d.get("stale_beyond", 0.0))


# Until this many clean controls of a calibration were measured, the machine is assumed to move by
# UNCORRECTED_DRIFT; from then on by what its controls showed (machine_drift).
MIN_CONTROLS = 3
TRIM = 6  # machine_drift and control_noise leave out the largest 1 in this many squared log factors


def runs_variance(c: Control, reference_spread: float) -> float:
    """The part of a control's error its own runs show (variance of its log): their scatter (at least
    the reference's: three runs can agree by chance) over their number."""
    return max(c.spread, reference_spread) ** 2 / max(1, len(c.clean_s))


def measurement_variance(c: Control, reference_spread: float, reference_runs: int, noise: float = 0.0) -> float:
    """How well a control's factor is known (variance of its log): its runs' error (runs_variance), the
    machine state it caught and a row a minute later may not see (`noise`, control_noise), and the
    reference's error over its runs, since the factor is a ratio of the two."""
    return runs_variance(c, reference_spread) + noise ** 2 + reference_spread ** 2 / max(1, reference_runs)


# Two clean controls of one kind this close measure one machine (its drift is slower than this, so what
# they disagree by is their own error): the pairs control_noise learns from.
PAIRED_S = 300.0
MIN_PAIRS = 3


def control_noise(controls: list[Control], reference: dict[str, tuple[float, int]]) -> float:
    """What a control misses the machine's rate by beyond its own runs' scatter (a relative standard
    deviation; 0 until MIN_PAIRS pairs were measured): learned from consecutive clean controls of one kind
    at most PAIRED_S apart. Their log ratio is the two controls' errors (the reference cancels), so half
    its mean square, the largest sixth left out (TRIM), beyond their runs' variances, is the noise.

    Why: a control's copies share the machine state of their second (measured 2026-12-07: consecutive
    controls one to four minutes apart differed by a median 6%, rms 11% on the log, where their runs
    scattered by 4-5%; a row's median of five copies right after a control varied by 5-6%, and 12% once
    divided by that control, 2026-12-08, docs/benchmarks.md). Its runs' scatter alone said the factor was
    known to 4-5% and the correction trusted it almost whole."""
    by_kind: dict[str, list[Control]] = {}
    for c in sorted(controls, key=lambda c: c.at):
        if c.factor and c.factor > 0 and c.kind in reference:
            by_kind.setdefault(c.kind, []).append(c)
    squares, errors = [], []
    for kind, seq in by_kind.items():
        spread = reference[kind][0]
        for a, b in itertools.pairwise(seq):
            if b.at - a.at <= PAIRED_S:
                squares.append(math.log(b.factor / a.factor) ** 2)  # type: ignore[operator]
                errors.append(runs_variance(a, spread) + runs_variance(b, spread))
    if len(squares) < MIN_PAIRS:
        return 0.0
    keep = len(squares) - len(squares) // TRIM
    order = sorted(range(len(squares)), key=lambda i: squares[i])[:keep]
    noise2 = (statistics.fmean(squares[i] for i in order) - statistics.fmean(errors[i] for i in order)) / 2
    return round(math.sqrt(max(0.0, noise2)), 4)


def machine_drift(controls: list[Control], reference: dict[str, tuple[float, int]], noise: float = 0.0) -> float:
    """How far this machine's byte rate moves from its calibration (a relative standard deviation, at
    least UNCORRECTED_DRIFT), as its controls showed: `reference` holds each kind's control reference
    (spread, runs). A clean control's log factor is that drift plus its own measurement error
    (measurement_variance, with the learned `noise`: control_noise); the drift's variance is what the squared log
    factors hold on average beyond that error, the largest sixth left out (so one control with a disturbed run
    cannot set it alone; a median would not do: a machine that moved by one amount, as it does, has all its factors
    near it).

    Why learned, not assumed: the 5% of UNCORRECTED_DRIFT came from a quiet evening's controls; on a
    2-vCPU VM another evening (2026-12-07, docs/benchmarks.md issue 27) every kind's control read
    0.72-1.00 of its reference within ten minutes of the calibration, and the sweep's bandwidth-bound
    rows 0.84-0.93 of expectations a control had scaled by only 0.89-0.97 (a 4% control weighed
    against a 5% drift gets ~60% of its factor). Assuming 5% there trusts the calibration over
    the machine's own word."""
    logs, errors = [], []
    for c in controls:
        f = c.factor
        if f is None or f <= 0 or c.kind not in reference:
            continue
        logs.append(math.log(f) ** 2)
        errors.append(measurement_variance(c, *reference[c.kind], noise))
    if len(logs) < MIN_CONTROLS:
        return UNCORRECTED_DRIFT
    kept = sorted(logs)[:len(logs) - len(logs) // TRIM]
    d2 = statistics.fmean(kept) - statistics.fmean(errors)
    return round(max(UNCORRECTED_DRIFT, math.sqrt(max(0.0, d2))), 4)


def relative_sd(values: list[float]) -> float:
    """Standard deviation over median (0 for fewer than two values)."""
    v = [x for x in values if x]
    return statistics.stdev(v) / statistics.median(v) if len(v) >= 2 else 0.0


def stale_beyond(reference_spread: float, z: float) -> float:
    """The drift beyond which the calibration is stale: what the intervals allow for without a control,
    plus what the control's own runs scatter by (a control of three runs is known to spread / sqrt(3))."""
    return round(z * math.hypot(reference_spread / math.sqrt(3), UNCORRECTED_DRIFT), 4)


def path_for(calibration_file: Path) -> Path:
    return calibration_file.with_name(calibration_file.stem + ".controls.json")


_lock = threading.Lock()
# Controls this process could not write beside a calibration it may only read (a shared, read-only
# calibration file): kept here, so its own runs are still corrected and not measured again and again.
_unsaved: dict[Path, list[dict[str, Any]]] = {}


def record(calibration_file: Path, control: Control) -> None:
    """Append a control to the file beside the calibration (the newest KEEP are kept)."""
    path = path_for(calibration_file)
    with _lock:
        rows = _read(path)
        rows.append(control.to_dict())
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(rows[-KEEP:], indent=1))
            os.replace(tmp, path)
        except OSError:
            _unsaved.setdefault(path, []).append(control.to_dict())
            del _unsaved[path][:-KEEP]


def history(calibration_file: Path, calibration: str | None = None) -> list[Control]:
    """Every kept control, oldest first (of one calibration, when given)."""
    path = path_for(calibration_file)
    with _lock:
        rows = sorted(_read(path) + _unsaved.get(path, []), key=lambda d: d.get("at", 0.0))
    out = []
    for d in rows:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            c = Control.from_dict(d)
            if calibration is None or c.calibration == calibration:
                out.append(c)
    return out


def latest(calibration_file: Path, calibration: str, kind: str, clean: bool = True) -> Control | None:
    """The newest control of `kind` against `calibration` (with a factor, when `clean`: one whose
    runs were all disturbed says nothing about the machine's speed)."""
    return newest(history(calibration_file, calibration), kind, clean)


def fresh(calibration_file: Path, calibration: str, kind: str, now: float | None = None) -> Control | None:
    """The control that corrects an expectation of `kind` now: the newest clean one, if fresh."""
    return fresh_among(history(calibration_file, calibration), kind, now)


def stale_kinds(calibration_file: Path, calibration: str) -> dict[str, float]:
    """kind -> factor for each kind whose newest telling control drifted beyond the calibration's spread
    (stale_among)."""
    return stale_among(history(calibration_file, calibration))


# The same answers from controls already read (history): a run's expectation asks three questions of one
# calibration's controls, and reads them once.
def newest(controls: list[Control], kind: str, clean: bool = True) -> Control | None:
    for c in reversed(controls):
        if c.kind == kind and (c.factor is not None or not clean):
            return c
    return None


def fresh_among(controls: list[Control], kind: str, now: float | None = None) -> Control | None:
    c = newest(controls, kind)
    return c if c is not None and (now or time.time()) - c.at <= FRESH_S else None


def stale_among(controls: list[Control]) -> dict[str, float]:
    """kind -> factor (now / calibrated; of the fastest run when every one was disturbed), for each
    kind whose newest telling control drifted beyond the calibration's spread."""
    telling: dict[str, Control] = {}
    for c in controls:
        if c.factor is not None or c.stale:
            telling[c.kind] = c
    return {k: c.factor or round(min(c.runs_s) / c.reference_s, 4) for k, c in telling.items() if c.stale}


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return rows if isinstance(rows, list) else []
