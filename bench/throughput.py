"""Copy throughput without delays, and memory per run against image size.

Part 1: a 1 GiB all-data image into the lab's own stack (memory plugin, every filter, no
delays) with our libnbd client (qemu-4.2 re-enactment) at queue depth 1 and 16, nbdcopy
and qemu-img. Each client runs twice (alternating); the better run counts (the 2-core
machine is shared, so the better run is the one less disturbed). Target: depth-16 client
at least 0.8x nbdcopy.

Part 2: is the lab's debug-stream parsing (lab/servers.py reads `-D nbdkit.backend.datapath=1`
line by line) a bottleneck at high op rates? The same nbdcopy copy run bare with
`nbdkit --run` (no debug stream; and with it, to /dev/null), against the lab; plus the CPU
the lab's reader thread spent parsing (thread CPU time, clocked in the reader itself).

Part 3: peak RSS of one run in a fresh subprocess (the lab process: orchestration, the
in-process libnbd client, streaming verify) at 256 MiB and 1 GiB. nbdkit's memory plugin
holds the destination's bytes, so the children's peak grows with the image by design.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _timeline
from _common import BENCH, MachineBusy, MiB, machine_note, parser, setup_env, strip_debug, table, verdict, write_json

TMP = setup_env()

from lab import images, procs  # noqa: E402
from lab.runs import Run, execute  # noqa: E402
from lab.servers import build_argv  # noqa: E402
from lab.spec import ServerSpec, build_spec  # noqa: E402
from lab.testing import rss_kib  # noqa: E402

TARGET_VS_NBDCOPY = 0.8
CLIENTS = (("qemu-4.2", 1), ("qemu-4.2", 16), ("nbdcopy", 1), ("qemu-img", 1))


def fields(size: str, maxdata: str) -> dict[str, Any]:
    return {"size": size, "pattern": "full", "maxdata": maxdata, "delay_write": "0ms", "delay_zero": "0ms",
            "zeromode": "plugin"}


def lab_copy(spec: ServerSpec, client: str, depth: int) -> dict[str, Any]:
    _timeline.keep_lab_logs()
    busy = MachineBusy()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    run = execute(Run(client=client, server=spec, queue_depth=depth), timeout=600)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    _timeline.last_lab_log()
    if run.status != "succeeded":
        raise RuntimeError(f"{client} failed: {run.error}")
    return {"duration_s": run.duration_s, "verify_s": run.verify_s, "setup_s": run.setup_s,
            "reader_cpu_s": _timeline.last_reader_cpu(), "write_ops": run.backend.write_ops,
            "lab_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), "verified": run.verified,
            "machine_busy_cores": busy.cores()}


def bare_nbdcopy(spec: ServerSpec, image: images.Image, debug: bool) -> float:
    """nbdcopy inside `nbdkit --run`, clocked by bench/_timed.py; debug stream to /dev/null if asked."""
    workdir = procs.private_dir("bare-")
    try:
        timing = workdir / "timing.txt"
        argv = build_argv(spec, workdir / "nbd.sock", workdir / "wire.log", workdir / "stats.txt")
        if not debug:
            argv = strip_debug(argv)
        cmd = shlex.join([sys.executable, str(BENCH / "_timed.py"), str(timing), "nbdcopy", "--", str(image.raw)])
        argv = [argv[0], "--run", cmd + ' "$uri"', *argv[1:]]
        p = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.wait()
        procs.stop(p)
        secs, rc = timing.read_text().split()
        if p.returncode != 0 or int(rc) != 0:
            raise RuntimeError(f"bare nbdcopy failed ({p.returncode}/{rc})")
        return float(secs)
    finally:
        procs.remove_dir(workdir)


def rss_child(size: str, client: str, depth: int) -> dict[str, Any]:
    """Run in a fresh interpreter: one run, then this process's and its children's peak RSS."""
    out = subprocess.run([sys.executable, str(Path(__file__)), "--rss-child", size, client, str(depth)],
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"rss child failed: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_child_main(size: str, client: str, depth: int) -> int:
    spec = build_spec(fields(size, "256k"))
    with images.acquire(spec.size, spec.pattern):  # built before the clock-free measurement starts
        pass
    base = rss_kib(os.getpid())
    run = execute(Run(client=client, server=spec, queue_depth=depth), timeout=600)
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"status": run.status, "verified": run.verified, "self_before_kib": base,
                      "self_peak_kib": me, "children_peak_kib": kids}))
    return 0 if run.status == "succeeded" else 1


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
        return _rss_child_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--maxdata", default="256k", help="backend request size (blocksize filter; default 256k)")
    p.add_argument("--repeat", type=int, default=2, help="runs per client, best counts (default 2)")
    args = p.parse_args()
    size = "16M" if args.quick else "1G"
    repeat = 1 if args.quick else max(1, args.repeat)
    spec = build_spec(fields(size, args.maxdata))
    nbytes = spec.size
    print(machine_note(), file=sys.stderr)

    results: dict[str, list[dict[str, Any]]] = {}
    bare: dict[str, list[float]] = {"no debug": [], "debug to /dev/null": []}
    with images.acquire(spec.size, spec.pattern) as image:
        for i in range(repeat):
            order = CLIENTS if i % 2 == 0 else tuple(reversed(CLIENTS))
            for client, depth in order:
                r = lab_copy(spec, client, depth)
                results.setdefault(f"{client} depth {depth}", []).append(r)
                print(f"  {client} depth {depth}: {r['duration_s']:.3f} s", file=sys.stderr)
            bare["no debug"].append(bare_nbdcopy(spec, image, False))
            bare["debug to /dev/null"].append(bare_nbdcopy(spec, image, True))

    best = {k: min(v, key=lambda r: r["duration_s"]) for k, v in results.items()}
    nbdcopy_s = best["nbdcopy depth 1"]["duration_s"]
    rows = []
    for key, r in best.items():
        vs = nbdcopy_s / r["duration_s"]
        target = f">= {TARGET_VS_NBDCOPY}" if key == "qemu-4.2 depth 16" else "-"
        ok = verdict(vs >= TARGET_VS_NBDCOPY) if key == "qemu-4.2 depth 16" else "-"
        client, depth = key.split(" depth ")
        name = f"{client} (libnbd), queue depth {depth}" if client == "qemu-4.2" else client
        rows.append([name, r["duration_s"], f"{nbytes / MiB / r['duration_s']:.0f}",
            f"{vs:.2f}", target, ok, r["write_ops"], r["reader_cpu_s"], r["verify_s"],
            f"{r['machine_busy_cores']:.2f}",
            "yes" if r["verified"] else "NO"])
    label = f"{size} all data, memory plugin, maxdata {args.maxdata}, no delays"
    print(table(["client", "copy s (best)", "MiB/s", "x nbdcopy", "target", "", "backend writes",
                 "debug reader CPU s", "verify s", "machine busy cores", "verified"], rows,
                title=f"Throughput: {label}, best of {repeat}"))
    print()

    lab_nbd = best["nbdcopy depth 1"]
    bare_best = {k: min(v) for k, v in bare.items()}
    lines_est = lab_nbd["write_ops"]
    print(table(["nbdcopy copy", "copy s (best)", "lab / this"],
                [["bare nbdkit --run, no debug stream", bare_best["no debug"],
                  f"{lab_nbd['duration_s'] / bare_best['no debug']:.3f}"],
                 ["bare nbdkit --run, -v -D datapath to /dev/null", bare_best["debug to /dev/null"],
                  f"{lab_nbd['duration_s'] / bare_best['debug to /dev/null']:.3f}"],
                 ["lab (debug stream parsed live)", lab_nbd["duration_s"], "1.000"]],
                title="Throughput: is the debug stream the bottleneck? (nbdcopy, same stack)"))
    reader = lab_nbd["reader_cpu_s"]
    if reader is not None:
        print(f"\nlab reader thread: {reader:.2f} s CPU for {lines_est} backend writes "
              f"({1e6 * reader / max(1, lines_est):.0f} us per backend write, all layers' lines) during a "
              f"{lab_nbd['duration_s']:.2f} s copy")
    print()

    rss_rows = []
    rss: dict[str, Any] = {}
    sizes = ("8M", "16M") if args.quick else ("256M", "1G")
    for s in sizes:
        rss[s] = rss_child(s, "qemu-4.2", 16)
    a, b = rss[sizes[0]], rss[sizes[1]]
    growth = b["self_peak_kib"] / a["self_peak_kib"]
    for s in sizes:
        r = rss[s]
        rss_rows.append([s, f"{r['self_before_kib'] / 1024:.1f}", f"{r['self_peak_kib'] / 1024:.1f}",
                         f"{r['children_peak_kib'] / 1024:.1f}", "yes" if r["verified"] else "NO"])
    rss_rows.append([f"{sizes[1]} / {sizes[0]}", "-", f"{growth:.3f} (target <= 1.10 {verdict(growth <= 1.10)})",
                     f"{b['children_peak_kib'] / a['children_peak_kib']:.2f}", "-"])
    print(table(["image", "lab process RSS before run MiB", "lab process peak RSS MiB",
                 "largest child peak RSS MiB (nbdkit memory plugin)", "verified"], rss_rows,
                title="Memory per run (qemu-4.2 depth 16, one run per fresh process, ru_maxrss)"))
    print()
    print(machine_note())
    write_json(args.json, {"runs": results, "bare_nbdcopy": bare, "rss": rss, "size": nbytes,
                           "maxdata": args.maxdata})
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
