"""Copy throughput without delays, and memory per run against image size.

Part 1: a 1 GiB all-data image into the lab's own stack (memory plugin, every filter, no
delays) with our libnbd client (qemu-4.2 re-enactment) at queue depth 1 and 16, nbdcopy
and qemu-img. Each client runs twice (alternating); the better run counts (the 2-core
machine is shared, so the better run is the one less disturbed). Target: depth-16 client
at least 0.8x nbdcopy.

Part 2: what does observing cost at full speed? The lab (live counts from nbdkit's datapath
debug stream, read by lab/nbd/servers.py in batches) against the same stack bare, without `-v`:
nbdcopy inside `nbdkit --run` (clocked by bench/_timed.py, spawn to exit, as the lab clocks
it), and the qemu-4.2 re-enactment at queue depth 16 in its own child process against a
bare nbdkit (its own connect-to-disconnect clock, as in the lab). Alternating pairs, medians;
target lab / bare <= 1.05. Also nbdcopy bare with the debug stream to /dev/null (what
nbdkit's own debug lines cost) and the CPU the lab's reader threads spent.

Part 3: peak RSS of one run in a fresh subprocess (the lab process: orchestration, the
in-process libnbd client, streaming verify) at 256 MiB and 1 GiB. nbdkit's memory plugin
holds the destination's bytes, so the children's peak grows with the image by design.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _timeline
from _common import (
    MachineBusy,
    MiB,
    bare_argv,
    bare_copy,
    machine_note,
    median,
    parser,
    setup_env,
    table,
    verdict,
    write_json,
)

TMP = setup_env()

from lab.domain.run import Run  # noqa: E402
from lab.domain.spec import ServerSpec, build_spec  # noqa: E402
from lab.host import images, procs  # noqa: E402
from lab.measure.execute import execute  # noqa: E402
from testkit import rss_kib  # noqa: E402

TARGET_VS_NBDCOPY = 0.8
TARGET_OBSERVER = 1.05
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
    return bare_copy(spec, ["nbdcopy", "--", str(image.raw)], debug=debug).client_s


def bare_era(spec: ServerSpec, image: images.Image, client: str, depth: int) -> float:
    """An era client (its own child process, as in the lab) against the bare stack: no -v."""
    import nbd

    from lab.nbd.clients import CopyContext
    from lab.nbd.clients.child import run_in_child
    from lab.nbd.servers import probe

    workdir = procs.private_dir("bare-")
    p = procs.spawn(bare_argv(spec, workdir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        uri = f"nbd+unix:///?socket={workdir / 'nbd.sock'}"
        deadline = time.monotonic() + 10
        while True:  # bench only: the lab itself waits on nbdkit's ready line
            try:
                flags = probe(uri)
                break
            except nbd.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        result = run_in_child(client, CopyContext(image=image, uri=uri, flags=flags, queue_depth=depth))
        assert result.elapsed_s is not None
        return result.elapsed_s
    finally:
        procs.stop(p)
        procs.remove_dir(workdir)


def observer_cost(spec: ServerSpec, pairs: int) -> dict[str, dict[str, Any]]:
    """lab vs bare, alternating, for nbdcopy and qemu-4.2 at depth 16: medians."""
    out: dict[str, dict[str, Any]] = {}
    with images.acquire(spec.size, spec.pattern) as image:
        for name, client, depth in (("nbdcopy", "nbdcopy", 1), ("qemu-4.2 depth 16", "qemu-4.2", 16)):
            lab, bare, dbg, cpu = [], [], [], []
            busy = MachineBusy()
            for i in range(pairs):
                for side in (("lab", "bare") if i % 2 == 0 else ("bare", "lab")):
                    if side == "lab":
                        r = lab_copy(spec, client, depth)
                        lab.append(r["duration_s"])
                        cpu.append(r["reader_cpu_s"])
                    elif client == "nbdcopy":
                        bare.append(bare_nbdcopy(spec, image, False))
                        dbg.append(bare_nbdcopy(spec, image, True))
                    else:
                        bare.append(bare_era(spec, image, client, depth))
                print(f"  observer {name} pair {i + 1}: lab {lab[-1]:.3f} s, bare {bare[-1]:.3f} s", file=sys.stderr)
            out[name] = {"lab": median(lab), "bare": median(bare), "lab_all": lab, "bare_all": bare,
                         "reader_cpu": median(cpu), "busy": busy.cores(),
                         **({"debug_null": median(dbg)} if dbg else {})}
    return out


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
    p.add_argument("--pairs", type=int, default=3, help="lab/bare pairs per client for the observer cost")
    args = p.parse_args()
    size = "16M" if args.quick else "1G"
    repeat = 1 if args.quick else max(1, args.repeat)
    spec = build_spec(fields(size, args.maxdata))
    nbytes = spec.size
    print(machine_note(), file=sys.stderr)

    results: dict[str, list[dict[str, Any]]] = {}
    with images.acquire(spec.size, spec.pattern):
        for i in range(repeat):
            order = CLIENTS if i % 2 == 0 else tuple(reversed(CLIENTS))
            for client, depth in order:
                r = lab_copy(spec, client, depth)
                results.setdefault(f"{client} depth {depth}", []).append(r)
                print(f"  {client} depth {depth}: {r['duration_s']:.3f} s", file=sys.stderr)

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

    pairs = 1 if args.quick else max(3, args.pairs)
    observed = observer_cost(spec, pairs)
    obs_rows = []
    for name, o in observed.items():
        ratio = o["lab"] / o["bare"]
        obs_rows.append([name, o["lab"], o["bare"], f"{ratio:.3f}", f"<= {TARGET_OBSERVER}",
                         verdict(ratio <= TARGET_OBSERVER), o.get("debug_null", "-"), o["reader_cpu"],
                         f"{o['busy']:.2f}"])
    print(table(["copy (same stack, 1 GiB no delays)" if not args.quick else "copy (same stack, quick)",
                 "lab s (median)", "bare s (median)", "lab / bare", "target", "",
                 "bare, -v debug to /dev/null s", "lab reader threads CPU s (copy+verify)", "machine busy cores"],
                obs_rows, title=f"Observer cost at full speed: lab vs bare nbdkit, {pairs} alternating pair(s)"))
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
    write_json(args.json, {"runs": results, "observer": observed, "rss": rss, "size": nbytes,
                           "maxdata": args.maxdata})
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
