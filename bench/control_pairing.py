"""Does a control beside a bandwidth-bound row track that row? (issue 27: what a control knows)

A control (lab.measure.calibration.CONTROL: 128 MiB, 1 MiB requests, no delays, three copies) scales
the per-byte part of a CPU-bound run's expectation by how much faster or slower the machine moves bytes
now than at its calibration. That helps only if the row moves with the control. Each round here waits
0, 4 or 8 s (a copy after idle can be slow: docs/benchmarks.md), measures the kind's control, runs the
row five times (the median of those off the slow copy path, as a sweep's row counts), and measures the
control again. Over the rounds it prints how much the row's median scatters alone (sd of its log), and
once divided by the control before it, and by the geometric mean of the controls around it: a control
that tracks the machine makes the ratio steadier than the row; one that catches a state of its own
second makes it noisier. The controls are measured as points (measure_point), so none is recorded
against the lab's calibration. Figures: docs/benchmarks.md ("Issue 27, 2026-12-08").
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from lab.domain.run import Run  # noqa: E402
from lab.domain.spec import build_spec  # noqa: E402
from lab.measure import calibration  # noqa: E402
from lab.measure.execute import execute  # noqa: E402

ROWS = [("qemu-4.2", {"size": "512M", "pattern": "full", "maxdata": "1M"}),
        ("qemu-img", {"size": "256M", "pattern": "full", "maxdata": "256k"})]
QUICK_ROWS = [("qemu-4.2", {"size": "16M", "pattern": "full", "maxdata": "1M"})]
IDLE_S = (0, 0, 4, 8)
REPEAT = 5


def _control(client: str) -> float:
    """The median of a control's undisturbed copies (of all, when every one was disturbed, as a
    calibration's reference does)."""
    kind = calibration.kind_of(client, 1, "single")
    got = calibration.measure_point(kind, calibration.CONTROL, threading.Event())
    return statistics.median(got["quiet_runs_s"] or got["runs_s"])


def _row(client: str, server: dict[str, Any], repeat: int) -> tuple[float, int]:
    """The median of the row's runs off the slow copy path (all, if every one took it), and how many did."""
    spec = build_spec({**server, "delay_write": 0, "delay_zero": 0})
    runs = []
    for _ in range(repeat):
        run = execute(Run(client=client, server=spec), timeout=600)
        if run.status != "succeeded" or run.duration_s is None:
            raise SystemExit(f"{client} {server}: {run.status}: {run.error}")
        runs.append((run.duration_s, bool((run.contention or {}).get("slow_copy_path"))))
    fast = [s for s, slow in runs if not slow] or [s for s, _ in runs]
    return statistics.median(fast), sum(slow for _, slow in runs)


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="rounds per client (default 8)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rows, rounds, repeat = (QUICK_ROWS, 2, 1) if args.quick else (ROWS, args.rounds, REPEAT)
    idle = (0,) if args.quick else IDLE_S
    rng = random.Random(args.seed)
    raw: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for i in range(rounds):
        for client, server in rows:
            time.sleep(rng.choice(idle))
            before = _control(client)
            median, slow = _row(client, server, repeat)
            after = _control(client)
            raw.append({"round": i, "client": client, "row": server, "row_s": median, "slow_runs": slow,
                        "control_before_s": before, "control_after_s": after})
    out = []
    for client, server in rows:
        mine = [r for r in raw if r["client"] == client]
        alone = _sd([math.log(r["row_s"]) for r in mine])
        by_before = _sd([math.log(r["row_s"] / r["control_before_s"]) for r in mine])
        around = _sd([math.log(r["row_s"] / math.sqrt(r["control_before_s"] * r["control_after_s"])) for r in mine])
        helps = None if alone is None or by_before is None else by_before < alone
        out.append([f"{server['size']} {server['pattern']} {server['maxdata']} / {client}", len(mine),
                    _pct(alone), _pct(by_before), _pct(around), verdict(helps)])
    print(table(["row (no delays)", "rounds", "row's median: sd of log", "/ control before",
                 "/ controls around", "the control before steadies it"], out,
                title="A bandwidth-bound row and the controls beside it"))
    print(f"\n{len(raw)} rounds in {time.monotonic() - t0:.0f} s (rows: the median of {repeat} runs); the controls "
          "were measured as points, recorded nowhere")
    print(machine_note())
    write_json(args.json, {"rounds": raw, "table": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
