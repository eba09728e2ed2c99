"""How fast does the lab run the whole case study? Serially, then all rows at once.

Every row is a fresh server and a copy whose time is sleeps in the delay filter, so rows
can overlap without slowing each other: the table should take about as long as its
slowest row. This script runs the case study (lab.domain.scenarios 'case-study', 19 rows) once
row after row, then all rows at once in threads (what `lab scenario case-study --workers N`
does), and compares every row's copy time between the two passes.

Targets: whole table in <= 1.3x the slowest row's serial time; every row within 5% of its
serial time. The talk ran its seven reference rows one after another: 50.93 s of copies.

Two parallel schedules: 'all at once', and 'staged', where the rows whose time is not sleeps
(parallel clients such as nbdcopy, sub-second and CPU/socket-bound) run first on their own,
then every sleep-bound row at once: on 2 shared cores, a CPU-bound row among 18 others is
what gets slowed, not the sleeping ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from _runs import Case, case_study, run_case, warm_up  # noqa: E402

from lab.domain.scenarios import REFERENCE_ROWS  # noqa: E402
from lab.nbd.clients import get_client  # noqa: E402

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
    warm_up()

    t0 = time.perf_counter()
    serial = []
    for c in cases:
        serial.append(run_case(c, t0))
        print(f"  serial {c.key}: {serial[-1]['duration_s']} s", file=sys.stderr)
    serial_wall = time.perf_counter() - t0

    par, par_wall = parallel_pass(cases, workers, staged=False)
    staged, staged_wall = parallel_pass(cases, workers, staged=True)
    cli = None if args.quick else cli_pass()

    rows: list[list[Any]] = []
    row_ok: dict[str, list[bool]] = {"all": [], "staged": []}
    for s, q, st in zip(serial, par, staged, strict=True):
        cells: list[Any] = [s["key"], s["client"], s["duration_s"], f"{s['machine_busy_cores']:.2f}"]
        for name, r in (("all", q), ("staged", st)):
            rel = r["duration_s"] / s["duration_s"] if s["duration_s"] and r["duration_s"] else None
            ok = rel is not None and abs(rel - 1) <= ROW_TOLERANCE
            row_ok[name].append(ok)
            cells += [r["duration_s"], f"{rel:.3f}" if rel else "-", verdict(ok)]
        cells += [f"{q['end_s']:.2f}", f"{st['start_s']:.2f}", f"{st['end_s']:.2f}",
                  "yes" if s["verified"] and q["verified"] and st["verified"] else "NO"]
        rows.append(cells)
    slowest = max(serial, key=lambda r: r["duration_s"] or 0)
    # A row's wall time in the parallel pass includes its setup and verification, not just the copy.
    slowest_wall = slowest["end_s"] - slowest["start_s"]
    factor = par_wall / slowest["duration_s"]
    factor_staged = staged_wall / slowest["duration_s"]
    seven = [q for q in par if q["key"].startswith("ref-")]
    seven_done = max((q["end_s"] for q in seven), default=None)
    seven_serial = sum(s["duration_s"] for s in serial if s["key"].startswith("ref-"))

    quick = " (--quick: 8M, 1ms)" if args.quick else ""
    print(table(["row", "client", "serial s", "machine busy cores (serial)", "all at once s", "/serial", "+-5%",
                 "staged s", "/serial", "+-5%", "all: done at s", "staged: start s", "staged: done at s",
                 "verified"], rows,
                title=f"Sweep speed: {len(cases)} case-study rows, serial vs up to {workers} at once{quick}"))
    print()
    print(table(["pass", "wall s", "slowest row copy s", "wall / slowest", "target", "",
                 "rows within 5% of serial", ""],
                [["serial (one after another)", serial_wall, slowest["duration_s"],
                  f"{serial_wall / slowest['duration_s']:.2f}", "-", "-", "-", "-"],
                 [f"parallel, all at once ({workers} workers)", par_wall, slowest["duration_s"], f"{factor:.2f}",
                  f"<= {WALL_TARGET}", verdict(factor <= WALL_TARGET),
                  f"{sum(row_ok['all'])}/{len(cases)}", verdict(all(row_ok["all"]))],
                 ["parallel, staged (parallel clients first)", staged_wall, slowest["duration_s"],
                  f"{factor_staged:.2f}", f"<= {WALL_TARGET}", verdict(factor_staged <= WALL_TARGET),
                  f"{sum(row_ok['staged'])}/{len(cases)}", verdict(all(row_ok["staged"]))]]))
    print()
    if seven:
        print(table(["the talk's seven reference rows", "copy time, serial sum s", "wall s"],
                    [["talk (2019, one after another)", TALK_SEVEN_S, TALK_SEVEN_S],
                     ["lab, one after another", seven_serial, sum(s["end_s"] - s["start_s"] for s in serial
                                                                   if s["key"].startswith("ref-"))],
                     [f"lab, all at once (inside the {len(cases)}-row pass)", seven_serial, seven_done]]))
        print()
    if cli is not None:
        slow = [r for r in cli["rows"] if r["status"] == "succeeded"]
        cli_factor = cli["wall_s"] / slowest["duration_s"]
        by_key = {s["key"]: s for s in serial}
        cli_ok = [abs(r["duration_s"] / by_key[r["label"]]["duration_s"] - 1) <= ROW_TOLERANCE for r in slow
                  if r.get("label") in by_key and r.get("duration_s") and by_key[r["label"]]["duration_s"]]
        contended = sum(1 for r in cli["rows"] if r.get("contended"))
        print(table(["command", "rows", "succeeded", "wall s", "wall / slowest serial row", "target", "",
                     "rows within 5% of serial", "", "marked contended"],
                    [[f"lab scenario case-study --workers {CLI_WORKERS} --json", len(cli["rows"]), len(slow),
                      cli["wall_s"], f"{cli_factor:.2f}", f"<= {WALL_TARGET}", verdict(cli_factor <= WALL_TARGET),
                      f"{sum(cli_ok)}/{len(cli['rows'])}", verdict(len(cli_ok) == len(cli["rows"]) and all(cli_ok)),
                      contended]],
                    title="The lab's own scheduler (lab/service/scheduler.py: CPU-bound rows alone, sleep-bound rows "
                          "together), "
                          "from the command line"))
        print()
    print(f"slowest row: {slowest['key']} ({slowest['duration_s']:.2f} s copy, {slowest_wall:.2f} s with setup "
          f"and verify); parallel pass {par_wall:.2f} s for all {len(cases)} rows")
    print(machine_note())
    write_json(args.json, {"serial": serial, "parallel": par, "staged": staged, "serial_wall_s": serial_wall,
                           "parallel_wall_s": par_wall, "staged_wall_s": staged_wall, "workers": workers,
                           "factor": factor, "factor_staged": factor_staged})
    return 0 if all(r["status"] == "succeeded" for r in serial + par + staged) else 1


CLI_WORKERS = 16


def cli_pass() -> dict[str, Any]:
    """`lab scenario case-study --workers 16 --json` as a user runs it (its own wall clock)."""
    lab = Path(sys.executable).with_name("lab")
    out = subprocess.run([str(lab), "scenario", "case-study", "--workers", str(CLI_WORKERS), "--json"],
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"lab scenario failed ({out.returncode}): {out.stderr[-500:]}")
    return json.loads(out.stdout)


def parallel_pass(cases: list[Case], workers: int, staged: bool) -> tuple[list[dict[str, Any]], float]:
    """Run the cases in threads; staged: parallel-client rows first, on their own. Rows come back in order."""
    t0 = time.perf_counter()
    waves = [cases]
    if staged:
        waves = [[c for c in cases if get_client(c.client).parallel],
                 [c for c in cases if not get_client(c.client).parallel]]
    done: dict[str, dict[str, Any]] = {}
    for wave in waves:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(wave) or 1))) as pool:
            for r in pool.map(lambda c: run_case(c, t0), wave):
                done[r["key"]] = r
    return [done[c.key] for c in cases], time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
