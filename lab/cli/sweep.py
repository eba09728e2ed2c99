"""`lab sweep FILE.toml|json`: a custom sweep (lab.domain.sweepspec) run here, one table row per row.

The file holds the same definition POST /api/v1/sweeps takes, for example (TOML):

    name = "pre-zero on A and B"
    repeats = 3
    [grid]
    client = ["qemu-3.1", "qemu-4.2"]
    zeromode = ["plugin", "emulate"]
    [server]
    size = "16M"
    delay_write = "5ms"
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

from lab.cli.shared import MAX_WORKERS, LocalSweep, bad, timeout_problem, workers_problem
from lab.domain import sweepspec
from lab.domain.units import format_interval
from lab.host.places import Core
from lab.nbd.backends import Machine


def add_parser(sub: Any) -> None:
    s = sub.add_parser("sweep", help="run a custom sweep (rows or a grid) from a TOML or JSON file")
    s.add_argument("file", help="the sweep definition: FILE.toml or FILE.json (see docs/api.md#custom-sweeps)")
    s.add_argument("--workers", type=int, default=1,
                   help=f"runs at once, 1 to {MAX_WORKERS} (default 1: timings stay honest)")
    s.add_argument("--timeout", type=float, default=None,
                   help="a run still going after this many seconds is stopped and failed (default: LAB_RUN_TIMEOUT_S)")
    s.add_argument("--json", action="store_true", help="print the sweep, its runs and the per-row statistics")


def load(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith(".toml"):
        return tomllib.loads(text)
    return json.loads(text)


def _fmt(stats: dict[str, Any] | None, unit: str = "", digits: int = 2) -> str:
    if not stats:
        return "-"
    med = f"{stats['p50']:.{digits}f}{unit}"
    return med if stats["n"] < 2 else f"{med} ±{stats['spread'] / 2:.{digits}f}"


def _expected(st: dict[str, Any]) -> str:
    """The row's median expectation and interval (lab.measure.expectation), "-" where it has none."""
    e, lo, hi = (st.get(k) for k in ("expected_s", "expected_low_s", "expected_high_s"))
    return "-" if not e else format_interval(e["p50"], lo and lo["p50"], hi and hi["p50"])


def table(rows: list[dict[str, Any]]) -> str:
    head = ("row", "client", "ok", "time (median ± half spread)", "expected (interval)", "predicted", "writes",
            "zeroes")
    lines = [head]
    for r in rows:
        st = r["stats"]
        lines.append((r["key"], str(r["client"]), f"{r['succeeded']}/{r['runs']}", _fmt(st["duration_s"], " s"),
                      _expected(st), _fmt(st["predicted_s"], " s"), _fmt(st["backend.write_ops"], digits=0),
                      _fmt(st["backend.zero_ops"], digits=0)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def cmd_sweep(args: argparse.Namespace, core: Core, run_timeout_s: float) -> int:
    """`core`: the settings' limits (LAB_MAX_SIZE and co., as for `lab run` and POST /api/v1/sweeps)
    and places; `run_timeout_s`: LAB_RUN_TIMEOUT_S, unless --timeout says otherwise."""
    if problem := workers_problem(args.workers):
        return bad(problem)
    if problem := timeout_problem(args.timeout):
        return bad(problem)
    timeout = args.timeout if args.timeout is not None else run_timeout_s
    here = LocalSweep(args.workers, "lab-sweep", quiet=args.json, core=core, queue_size=sweepspec.MAX_RUNS,
                      timeout_s=timeout)
    try:
        planned = sweepspec.plan(load(args.file), core.limits, Machine(core.places))
    except OSError as e:
        return bad(f"{args.file}: {e.strerror or e}")
    except (ValueError, tomllib.TOMLDecodeError) as e:  # JSON/TOML syntax, or DefinitionError (names the place)
        return bad(f"{args.file}: {e}")
    sweep = here.service.start_custom(planned)
    wall = here.run(sweep)
    runs = [r.to_dict() for r in sweep.runs]
    rows = sweepspec.group_rows(runs)
    if args.json:
        print(json.dumps({"sweep": sweep.to_dict(), "wall_s": round(wall, 3), "rows": rows, "runs": runs}))
    else:
        print(f"{planned.name}: {len(planned.rows)} rows x {planned.repeats} ({len(runs)} runs: a row without delays "
              f"runs at least {sweepspec.BANDWIDTH_REPEATS} times)")
        print(table(rows))
        print(f"\n{len(runs)} runs in {wall:.1f} s wall time")
    return 0 if all(r["status"] == "succeeded" for r in runs) else 1
