"""The web service's footprint: RSS and CPU of `lab serve`, idle and with 10 live servers.

A real `lab serve` on a free loopback port with a private LAB_DATA_DIR. Measured (psutil)
for the service process only (all its threads); the nbdkit children are separate
processes and shown apart (the memory plugin holds what clients wrote, by design).
Steps: idle after start (health, dashboard and OpenAPI served once); 10 managed servers
started; one small run on each (8M, 1 ms delays, qemu-4.2, verified); servers deleted.
Target: service RSS under 150 MiB throughout (peak = VmHWM).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import psutil
from _common import machine_note, parser, setup_env, table, verdict, write_json

TMP = setup_env()

from _service import Service  # noqa: E402

from testkit import children, rss_kib, threads  # noqa: E402

RSS_TARGET_MIB = 150.0
SMALL = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}


def children_rss_kib(pid: int) -> tuple[int, int]:
    """(count, summed RSS) of the service's direct children (nbdkit servers)."""
    kids = children(pid)
    total = 0
    for p in kids:
        with contextlib.suppress(psutil.Error):
            total += rss_kib(p.pid)
    return len(kids), total


def idle_cpu(svc: Service, seconds: float) -> float:
    c0, t0 = svc.cpu_s(), time.monotonic()
    time.sleep(seconds)
    return (svc.cpu_s() - c0) / (time.monotonic() - t0)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=10)
    args = p.parse_args()
    nservers = 3 if args.quick else args.servers
    settle = 0.2 if args.quick else 2.0
    print(machine_note(), file=sys.stderr)
    steps: list[dict[str, Any]] = []

    def record(name: str, svc: Service, cpu: float | None = None) -> None:
        kids, kids_kib = children_rss_kib(svc.pid)
        steps.append({"step": name, "rss_mib": svc.rss_kib() / 1024, "hwm_mib": svc.hwm_kib() / 1024,
                      "cpu_cores": cpu, "children": kids, "children_rss_mib": kids_kib / 1024,
                      "threads": threads(svc.pid)})

    with Service(LAB_MAX_SERVERS=str(max(16, nservers))) as svc:
        record("started", svc)
        for path in ("/api/health", "/", "/openapi.json", "/api/runs", "/api/scenarios"):
            svc.request("GET", path) if path != "/" else _get_text(svc, "/")
        time.sleep(settle)
        record("idle (pages and API served once)", svc, idle_cpu(svc, settle))
        servers = [svc.post("/api/servers", SMALL) for _ in range(nservers)]
        time.sleep(settle)
        record(f"{nservers} live servers", svc, idle_cpu(svc, settle))
        runs = [svc.post("/api/runs", {"client": "qemu-4.2", "server_id": s["id"]}) for s in servers]
        final = [_wait(svc, r["id"]) for r in runs]
        time.sleep(settle)
        record(f"{nservers} live servers, one run done on each", svc, idle_cpu(svc, settle))
        for s in servers:
            svc.delete(f"/api/servers/{s['id']}")
        time.sleep(settle)
        record("servers deleted", svc, idle_cpu(svc, settle))

    ok_runs = sum(1 for r in final if r["status"] == "succeeded" and r["verified"])
    rows = []
    for s in steps:
        rows.append([s["step"], f"{s['rss_mib']:.1f}", f"{s['hwm_mib']:.1f}", f"< {RSS_TARGET_MIB:.0f}",
                     verdict(s["hwm_mib"] < RSS_TARGET_MIB),
                     "-" if s["cpu_cores"] is None else f"{s['cpu_cores']:.3f}", s["threads"], s["children"],
                     f"{s['children_rss_mib']:.1f}"])
    quick = " (--quick)" if args.quick else ""
    print(table(["step", "service RSS MiB", "peak so far MiB", "target", "", "idle CPU cores", "threads",
                 "nbdkit children", "children RSS MiB"], rows,
                title=f"Footprint: `lab serve` process{quick}"))
    print(f"\nruns on the managed servers: {ok_runs}/{len(final)} succeeded and verified")
    print(machine_note())
    write_json(args.json, {"steps": steps, "runs_ok": ok_runs, "servers": nservers})
    return 0 if ok_runs == len(final) else 1


def _get_text(svc: Service, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(svc.base + path, timeout=30) as resp:
        return resp.read().decode(errors="replace")


def _wait(svc: Service, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = svc.get(f"/api/runs/{run_id}")
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
