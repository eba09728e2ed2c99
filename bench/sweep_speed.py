"""How fast does the lab run the whole case study? Serially, then all rows at once.

Every row is a fresh server and a copy whose time is sleeps in the delay filter, so rows
can overlap without slowing each other: the table should take about as long as its
slowest row. This script runs the case study (lab.scenarios 'case-study', 19 rows) once
row after row, then all rows at once in threads (what `lab scenario case-study --workers N`
does), and compares every row's copy time between the two passes.

Targets: whole table in <= 1.3x the slowest row's serial time; every row within 5% of its
serial time. The talk ran its seven reference rows one after another: 50.93 s of copies.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from _runs import case_study, run_case  # noqa: E402

from lab.scenarios import REFERENCE_ROWS  # noqa: E402

WALL_TARGET = 1.3
ROW_TOLERANCE = 0.05
TALK_SEVEN_S = sum(r.reference["time_s"] for r in REFERENCE_ROWS if r.reference)
QUICK_KEYS = ("ref-none", "ref-plugin-default", "qemu-img-A", "nbdcopy-B")


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=0, help="rows at once in the parallel pass (default: all)")
    args = p.parse_args()
    cases = case_study(args.quick, QUICK_KEYS if args.quick else None)
    workers = args.workers or len(cases)
    print(machine_note(), file=sys.stderr)

    t0 = time.perf_counter()
    serial = []
    for c in cases:
        serial.append(run_case(c, t0))
        print(f"  serial {c.key}: {serial[-1]['duration_s']} s", file=sys.stderr)
    serial_wall = time.perf_counter() - t0

    t1 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        par = list(pool.map(lambda c: run_case(c, t1), cases))
    par_wall = time.perf_counter() - t1

    rows: list[list[Any]] = []
    row_ok = []
    for s, q in zip(serial, par, strict=True):
        rel = q["duration_s"] / s["duration_s"] if s["duration_s"] and q["duration_s"] else None
        ok = rel is not None and abs(rel - 1) <= ROW_TOLERANCE
        row_ok.append(ok)
        rows.append([s["key"], s["client"], s["duration_s"], q["duration_s"], f"{rel:.3f}" if rel else "-",
                     f"1 +- {ROW_TOLERANCE}", verdict(ok), f"{q['start_s']:.2f}", f"{q['end_s']:.2f}",
                     "yes" if s["verified"] and q["verified"] else "NO"])
    slowest = max(serial, key=lambda r: r["duration_s"] or 0)
    # A row's wall time in the parallel pass includes its setup and verification, not just the copy.
    slowest_wall = slowest["end_s"] - slowest["start_s"]
    factor = par_wall / slowest["duration_s"]
    seven = [q for q in par if q["key"].startswith("ref-")]
    seven_done = max((q["end_s"] for q in seven), default=None)
    seven_serial = sum(s["duration_s"] for s in serial if s["key"].startswith("ref-"))

    quick = " (--quick: 8M, 1ms)" if args.quick else ""
    print(table(["row", "client", "serial s", "parallel s", "parallel/serial", "target", "", "started at s",
                 "done at s", "verified"], rows,
                title=f"Sweep speed: {len(cases)} case-study rows, serial vs {workers} at once{quick}"))
    print()
    print(table(["pass", "wall s", "slowest row copy s", "wall / slowest", "target", "",
                 "rows within 5% of serial"],
                [["serial (one after another)", serial_wall, slowest["duration_s"],
                  f"{serial_wall / slowest['duration_s']:.2f}", "-", "-", "-"],
                 [f"parallel ({workers} at once)", par_wall, slowest["duration_s"], f"{factor:.2f}",
                  f"<= {WALL_TARGET}", verdict(factor <= WALL_TARGET),
                  f"{sum(row_ok)}/{len(row_ok)} {verdict(all(row_ok))}"]]))
    print()
    if seven:
        print(table(["the talk's seven reference rows", "copy time, serial sum s", "wall s"],
                    [["talk (2019, one after another)", TALK_SEVEN_S, TALK_SEVEN_S],
                     ["lab, one after another", seven_serial, sum(s["end_s"] - s["start_s"] for s in serial
                                                                   if s["key"].startswith("ref-"))],
                     [f"lab, all at once (inside the {len(cases)}-row pass)", seven_serial, seven_done]]))
        print()
    print(f"slowest row: {slowest['key']} ({slowest['duration_s']:.2f} s copy, {slowest_wall:.2f} s with setup "
          f"and verify); parallel pass {par_wall:.2f} s for all {len(cases)} rows")
    print(machine_note())
    write_json(args.json, {"serial": serial, "parallel": par, "serial_wall_s": serial_wall,
                           "parallel_wall_s": par_wall, "workers": workers, "factor": factor})
    return 0 if all(r["status"] == "succeeded" for r in serial + par) else 1


if __name__ == "__main__":
    sys.exit(main())
