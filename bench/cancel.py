"""Cancel and kill: how long until every process of a run is gone.

A real `lab serve` (free loopback port, private dirs). For each phase a run is cancelled in:
- queued: behind a run that holds the only worker;
- setup, verify: held there for sure by LAB_FAULT=pause-at:PHASE (a service started with it);
- copy: 8M at 500 ms a request, cancelled once the client process is up and the backend
  has seen a write; with qemu-img, nbdcopy and an era client (qemu-4.2, a Python child).
Timed from sending POST /api/runs/{id}/cancel: its answer, and the moment the last process
of the run (the service's descendants that appeared for it) is gone. Target: < 1 s.
Then kill -9 of the service during four runs (qemu-img, nbdcopy, qemu-4.2, qemu-2.7, all
copying): time until none of its descendants is alive. Target: < 5 s.

    .venv/bin/python bench/cancel.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from typing import Any

from _common import machine_note, parser, percentile, setup_env, table, verdict, write_json

TMP = setup_env()

from _service import Service  # noqa: E402

from testkit import descendants  # noqa: E402

CANCEL_TARGET_MS = 1000.0
KILL_TARGET_MS = 5000.0
FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
CRAWL = {"size": "8M", "delay_write": "500ms", "delay_zero": "500ms"}
CRAWL_PARALLEL = {"size": "8M", "delay_write": "5s", "delay_zero": "5s"}
CLIENT_PROCESS = {"qemu-img": "qemu-img", "nbdcopy": "nbdcopy", "qemu-4.2": "python", "qemu-2.7": "python"}


def wait(pred: Any, timeout: float = 60.0, step: float = 0.01, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"not within {timeout:g} s: {what or getattr(pred, '__name__', pred)}")


def events(svc: Service, rid: str) -> list[dict[str, Any]]:
    """The run's stored events so far (its stream, read to the current end)."""
    last = svc.get("/api/health")["manager"]["last_event_id"]
    out = []
    with urllib.request.urlopen(f"{svc.base}/api/runs/{rid}/events", timeout=30) as resp:
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                out.append(ev)
                if ev["id"] >= last or ev["type"] == "done":
                    break
            elif line.startswith(": keepalive"):
                break
    return out


def measure(svc: Service, rid: str, before: set[int]) -> dict[str, Any]:
    procs = [p for p in descendants(svc.pid) if p.pid not in before]
    t0 = time.perf_counter()
    answer = svc.post(f"/api/runs/{rid}/cancel")
    t_api = time.perf_counter() - t0
    wait(lambda: not any(p.alive() for p in procs), 10, 0.002, what=f"processes of {rid} gone: {procs}")
    t_gone = time.perf_counter() - t0
    return {"status": answer["status"], "api_ms": t_api * 1000, "gone_ms": t_gone * 1000,
            "processes": sorted(p.name for p in procs)}


def in_phase(svc: Service, rid: str, phase: str) -> bool:
    return any(e["type"] == "state" and e.get("phase") == phase for e in events(svc, rid))


def cancel_rounds(repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Service(LAB_WORKERS="1", LAB_MAX_DELAY_MS="5000") as svc:
        svc.post("/api/runs", {"server": FAST})  # build the image once
        time.sleep(0.5)
        wait(lambda: svc.get("/api/health")["manager"]["running"] == 0)
        for _ in range(repeat):
            blocker = svc.post("/api/runs", {"server": CRAWL})
            wait(lambda b=blocker: any(e["type"] == "progress" and e["backend"]["write_ops"] > 0
                                       for e in events(svc, b["id"])), what="the blocker copying")
            run = svc.post("/api/runs", {"client": "nbdcopy", "server": FAST})
            busy = {p.pid for p in descendants(svc.pid)}  # the blocker's: the queued run has none
            rows.append({"phase": "queued", "client": "nbdcopy", **measure(svc, run["id"], busy)})
            svc.post(f"/api/runs/{blocker['id']}/cancel")
            for client in ("qemu-img", "nbdcopy", "qemu-4.2"):
                before = {p.pid for p in descendants(svc.pid)}
                run = svc.post("/api/runs", {"client": client, "server": CRAWL_PARALLEL if client == "nbdcopy"
                                             else CRAWL})

                def copying(rid: str = run["id"], c: str = client, before: set[int] = before) -> bool:
                    names = [p.name for p in descendants(svc.pid) if p.pid not in before]
                    wrote = any(e["type"] == "progress" and e["backend"]["write_ops"] > 0 for e in events(svc, rid))
                    return any(n.startswith(CLIENT_PROCESS[c]) for n in names) and wrote

                wait(copying, what=f"{client} copying")
                rows.append({"phase": "copy", "client": client, **measure(svc, run["id"], before)})
    for phase in ("setup", "verify"):
        with Service(LAB_WORKERS="1", LAB_FAULT=f"pause-at:{phase}") as svc:
            for _ in range(repeat):
                before = {p.pid for p in descendants(svc.pid)}
                run = svc.post("/api/runs", {"client": "qemu-img", "server": FAST})
                wait(lambda rid=run["id"], ph=phase: in_phase(svc, rid, ph))
                rows.append({"phase": phase, "client": "qemu-img", **measure(svc, run["id"], before)})
    return rows


def kill_rounds(repeat: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(repeat):
        svc = Service(LAB_WORKERS="4", LAB_MAX_DELAY_MS="5000").start()
        try:
            # four sleep-bound runs: the worker pool runs a CPU-bound one (nbdcopy) alone, never among others
            for client in ("qemu-img", "qemu-2.8", "qemu-4.2", "qemu-2.7"):
                svc.post("/api/runs", {"client": client, "server": CRAWL})

            def all_copying(svc: Service = svc) -> list[tuple[int, int, str]] | None:
                t = descendants(svc.pid)
                names = [p.name for p in t]
                ok = (names.count("nbdkit") == 4 and "qemu-img" in names
                      and sum(n.startswith("python") for n in names) >= 3)
                return t if ok else None

            procs = wait(all_copying, what="four runs copying")
            t0 = time.perf_counter()
            assert svc.proc is not None
            svc.proc.send_signal(signal.SIGKILL)
            svc.proc.wait()
            wait(lambda p=procs: not any(x.alive() for x in p), 10, 0.002)
            out.append({"gone_ms": (time.perf_counter() - t0) * 1000, "processes": sorted(p.name for p in procs)})
        finally:
            svc.stop()
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    repeat = 1 if args.quick else args.repeat
    print(machine_note(), file=sys.stderr)
    rows = cancel_rounds(repeat)
    kills = kill_rounds(repeat)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["phase"], r["client"]), []).append(r)
    out = []
    ok = True
    for (phase, client), rs in groups.items():
        gone = [r["gone_ms"] for r in rs]
        statuses = {r["status"] for r in rs}
        ok &= statuses == {"cancelled"}
        procs = ", ".join(sorted(set(rs[0]["processes"]))) or "none yet"
        out.append([phase, client, procs, len(rs), f"{percentile([r['api_ms'] for r in rs], 50):.0f}",
                    f"{percentile(gone, 50):.0f}", f"{max(gone):.0f}", f"< {CANCEL_TARGET_MS:.0f}",
                    verdict(max(gone) < CANCEL_TARGET_MS), "/".join(sorted(statuses))])
    quick = " (--quick)" if args.quick else ""
    print(table(["phase", "client", "processes of the run", "n", "answer p50 ms", "all gone p50 ms",
                 "all gone max ms", "target", "", "status"], out, title=f"Cancel: until every process is gone{quick}"))
    print()
    kg = [k["gone_ms"] for k in kills]
    print(table(["service killed with", "processes under it", "n", "all gone p50 ms", "max ms", "target", ""],
                [["SIGKILL", ", ".join(kills[0]["processes"]), len(kills), f"{percentile(kg, 50):.0f}",
                  f"{max(kg):.0f}", f"< {KILL_TARGET_MS:.0f}", verdict(max(kg) < KILL_TARGET_MS)]],
                title=f"kill -9 of the service during four runs{quick}"))
    print()
    print(machine_note())
    write_json(args.json, {"cancel": rows, "kill": kills})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
