"""Is the lab faithful? measured / predicted for every case-study row and a geometry sweep.

The model (lab/domain/floor.py) says a client with one request in flight pays every backend
request's delay in series: predicted = writes x delay-write + zeroes x delay-zero. Anything
above that is time the sleep model does not see. Each row is split, from the log filter's
timestamps (bench/_timeline.py), into
- server extra: time inside nbdkit per request beyond the sleeps (splitting, copying, waking up);
- client gaps:  time between a reply and the client's next request (its own per-request work);
- lead:         client start to first request plus last reply to exit (process start, handshake).
So a miss says where the time went, not just that it went.

The sweep runs one at a time by default (--workers 1): its data-heavy rows are partly
CPU-bound, and the 2-core machine is shared with other work; the 'others' cores' column
(the whole machine during the copy, /proc/stat, minus the run's own nbdkit and client) says
how much else was going on, and the summary also counts the rows that ran undisturbed (others
below lab.measure.contention's 0.35 cores: the run is not `contended`). Whole-machine busy cores are
shown too, but a bandwidth-bound copy keeps up to two cores busy by itself.
Parallel clients (nbdcopy) overlap their requests: for them the serial sum is an upper
bound, and the check is ratio <= 1.

The floor ignores everything but the sleeps; the lab's calibrated expectation (lab/measure/expectation.py:
the floor plus this machine's per-request, per-byte and fixed costs, measured by `lab calibrate`
on geometries that are none of these) is checked too: every in-order row within 5% of
expected_s, and the floor never above the measured time. The calibration is made first if this
machine has none (cached in var/calibration.json), or always with --recalibrate; the coefficients
used are printed at the end, with how many calibration points were contended.
Rows without delays are sub-second, bandwidth-bound copies: on this machine one such copy in 10-20
runs takes 1.5-3x as long, in bare `nbdkit --run` copies as in the lab's (the kernel's copy of the
client's buffer into the socket, `_copy_from_iter` under sendmsg, runs ~5x slower for the whole run:
perf, docs/benchmarks.md), and the rest vary +-5%. The lab marks such a run itself (its own processes
used more CPU than the calibration expects for its counts: `slow_copy_path`, lab.measure.contention). So
such a row runs BANDWIDTH_REPEAT times and the median of its unmarked runs counts (of all, if every
one was marked); every run's time is kept in the JSON as `runs_s`. Rows with delays run once.
Before and after the sweep the calibration's steady point (384 MiB, 1M, which sets the per-MiB rate)
is measured again as the calibration measures it: when the machine itself has moved since the
calibration, every bandwidth-bound row moves with it, and the table says by how much.
`--case-study-from FILE` takes the case-study rows from sweep_speed.py's serial pass (run_all
does this, so the 19 rows run once, one at a time, with no contention from each other).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from _runs import QUICK_SERVER, TOLERANCE, Case, case_study, run_case, warm_up  # noqa: E402

from lab.domain.units import format_delay, format_size  # noqa: E402
from lab.measure.contention import CONTENDED_CORES  # noqa: E402

# Geometries chosen so each run predicts 1-4 s: long enough for a 5% reading, short enough
# to run the whole sweep in about a minute. Sizes 16 MiB-1 GiB, five patterns, delays
# 1-20 ms, maxdata 64k-1M; server A (zeroes cheap) and B (zeroes emulated as writes).
# Last field: the clients (qemu-2.7 sends every hole as zero bytes: minutes on 1 GiB).
ALL = ("qemu-4.2", "qemu-2.7", "qemu-img")
NO_27 = ("qemu-4.2", "qemu-img")
GEOMETRIES: tuple[tuple[str, dict[str, Any], str, tuple[str, ...]], ...] = (
    ("16M alt:1M 64k 10ms", {"size": "16M", "pattern": "alternate:1M", "maxdata": "64k",
                             "delay_write": "10ms", "delay_zero": "5ms"}, "small requests", ALL),
    ("32M full 64k 1ms", {"size": "32M", "pattern": "full", "maxdata": "64k", "delay_write": "1ms",
                          "delay_zero": "1ms"}, "1 ms delays: per-request cost shows", ALL),
    ("64M alt:64k 256k 5ms", {"size": "64M", "pattern": "alternate:64k", "maxdata": "256k",
                              "delay_write": "5ms", "delay_zero": "2ms", "zeromode": "plugin"},
     "512 small extents, server A", NO_27),
    ("64M alt:1M:3M 256k 20ms", {"size": "64M", "pattern": "alternate:1M:3M", "maxdata": "256k",
                                 "delay_write": "20ms", "delay_zero": "5ms", "zeromode": "plugin"}, "server A", NO_27),
    ("128M alt:1M 1M 20ms B", {"size": "128M", "pattern": "alternate:1M", "maxdata": "1M",
                               "delay_write": "20ms", "delay_zero": "5ms", "zeromode": "emulate"}, "server B", ALL),
    ("256M alt:4M:12M 1M 20ms", {"size": "256M", "pattern": "alternate:4M:12M", "maxdata": "1M",
                                 "delay_write": "20ms", "delay_zero": "5ms", "zeromode": "plugin"}, "server A", NO_27),
    ("1G alt:1M:31M 1M 20ms", {"size": "1G", "pattern": "alternate:1M:31M", "maxdata": "1M",
                               "delay_write": "20ms", "delay_zero": "5ms", "zeromode": "plugin"},
     "1 GiB, 32 MiB data, server A", NO_27),
    ("1G empty 1M 2/20ms", {"size": "1G", "pattern": "empty", "maxdata": "1M", "delay_write": "2ms",
                            "delay_zero": "20ms", "zeromode": "plugin", "fastzeromode": "none"},
     "1 GiB all hole; qemu-2.7 moves 1 GiB of zero bytes", ALL),
    # no delays at all: the floor is 0 and the whole time is the machine's (bytes, requests, start)
    ("256M full 256k 0ms", {"size": "256M", "pattern": "full", "maxdata": "256k", "delay_write": "0ms",
                            "delay_zero": "0ms", "zeromode": "plugin"}, "no delays: bytes and requests", NO_27),
    ("1G full 1M 0ms", {"size": "1G", "pattern": "full", "maxdata": "1M", "delay_write": "0ms",
                        "delay_zero": "0ms", "zeromode": "plugin"}, "no delays, 1 GiB of data", NO_27),
    ("96M alt:512k:1536k 128k 3ms B", {"size": "96M", "pattern": "alternate:512k:1536k", "maxdata": "128k",
                                      "delay_write": "3ms", "delay_zero": "1ms", "zeromode": "emulate"},
     "server B, short delays", ALL),
    ("512M alt:2M:6M 512k 0ms", {"size": "512M", "pattern": "alternate:2M:6M", "maxdata": "512k",
                                 "delay_write": "0ms", "delay_zero": "0ms", "zeromode": "plugin"},
     "no delays, sparse", NO_27),
    ("48M alt:256k 64k 2/0ms", {"size": "48M", "pattern": "alternate:256k", "maxdata": "64k",
                                "delay_write": "2ms", "delay_zero": "0ms", "zeromode": "plugin"},
     "many extents, free zeroes", ALL),
)


BANDWIDTH_REPEAT = 3


def run_row(case: Case) -> dict[str, Any]:
    """One case's row: one run, or for a row without delays the median of BANDWIDTH_REPEAT runs."""
    first = run_case(case)
    if first["delay_write"] or first["delay_zero"]:
        return first
    rows = [first, *(run_case(case) for _ in range(BANDWIDTH_REPEAT - 1))]
    clean = [r for r in rows if not r.get("slow_copy_path")] or rows
    ordered = sorted(clean, key=lambda r: r["duration_s"] or 0.0)
    return {**ordered[(len(ordered) - 1) // 2], "runs_s": [r["duration_s"] for r in rows],
            "slow_path_runs": sum(1 for r in rows if r.get("slow_copy_path"))}


def sweep_cases(quick: bool) -> list[Case]:
    out = []
    for name, server, note, clients in (GEOMETRIES[:2] if quick else GEOMETRIES):
        for client in clients[:1] if quick else clients:
            out.append(Case(f"{name} / {client}", client, {**server, **(QUICK_SERVER if quick else {})}, note))
    return out


def _busy(r: dict[str, Any], key: str = "machine_busy_cores") -> str:
    v = r.get(key)
    return "-" if v is None else f"{v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _row(r: dict[str, Any], geometry: bool) -> list[Any]:
    target = "<= 1.01 (bound)" if r["parallel"] else f"1 +- {TOLERANCE:.2f}"
    head = [r["key"]]
    if geometry:
        head += [format_size(r["size"]), r["pattern"], format_size(r["maxdata"]),
                 f"{format_delay(r['delay_write'])}/{format_delay(r['delay_zero'])}", r["zeromode"]]
    else:
        head += [r["client"], r["zeromode"], r["fastzeromode"]]
    status = "yes" if r["verified"] else f"NO ({r['status']}: {r['error']})"
    exp = r.get("expected_s")
    per_byte = (r.get("breakdown") or {}).get("per_byte_s")
    runs = r.get("runs_s")
    slow = f"; {r['slow_path_runs']} on the slow path" if r.get("slow_path_runs") else ""
    measured = r["duration_s"] if not runs else f"{r['duration_s']} (of {', '.join(map(str, runs))}{slow})"
    return [*head, measured, r["predicted_s"], f"{r['ratio']:.3f}" if r["ratio"] else "-", target,
            verdict(r["ok"]), exp if exp is not None else "-", "-" if per_byte is None else f"{per_byte:.3f}",
            f"{r['exp_ratio']:.3f}" if r.get("exp_ratio") else "-", verdict(r.get("exp_ok")),
            verdict(r.get("floor_ok")), _ms(r["server_extra_s"]), _ms(r["gaps_s"]), _ms(r["lead_s"]),
            r["write_ops"], r["zero_ops"], _busy(r), _busy(r, "others_cores"), status]


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1, help="runs at once (default 1: no self-contention)")
    p.add_argument("--only", choices=("case-study", "sweep"), help="run one part only")
    p.add_argument("--case-study-from", metavar="FILE", help="sweep_speed.py --json output: reuse its serial rows")
    p.add_argument("--recalibrate", action="store_true",
                   help="run `lab calibrate` first even if this machine has a calibration (e.g. one made under load)")
    args = p.parse_args()
    print(machine_note(), file=sys.stderr)
    if not args.quick:  # --quick checks the script, in seconds: no calibration run for it
        ensure_calibrated(force=args.recalibrate)
    warm_up()
    drift = [] if args.quick or args.only == "case-study" else steady_drift("before")
    t0 = time.perf_counter()
    study_rows: list[dict[str, Any]] = []
    todo: list[Case] = []
    source = f"{args.workers} at a time"
    if args.only != "sweep":
        if args.case_study_from:
            study_rows = json.loads(Path(args.case_study_from).read_text())["serial"]
            source = "serial rows from sweep_speed.py"
        else:
            todo += case_study(args.quick, ("ref-none", "ref-plugin-default", "nbdcopy-A") if args.quick else None)
    if args.only != "case-study":
        todo += sweep_cases(args.quick)
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        done = list(pool.map(run_row, todo))
    wall = time.perf_counter() - t0
    sweep_keys = {c.key for c in sweep_cases(args.quick)}
    study_rows += [r for r in done if r["key"] not in sweep_keys]
    sweep_rows = [r for r in done if r["key"] in sweep_keys]

    split_heads = ["server extra ms", "client gaps ms", "lead ms", "writes", "zeroes", "machine busy cores",
                   "others' cores", "verified"]
    ratio_heads = ["measured s", "floor s", "measured/floor", "target", "", "expected s", "of it per byte s",
                   "measured/expected", "within 5%", "floor <= measured"]
    quick = " (--quick: 8M, 1ms; ratios not meaningful)" if args.quick else ""
    if study_rows:
        print(table(["row", "client", "zeromode", "fastzero", *ratio_heads, *split_heads],
                    [_row(r, False) for r in study_rows],
                    title=f"Fidelity: case study, 100M alternate:1M, 256k, 20ms/5ms ({source}){quick}"))
        print()
    if sweep_rows:
        print(table(["geometry / client", "size", "pattern", "maxdata", "delay w/z", "zeromode", *ratio_heads,
                     *split_heads], [_row(r, True) for r in sweep_rows],
                    title=f"Fidelity: geometry sweep ({args.workers} at a time){quick}"))
        print()
    rows = study_rows + sweep_rows
    serial = [r for r in rows if not r["parallel"] and r["ok"] is not None]
    bound = [r for r in rows if r["parallel"]]
    summary = [["case study, in-order clients", *_count([r for r in study_rows if not r["parallel"]])],
               ["geometry sweep, in-order clients", *_count([r for r in sweep_rows if not r["parallel"]])],
               ["parallel clients under the serial bound", *_count(bound)]]
    quiet = [r for r in rows if _quiet(r)]
    summary += [[f"case study, in-order, undisturbed (others < {QUIET_CORES} cores)",
                 *_count([r for r in quiet if r in study_rows and not r["parallel"]])],
                [f"geometry sweep, in-order, undisturbed (others < {QUIET_CORES} cores)",
                 *_count([r for r in quiet if r in sweep_rows and not r["parallel"]])]]
    exp_rows = [r for r in rows if not r["parallel"]]
    summary += [["case study, in-order: within 5% of expected_s",
                 *_count_exp([r for r in exp_rows if r in study_rows])],
                ["geometry sweep, in-order: within 5% of expected_s", *_count_exp([r for r in exp_rows
                                                                                   if r in sweep_rows])],
                ["geometry sweep, in-order, undisturbed: within 5% of expected_s",
                 *_count_exp([r for r in exp_rows if r in sweep_rows and _quiet(r)])],
                ["geometry sweep, in-order, no delays (bandwidth-bound): within 5% of expected_s",
                 *_count_exp([r for r in exp_rows if r in sweep_rows and not r["predicted_s"]])],
                ["every in-order row: floor <= measured", *_count_floor(exp_rows)]]
    print(table(["check", "within target", "rows", ""], summary))
    print()
    if drift:
        drift += steady_drift("after")
        print(table(["when", "kind", "in the calibration s", "now s", "now / calibration"], drift,
                    title="The calibration's steady point (384M full 1M, median of 3) measured again: a drift of the "
                    "machine moves every bandwidth-bound row with it"))
        print()
    print(f"{len(todo)} runs here in {wall:.1f} s wall")
    print(calibration_note())
    print(machine_note())
    write_json(args.json, {"wall_s": wall, "rows": rows, "serial_ok": len(serial), "steady_drift": drift})
    failed = [r["key"] for r in rows if r["status"] != "succeeded"]
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


QUIET_CORES = CONTENDED_CORES


def _quiet(r: dict[str, Any]) -> bool:
    """Undisturbed: others' work (not the run's own processes) stayed under the contention limit."""
    v = r.get("others_cores")
    return v is not None and v < QUIET_CORES


def calibration_note() -> str:
    """The calibration the expectations came from: a noisy one explains a noisy column."""
    from lab.cli.report import calibration_table
    from lab.measure import expectation

    cal = expectation.load()
    return "expected_s: no calibration" if cal is None else "expected_s from " + calibration_table(cal)


def steady_drift(when: str) -> list[list[Any]]:
    """The calibration's steady point (the 384 MiB copy that sets the per-MiB rate) measured again
    now, as the calibration measures it, per in-order kind: how far the machine has moved since."""
    import threading

    from lab.measure import calibration, expectation

    cal = expectation.load()
    if cal is None:
        return []
    steady = next(p for p in calibration.PLAN_SERIAL if p.repeat > calibration.REPEAT)._replace(repeat=3)
    rows = []
    for kind in expectation.KINDS:
        fit = cal.fits.get(kind.key)
        then = next((p["measured_s"] for p in (fit.points if fit else []) if p["geometry"] == list(steady[:5])), None)
        if kind.parallel or kind.build != "single" or then is None:
            continue
        [now] = calibration._measure_plan(kind, [steady], threading.Event(), lambda: False)
        rows.append([when, kind.key, then, now["measured_s"], f"{now['measured_s'] / then:.3f}"])
    return rows


def ensure_calibrated(force: bool = False) -> None:
    from lab.measure import calibration, expectation

    if force or expectation.load() is None:
        print("calibrating this machine first (lab calibrate; cached in var/calibration.json)", file=sys.stderr)
        calibration.calibrate(progress=lambda m: print("  " + m, file=sys.stderr))


def _count_exp(rows: list[dict[str, Any]]) -> list[Any]:
    ok = sum(1 for r in rows if r.get("exp_ok"))
    return [f"{ok}/{len(rows)}", len(rows), verdict(ok == len(rows)) if rows else "-"]


def _count_floor(rows: list[dict[str, Any]]) -> list[Any]:
    ok = sum(1 for r in rows if r.get("floor_ok"))
    return [f"{ok}/{len(rows)}", len(rows), verdict(ok == len(rows)) if rows else "-"]


def _count(rows: list[dict[str, Any]]) -> list[Any]:
    ok = sum(1 for r in rows if r["ok"])
    return [f"{ok}/{len(rows)}", len(rows), verdict(ok == len(rows)) if rows else "-"]


if __name__ == "__main__":
    sys.exit(main())
