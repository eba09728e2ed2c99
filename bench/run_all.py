"""Run every benchmark, one after another, and print every table (`make bench`).

Order matters once: sweep_speed.py runs the case study serially and hands those rows to
fidelity.py (--case-study-from), so the 19 rows run one at a time once and serve both.
`--quick` passes --quick to every script (seconds; what tests/test_bench_smoke.py runs).
`--save FILE` also writes the combined output as Markdown (the figures in docs/benchmarks.md).
Target: the whole set in under 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUDGET_S = 600.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks every script works (seconds)")
    p.add_argument("--save", metavar="FILE", help="also write the combined tables as Markdown to FILE")
    p.add_argument("--only", help="comma-separated script names to run (default all)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fzl-bench-all-"))
    sweep_json = tmp / "sweep_speed.json"
    plan: list[tuple[str, list[str]]] = [
        ("overhead", []),
        ("sweep_speed", ["--json", str(sweep_json)]),
        ("fidelity", ["--case-study-from", str(sweep_json)]),
        ("throughput", []),
        ("chain_hop", []),
        ("block_status", []),
        ("streaming", []),
        ("sse_layer", []),
        ("footprint", []),
        ("load", []),
        ("cancel", []),
    ]
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        plan = [(n, a) for n, a in plan if n in wanted]
        if "fidelity" in wanted and "sweep_speed" not in wanted:  # nothing to reuse: run its own case study
            plan = [(n, [] if n == "fidelity" else a) for n, a in plan]
    quick = ["--quick"] if args.quick else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    outputs: list[tuple[str, str, float, int, str]] = []
    for name, extra in plan:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *quick, *extra]
        shown = " ".join([".venv/bin/python", f"bench/{name}.py", *quick, *extra]).replace(str(tmp), "$TMP")
        print(f"\n## {name}: {shown}\n", flush=True)
        t = time.perf_counter()
        # Tables on stdout are collected; progress on stderr goes straight to the terminal.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
        secs = time.perf_counter() - t
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            print(f"[{name} exited {proc.returncode}; see its messages above]", flush=True)
        print(f"({name}: {secs:.0f} s)", flush=True)
        outputs.append((name, proc.stdout, secs, proc.returncode, shown))
    total = time.perf_counter() - t0
    summary = ["| script | seconds | exit |", "|---|---:|---:|"]
    summary += [f"| {n} | {s:.0f} | {rc} |" for n, _, s, rc, _ in outputs]
    verdict = "PASS" if total < BUDGET_S else "MISS"
    summary.append(f"| **total** | **{total:.0f}** | target < {BUDGET_S:.0f} s: {verdict} |")
    print("\n## Time taken\n\n" + "\n".join(summary))
    if args.save:
        parts = [f"## {n}\n\n`{cmd}`\n\n{out.strip()}\n\n({s:.0f} s, exit {rc})" for n, out, s, rc, cmd in outputs]
        Path(args.save).write_text("\n\n".join(parts) + "\n\n## Time taken\n\n" + "\n".join(summary) + "\n")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0 if all(o[3] == 0 for o in outputs) else 1


if __name__ == "__main__":
    sys.exit(main())
