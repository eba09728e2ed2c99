"""Does the lab add anything to what it measures? Lab-reported copy time vs the same copy run bare.

For each server (the talk's baseline and server A) it alternates pairs of runs:
- lab:  `lab.measure.execute.execute` (qemu-img client), which reports `duration_s` = client start to exit
  while nbdkit streams its debug lines into the lab's parser;
- bare: the same nbdkit stack (argv from `lab.nbd.servers.build_argv`, minus the lab's `-v -D`
  debug stream) with `--run`, as the talk ran it.

How the bare copy is clocked: nbdkit's --run gives no timing of its own, and the wall time of
the whole `nbdkit --run` includes nbdkit's start and shutdown. So the --run command is
`python bench/_timed.py OUT qemu-img convert ... "$uri"`: a tiny wrapper that clocks qemu-img
from spawn to exit with perf_counter, exactly what the lab clocks. The wrapper's own start is
outside its clock. As a cross-check, the table also shows the whole `nbdkit --run` wall time
minus the median wall time of the same stack running `--run true` (nbdkit start + stop).

Alternating the order in each pair (lab first, then bare first) cancels slow drifts in load.
Setup (cached image, server started, ready and probed) comes from `Run.setup_s`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import _timeline
from _common import (
    MachineBusy,
    bare_argv,
    bare_copy,
    machine_note,
    median,
    parser,
    setup_env,
    table,
    verdict,
    within,
    write_json,
)

TMP = setup_env()

from lab.domain.run import Run  # noqa: E402
from lab.domain.spec import ServerSpec, build_spec  # noqa: E402
from lab.host import images, procs  # noqa: E402
from lab.measure.execute import execute  # noqa: E402

RATIO_LO, RATIO_HI = 0.98, 1.02
SETUP_TARGET_S = 0.150


def run_bare(spec: ServerSpec, image: images.Image) -> dict[str, Any]:
    """One bare copy; returns the wrapper's client time, the whole nbdkit wall time and the split."""
    client = ["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", str(image.qcow2)]
    bare = bare_copy(spec, client, keep_log=True)
    tl = _timeline.parse(bare.wire_log) if bare.wire_log else None
    return {"client_s": bare.client_s, "wall_s": bare.wall_s, "split": tl.split(bare.client_s) if tl else None}


def nbdkit_start_stop(spec: ServerSpec, repeat: int) -> float:
    """Median wall time of the same stack with `--run true`: what nbdkit itself costs per run."""
    walls = []
    for _ in range(repeat):
        workdir = procs.private_dir("bare-")
        try:
            t0 = time.perf_counter()
            p = procs.spawn(bare_argv(spec, workdir, "true"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            p.wait()
            walls.append(time.perf_counter() - t0)
            procs.stop(p)
        finally:
            procs.remove_dir(workdir)
    return median(walls) or 0.0


def run_lab(spec: ServerSpec) -> tuple[Run, dict | None]:
    run = execute(Run(client="qemu-img", server=spec), timeout=300)
    if run.status != "succeeded":
        raise RuntimeError(f"lab run failed: {run.error}")
    text = _timeline.last_lab_log()
    tl = _timeline.parse(text) if text else None
    return run, (tl.split(run.duration_s) if tl else None)


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    pairs = 1 if args.quick else 3
    base = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"} if args.quick else {}
    servers = [("baseline (zeromode=none)", build_spec(base)),
               ("server A (zeromode=plugin)", build_spec({**base, "zeromode": "plugin"}))]
    print(machine_note(), file=sys.stderr)
    _timeline.keep_lab_logs()

    detail_rows, summary_rows, split_rows, setups, results = [], [], [], [], []
    for name, spec in servers:
        with images.acquire(spec.size, spec.pattern) as image:  # builds once; the runs below find it cached
            start_stop = nbdkit_start_stop(spec, 3 if args.quick else 5)
            labs, bares, walls, splits = [], [], [], []
            for i in range(pairs):
                order = ("lab", "bare") if i % 2 == 0 else ("bare", "lab")
                got: dict[str, object] = {}
                busy = MachineBusy()
                for which in order:
                    if which == "lab":
                        got["lab"] = run_lab(spec)
                    else:
                        got["bare"] = run_bare(spec, image)
                lab_run, lab_split = got["lab"]
                bare = got["bare"]
                splits.append(("lab", lab_split))
                splits.append(("bare", bare["split"]))
                labs.append(lab_run.duration_s)
                bares.append(bare["client_s"])
                walls.append(bare["wall_s"] - start_stop)
                setups.append(lab_run.setup_s)
                detail_rows.append([name, f"{i + 1} ({order[0]} first)", lab_run.duration_s, bare["client_s"],
                                    f"{lab_run.duration_s / bare['client_s']:.4f}",
                                    bare["wall_s"] - start_stop, lab_run.setup_s, lab_run.backend.write_ops,
                                    lab_run.backend.zero_ops, f"{busy.cores():.2f}",
                                    "yes" if lab_run.verified else "NO"])
                print(f"  {name} pair {i + 1}: lab {lab_run.duration_s:.3f} s, bare {bare['client_s']:.3f} s",
                      file=sys.stderr)
        for side in ("lab", "bare"):
            got_splits = [sp for who, sp in splits if who == side and sp]
            if got_splits:
                split_rows.append([name, side, *(median([sp[k] for sp in got_splits]) for k in
                                                  ("requests", "span_s", "service_s", "gaps_s", "lead_s"))])
        lab_m, bare_m, wall_m = median(labs), median(bares), median(walls)
        ratio = lab_m / bare_m
        ratio_wall = lab_m / wall_m if wall_m else None
        summary_rows.append([name, lab_m, bare_m, f"{ratio:.4f}", f"{RATIO_LO}-{RATIO_HI}",
                             verdict(within(ratio, RATIO_LO, RATIO_HI)),
                             f"{ratio_wall:.4f}" if ratio_wall else "-", start_stop])
        results.append({"server": name, "lab_s": labs, "bare_s": bares, "bare_wall_minus_start_s": walls,
                        "nbdkit_start_stop_s": start_stop, "ratio": ratio, "ratio_wall": ratio_wall})

    setup_m, setup_max = median(setups), max(setups)
    print(table(["server", "lab copy s (median)", "bare copy s (median)", "lab/bare", "target", "",
                 "lab/(bare wall - start)", "nbdkit --run true s"], summary_rows,
                title=f"Overhead: lab vs bare nbdkit --run, qemu-img client, {pairs} alternating pair(s) each"))
    print()
    print(table(["run setup (cached image, server ready, probed)", "median s", "max s", "target", ""],
                [["Run.setup_s", setup_m, setup_max, f"< {SETUP_TARGET_S}", verdict(setup_max < SETUP_TARGET_S)]]))
    print()
    print(table(["server", "side", "requests", "span s", "service s", "gaps s", "lead s"], split_rows,
                title="Overhead: where the copy time goes (medians; log filter timestamps, see bench/_timeline.py)"))
    print()
    print(table(["server", "pair", "lab s", "bare s", "lab/bare", "bare wall-start s", "setup s", "writes",
                 "zeroes", "machine busy cores", "verified"], detail_rows, title="Overhead: every pair"))
    print()
    print(machine_note())
    write_json(args.json, {"summary": results, "setup_s": setups})
    return 0


if __name__ == "__main__":
    sys.exit(main())
