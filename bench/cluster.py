"""What does a cluster add? A 40-row sleep-bound sweep with 1 and 2 workers, and what a job costs to dispatch.

Every pass goes through a real `lab serve` (testkit.LiveService), the path users take: a custom sweep
(POST /api/v1/sweeps) of sleep-bound rows (qemu-2.8 and qemu-4.2 on 8 MiB alternating 1 MiB,
10 ms per write and 5 ms per zero: the copy time is the sleeps), timed by the service's own clock
(the sweep's created_at to finished_at).

- local: the embedded service (no broker), its LAB_WORKERS slots;
- 1 worker, 2 workers: the service with LAB_BROKER_URL on a redis-server of the bench's own, and `lab
  worker`s with the same slots each (testkit.cluster: own dirs, own network namespace when root);
- dispatch overhead per job: the same rows one at a time (parallelism 1), locally and on one worker:
  (remote wall - local wall) / rows is what the broker round trip adds to each job;
- each row's copy time (duration_s) against the same row's local median: rows within 5%;
- cancel: a run copying on a worker, cancelled through the API: until the API says so, and until its
  nbdkit and qemu-img on the worker are gone.

The workers share this machine's cores, so "2 workers" shows the dispatch and the placement, not a
second machine's CPU: sleep-bound rows do not need one. Targets: < 50 ms dispatch overhead per job;
every row within 5% of its local time; 2 workers' wall about half of 1 worker's; cancel < 1 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from testkit import LiveService, wait_for  # noqa: E402
from testkit.cluster import Cluster  # noqa: E402

OVERHEAD_TARGET_S = 0.050
ROW_TOLERANCE = 0.05
SERVER = {"size": "8M", "pattern": "alternate:1M", "delay_write": "10ms", "delay_zero": "5ms"}
CLIENTS = ["qemu-2.8", "qemu-4.2"]


def sweep(svc: LiveService, rows: int, parallelism: int, name: str) -> dict[str, Any]:
    """Queue `rows` runs (the clients x repeats) at `parallelism`, wait, return the sweep with its runs."""
    body = {"name": name, "grid": {"client": CLIENTS}, "server": SERVER, "repeats": max(1, rows // len(CLIENTS)),
            "parallelism": parallelism}
    s = svc.post("/api/v1/sweeps", body)
    wait_for(lambda: svc.get(f"/api/v1/sweeps/{s['id']}")["status"] not in ("queued", "running"), 900, 0.2,
             what=f"sweep {name}")
    done = svc.get(f"/api/v1/sweeps/{s['id']}")
    bad = [(r["status"], r["error"]) for r in done["runs"] if r["status"] != "succeeded"]
    if bad:
        raise SystemExit(f"{name}: {len(bad)} runs did not succeed: {bad[:3]}")
    return done


CANCEL: dict[str, float] = {}


def cancel_latency(svc: LiveService, c: Cluster) -> dict[str, float]:
    """A run copying on a worker is cancelled through the API: seconds until the API says cancelled, and
    until the worker's nbdkit and qemu-img are gone (seen from their pids, polled every 5 ms)."""
    run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": {"size": "64M", "delay_write": "20ms"}})
    worker = c.workers[0]
    wait_for(lambda: {"nbdkit", "qemu-img"} <= {p.name for p in worker.watch()}, 60, 0.01, what="copying")
    t0 = time.perf_counter()
    svc.post(f"/api/v1/runs/{run['id']}/cancel")
    status_s = gone_s = None
    while status_s is None or gone_s is None:
        now = time.perf_counter() - t0
        if gone_s is None and not worker.left():
            gone_s = now
        if status_s is None and svc.get(f"/api/v1/runs/{run['id']}")["status"] == "cancelled":
            status_s = time.perf_counter() - t0
        if now > 30:
            raise SystemExit("cancel: the run was not cancelled, or its processes still there, after 30 s")
        time.sleep(0.005)
    return {"gone_s": gone_s, "status_s": status_s}


def wall(s: dict[str, Any]) -> float:
    return round(s["finished_at"] - s["created_at"], 3)


def passes(root: Path, rows: int, slots: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    # the bench posts without a name: let a whole sweep of `rows` wait (the default keeps nameless callers to 32)
    room = str(max(64, rows))
    env = {"LAB_AUTO_CALIBRATE": "0", "LAB_WORKERS": str(slots), "LAB_LOG_LEVEL": "warning",
           "LAB_QUEUE_SIZE": room, "LAB_MAX_QUEUED_ANONYMOUS": room}
    with LiveService(root / "local", env=env) as local:
        sweep(local, len(CLIENTS), slots, "warm-up")  # the image is built once, here
        out["local"] = sweep(local, rows, slots, "local")
        out["local, one at a time"] = sweep(local, rows, 1, "local serial")
    for n in (1, 2):
        with Cluster(root / f"c{n}", n=n, slots=slots, env={"LAB_LOG_LEVEL": "warning"}) as c, \
                LiveService(root / f"svc{n}", env={**env, "LAB_BROKER_URL": c.url}) as svc:
            wait_for(lambda svc=svc, n=n: len(svc.get("/api/v1/workers")["workers"]) == n, 60, 0.1,
                     what=f"{n} workers")
            sweep(svc, len(CLIENTS), slots, "warm-up")
            out[f"{n} worker{'s' if n > 1 else ''}"] = sweep(svc, rows, n * slots, f"{n} workers")
            if n == 1:
                out["1 worker, one at a time"] = sweep(svc, rows, 1, "1 worker serial")
                CANCEL.update(cancel_latency(svc, c))
            print(f"  {n} worker(s): isolated in network namespaces: {c.isolated}", file=sys.stderr)
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=40, help="rows in the sweep (default 40)")
    p.add_argument("--slots", type=int, default=2, help="jobs at once per machine, LAB_WORKERS (default 2)")
    args = p.parse_args()
    rows = 8 if args.quick else args.rows
    print(machine_note(), file=sys.stderr)
    t0 = time.perf_counter()
    got = passes(TMP, rows, args.slots)
    local_by_client = {c: statistics.median(r["duration_s"] for r in got["local"]["runs"] if r["client"] == c)
                       for c in CLIENTS}

    overhead = (wall(got["1 worker, one at a time"]) - wall(got["local, one at a time"])) / rows
    lines, row_ok = [], {}
    for name, s in got.items():
        rels = [r["duration_s"] / local_by_client[r["client"]] for r in s["runs"]]
        ok = all(abs(x - 1) <= ROW_TOLERANCE for x in rels)
        row_ok[name] = ok
        workers = sorted({(r.get("worker") or {}).get("name", "local") for r in s["runs"]})
        lines.append([name, len(s["runs"]), wall(s), f"{wall(s) / len(s['runs']):.3f}",
                      f"{min(rels):.3f}-{max(rels):.3f}", verdict(ok), len(workers)])
    print(table(["pass", "rows", "wall s (service clock)", "wall / row s", "row copy / local median",
                 "+-5%", "machines used"], lines,
                title=f"Cluster: {rows} sleep-bound rows ({', '.join(CLIENTS)}, 8M, 10/5 ms), {args.slots} slots "
                      f"per machine{' (--quick)' if args.quick else ''}"))
    print()
    speedup = wall(got["1 worker"]) / wall(got["2 workers"])
    print(table(["figure", "value", "target", ""],
                [["dispatch overhead per job (1 worker vs local, one at a time)", f"{overhead * 1000:.1f} ms",
                  f"< {OVERHEAD_TARGET_S * 1000:.0f} ms", verdict(overhead < OVERHEAD_TARGET_S)],
                 ["wall, 1 worker / 2 workers", f"{speedup:.2f}", "about 2", verdict(speedup >= 1.6)],
                 ["every row within 5% of its local time", "yes" if all(row_ok.values()) else "no", "yes",
                  verdict(all(row_ok.values()))],
                 ["cancel of a remote run -> the API says cancelled", f"{CANCEL['status_s'] * 1000:.0f} ms", "< 1 s",
                  verdict(CANCEL["status_s"] < 1.0)],
                 ["cancel of a remote run -> its processes on the worker gone", f"{CANCEL['gone_s'] * 1000:.0f} ms",
                  "< 1 s", verdict(CANCEL["gone_s"] < 1.0)]]))
    print(f"\nwhole bench: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    write_json(args.json, {"rows": rows, "slots": args.slots, "overhead_s": overhead, "speedup": speedup,
                           "walls": {k: wall(v) for k, v in got.items()}, "cancel": CANCEL})
    return 0


if __name__ == "__main__":
    sys.exit(main())
