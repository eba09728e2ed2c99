"""One lab run as a flat, JSON-able row: result, model ratio and where the time went.

Shared by fidelity.py and sweep_speed.py (run_all.py hands sweep_speed's serial rows to
fidelity.py, so the case study runs serially once and serves both tables).
Import after _common.setup_env().
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import _timeline
from _common import MachineBusy

from lab.domain.run import Run
from lab.domain.scenarios import get_scenario
from lab.domain.spec import build_spec
from lab.host import images
from lab.measure.calibration import before_run
from lab.measure.execute import execute
from lab.measure.expectation import features, of_counts
from lab.nbd.clients import get_client
from lab.nbd.servers import topology

TOLERANCE = 0.05
QUICK_SERVER = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}


@dataclass(frozen=True)
class Case:
    key: str
    client: str
    server: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def case_study(quick: bool = False, keys: tuple[str, ...] | None = None) -> list[Case]:
    rows = get_scenario("case-study").rows
    if keys:
        rows = tuple(r for r in rows if r.key in keys)
    return [Case(r.key, r.client, {**r.server, **(QUICK_SERVER if quick else {})}) for r in rows]


def warm_source(spec: Any) -> None:
    """Read the case's source image (raw and qcow2) once, so the copy finds it in the page cache, as
    right after it was built. Other work on a shared machine can push a cached image out of memory;
    an era client then reads it from disk inside its measured copy (seen: a 256 MiB copy's client
    gaps 378 ms instead of 81), which no model of the NBD path should be asked to explain."""
    with images.acquire(spec.size, spec.pattern) as img:
        for path in (img.raw, img.qcow2):
            with contextlib.suppress(OSError), open(path, "rb", buffering=0) as f:
                while f.read(8 << 20):
                    pass


def run_case(case: Case, t_origin: float | None = None, control_age_s: float | None = None) -> dict[str, Any]:
    """Execute one case (fresh server, as `lab run` does) and flatten the result. `control_age_s`: a
    CPU-bound case first measures its kind's control when the newest is older (as a sweep's rows do,
    lab.measure.calibration.before_run); None: no control."""
    _timeline.keep_lab_logs()
    spec = build_spec(case.server)
    warm_source(spec)
    run = Run(client=case.client, server=spec, label=case.key)
    if control_age_s is not None:
        before_run(run, max_age_s=control_age_s)
    t_start = time.perf_counter()
    busy = MachineBusy()
    run = execute(run, timeout=600)
    t_end = time.perf_counter()
    text = _timeline.last_lab_log()
    tl = _timeline.parse(text) if text else None
    split = tl.split(run.duration_s) if tl else {}
    parallel = get_client(case.client).parallel
    ratio = run.ratio
    if ratio is None:
        ok = None
    elif parallel:
        ok = ratio <= 1 + TOLERANCE / 5  # an upper bound: overlap can only make it faster
    else:
        ok = abs(ratio - 1) <= TOLERANCE
    b = run.backend
    origin = t_origin if t_origin is not None else t_start
    uncorrected = _uncorrected(run) if run.machine_factor is not None else None
    exp_ratio = run.duration_s / run.expected_s if run.duration_s and run.expected_s else None
    feats = _features(run)
    return {
        "key": case.key, "client": case.client, "note": case.note, "parallel": parallel,
        "zeromode": spec.zeromode, "fastzeromode": spec.fastzeromode, "size": spec.size, "pattern": spec.pattern,
        "maxdata": spec.maxdata, "delay_write": spec.delay_write, "delay_zero": spec.delay_zero,
        "status": run.status, "error": run.error, "verified": run.verified,
        "setup_s": run.setup_s, "duration_s": run.duration_s, "predicted_s": run.predicted_s, "ratio": ratio,
        "ok": ok, "write_ops": b.write_ops if b else None, "zero_ops": b.zero_ops if b else None,
        "write_bytes": b.write_bytes if b else None,
        "server_extra_s": (split["service_s"] - run.predicted_s) if tl and run.predicted_s is not None else None,
        "gaps_s": split.get("gaps_s"), "lead_s": split.get("lead_s"), "requests": split.get("requests"),
        "start_s": t_start - origin, "end_s": t_end - origin, "machine_busy_cores": round(busy.cores(), 2),
        # others' CPU during the copy (the machine minus the run's own processes): a bandwidth-bound
        # copy keeps the machine busy by itself, so whole-machine busy cannot say whether it was disturbed
        "others_cores": (run.contention or {}).get("others_cores"), "contended": run.contended,
        "stolen_cores": (run.contention or {}).get("stolen_cores"),
        "slow_copy_path": (run.contention or {}).get("slow_copy_path"),
        "expected_s": run.expected_s, "breakdown": run.breakdown, "calibration": run.calibration,
        "expected_low_s": run.expected_low_s, "expected_high_s": run.expected_high_s, "regime": run.regime,
        "model_verdict": run.model_verdict, "model_term": run.model_term, "machine_factor": run.machine_factor,
        "calibration_stale": run.calibration_stale, "notes": run.notes, "uncorrected": uncorrected,
        # what the expectation was computed from (bench/fidelity.py: the interval of a row's median)
        "features": feats, "queue_depth": run.queue_depth, "build": topology(run.server),
        "exp_ratio": exp_ratio, "exp_ok": None if exp_ratio is None or parallel else abs(exp_ratio - 1) <= TOLERANCE,
        "floor_ok": None if parallel or run.predicted_s is None or not run.duration_s
        else run.predicted_s <= run.duration_s,
    }


def _features(run: Run) -> dict[str, float] | None:
    if run.backend is None or run.server_log is None:
        return None
    return features(run.server, run.backend, run.server_log, run.predicted_s or 0.0)


def _uncorrected(run: Run) -> list[float | None] | None:
    """[expected, low, high] of a run whose expectation a control scaled, as if no control had: what the
    correction changed."""
    feats = _features(run)
    e = None if feats is None else of_counts(run.client, run.queue_depth, topology(run.server), feats,
                                             corrected=False)
    return None if e is None else [e.expected_s, e.low_s, e.high_s]


def warm_up() -> None:
    """One tiny run first, so the first measured row does not pay for imports and cold caches."""
    run_case(Case("warm-up", "qemu-4.2", dict(QUICK_SERVER)))
