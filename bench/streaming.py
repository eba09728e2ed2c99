"""Live streaming: from nbdkit finishing a request to an SSE client holding the progress event.

A real `lab serve` (free loopback port, private LAB_DATA_DIR, one worker) gets a managed
server whose every request is exactly one backend operation (maxdata 1M, 1 MiB extents,
server A: 100 writes x 20 ms + 100 zeroes x 5 ms, about 2.5 s with qemu-2.8). Subscribers
connect to the run's event stream while the run waits in the queue behind a slow blocker
run; once all are subscribed, the blocker is cancelled and the run starts.

Clocks: the log filter stamps each request's return line (nbdkit's wall clock); each event
carries `ts`, when the service published it; the client stamps arrival. Same machine, same
clock. For a progress event reporting n backend ops:
- per request: line of request k -> first event reporting >= k ops arrives. This includes
  the run's deliberate coalescing (lab/measure/execute.py: at most one progress event per 50 ms).
- per event:   line of the newest request it reports -> its arrival (how stale what the
  viewer sees is).
Fan-out: the same with 1,000 subscribers on one run (spread over client processes, so the
clients' own parsing does not colour the figure): every subscriber must get every event
(compared with a late subscriber's replay of the stored stream), and the service's CPU
(utime+stime of the `lab serve` process, all threads, which includes the in-process
qemu-2.8 client and the debug-stream parsing) is averaged over the run's copy phase.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import _timeline
from _common import machine_note, parser, percentile, setup_env, table, verdict, write_json

TMP = setup_env()

from _service import Received, Service, SseResult, subscribe  # noqa: E402

P95_TARGET_MS = 50.0
FANOUT_P95_TARGET_MS = 250.0
CPU_TARGET = 0.5

TARGET_SERVER = {"size": "200M", "pattern": "alternate:1M", "maxdata": "1M", "delay_write": "20ms",
                 "delay_zero": "5ms", "zeromode": "plugin", "fastzeromode": "none"}
BLOCKER = {"client": "qemu-4.2", "server": {"size": "16M", "delay_write": "200ms", "delay_zero": "200ms"}}


def log_path(server_info: dict[str, Any]) -> Path:
    sock = parse_qs(urlparse(server_info["uri"]).query)["socket"][0]
    return Path(sock).parent / "wire.log"


def ops(ev: Received) -> int:
    b = ev.data.get("backend") or {}
    return int(b.get("write_ops", 0)) + int(b.get("zero_ops", 0))


def latencies(events: list[Received], t_ret: list[float]) -> dict[str, list[float]]:
    """Per-request and per-event latencies (seconds) for one subscriber's events."""
    prog = [e for e in events if e.type == "progress" and 0 < ops(e) <= len(t_ret)]
    per_event = [e.t - t_ret[ops(e) - 1] for e in prog]
    publish = [e.data["ts"] - t_ret[ops(e) - 1] for e in prog if "ts" in e.data]
    deliver = [e.t - e.data["ts"] for e in prog if "ts" in e.data]
    per_request = []
    i = 0
    for k, t in enumerate(t_ret, start=1):
        while i < len(prog) and ops(prog[i]) < k:
            i += 1
        if i < len(prog):
            per_request.append(prog[i].t - t)
    return {"per_request": per_request, "per_event": per_event, "publish": publish, "deliver": deliver}


def _listen(port: int, path: str, n: int, ready: Any, out: Any) -> None:
    """In a client process of its own: hold `n` streams of `path`, say when all are subscribed,
    then send back every event with its arrival time."""
    async def go() -> list[SseResult]:
        results = [SseResult() for _ in range(n)]
        connected = [asyncio.Event() for _ in range(n)]
        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(subscribe(port, path, results[i], "done", connected[i])))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the service accept in batches
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), timeout=120)
        ready.put(n)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
        return results

    out.put(asyncio.run(go()))


async def fan_out(svc: Service, run_id: str, blocker_id: str, n: int, procs: int) -> dict[str, Any]:
    """`n` subscribers of the run, spread over `procs` client processes (one Python process parsing
    a thousand streams would measure itself, not the service)."""
    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Queue(), ctx.Queue()
    path = f"/api/v1/runs/{run_id}/events"
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    t_connect = time.perf_counter()
    workers = [ctx.Process(target=_listen, args=(svc.port, path, k, ready, out)) for k in shares if k]
    for w in workers:
        w.start()
    for _ in workers:
        await asyncio.to_thread(ready.get, True, 180)
    while (await asyncio.to_thread(svc.get, "/api/v1/health"))["manager"]["subscribers"] < n:
        await asyncio.sleep(0.02)
    connect_s = time.perf_counter() - t_connect
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), svc.cpu_s()))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    await asyncio.to_thread(svc.post, f"/api/v1/runs/{blocker_id}/cancel")
    results: list[SseResult] = []
    for _ in workers:
        results += await asyncio.to_thread(out.get, True, 360)
    done.set()
    await sampler
    samples.append((time.time(), svc.cpu_s()))
    for w in workers:
        w.join(30)
    return {"results": results, "samples": samples, "connect_s": connect_s}


def cpu_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    inside = [s for s in samples if t0 <= s[0] <= t1]
    before = [s for s in samples if s[0] <= t0]
    after = [s for s in samples if s[0] >= t1]
    a = before[-1] if before else (inside[0] if inside else None)
    b = after[0] if after else (inside[-1] if inside else None)
    if a is None or b is None or b[0] <= a[0]:
        return None
    return (b[1] - a[1]) / (b[0] - a[0])


def one_round(svc: Service, server: dict[str, Any], client: str, n: int, procs: int) -> dict[str, Any]:
    blocker = svc.post("/api/v1/runs", BLOCKER)
    run = svc.post("/api/v1/runs", {"client": client, "server_id": server["id"]})
    got = asyncio.run(fan_out(svc, run["id"], blocker["id"], n, max(1, min(procs, n // 50))))
    # The stored stream, replayed by a late subscriber: what every live subscriber must have had.
    ref = SseResult()
    asyncio.run(subscribe(svc.port, f"/api/v1/runs/{run['id']}/events", ref))
    ref_ids = [e.id for e in ref.events]
    final = svc.get(f"/api/v1/runs/{run['id']}")
    comps = _timeline.completions(log_path(server).read_text(errors="replace"))
    conn = max(comps)  # the newest connection that wrote: this run's copy
    t_ret = comps[conn]
    lost = 0
    errors = [r.error for r in got["results"] if r.error]
    lat: dict[str, list[float]] = {"per_request": [], "per_event": [], "publish": [], "deliver": []}
    for r in got["results"]:
        ids = [e.id for e in r.events]
        lost += len(set(ref_ids) - set(ids))
        for k, v in latencies(r.events, t_ret).items():
            lat[k] += v
    by_type = {e.type: e for e in ref.events}
    copy_start = next((e.data["ts"] for e in ref.events if e.type == "state" and e.data.get("phase") == "copy"),
                      None)
    copy_end = next((e.data["ts"] for e in ref.events if e.type == "state" and e.data.get("phase") == "verify"),
                    None)
    cpu = cpu_between(got["samples"], copy_start, copy_end) if copy_start and copy_end else None
    progress_events = sum(1 for e in ref.events if e.type == "progress")
    return {"subscribers": n, "run": final, "events": len(ref_ids), "progress_events": progress_events,
            "requests": len(t_ret), "final_ops": ops(by_type["progress"]) if "progress" in by_type else None,
            "lost": lost, "errors": errors[:5], "latency": lat, "cpu_cores": cpu, "connect_s": got["connect_s"],
            "copy_s": (copy_end - copy_start) if copy_start and copy_end else None}


def _ms(xs: list[float], q: float) -> float | None:
    v = percentile(xs, q)
    return None if v is None else v * 1000


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=1000, help="fan-out subscribers (default 1000)")
    p.add_argument("--client-procs", type=int, default=4,
                   help="client processes the subscribers are spread over (default 4; 50 subscribers each at least)")
    args = p.parse_args()
    server_fields = {**TARGET_SERVER, **({"size": "16M", "delay_write": "2ms", "delay_zero": "1ms"}
                                          if args.quick else {})}
    fan = 20 if args.quick else args.subscribers
    print(machine_note(), file=sys.stderr)
    rounds = []
    with Service(LAB_WORKERS="1") as svc:
        server = svc.post("/api/v1/servers", server_fields)
        for n in (1, fan):
            r = one_round(svc, server, "qemu-2.8", n, args.client_procs)
            rounds.append(r)
            print(f"  {n} subscriber(s): {r['events']} events, lost {r['lost']}, cpu {r['cpu_cores']}",
                  file=sys.stderr)
        svc.delete(f"/api/v1/servers/{server['id']}")

    single, many = rounds
    rows = []
    for r in rounds:
        lat = r["latency"]
        n = r["subscribers"]
        target = P95_TARGET_MS if n == 1 else FANOUT_P95_TARGET_MS
        p95_req = _ms(lat["per_request"], 95)
        p95_ev = _ms(lat["per_event"], 95)
        rows.append([n, r["requests"], r["progress_events"], f"{_ms(lat['per_request'], 50):.1f}",
                     f"{p95_req:.1f}", f"{_ms(lat['per_event'], 50):.1f}", f"{p95_ev:.1f}", f"< {target:.0f}",
                     verdict(p95_ev is not None and p95_ev < target), verdict(p95_req is not None and p95_req < target),
                     f"{_ms(lat['publish'], 50):.1f} / {_ms(lat['publish'], 95):.1f}",
                     f"{_ms(lat['deliver'], 50):.1f} / {_ms(lat['deliver'], 95):.1f}"])
    quick = " (--quick)" if args.quick else ""
    print(table(["subscribers", "requests", "progress events", "per request p50 ms", "per request p95 ms",
                 "per event p50 ms", "per event p95 ms", "p95 target", "per event", "per request",
                 "line->published p50/p95 ms", "published->received p50/p95 ms"], rows,
                title=f"Streaming: nbdkit log line -> SSE client{quick}"))
    print()
    cpu_rows = []
    for r in rounds:
        cpu = r["cpu_cores"]
        cpu_rows.append([r["subscribers"], r["events"], r["events"] * r["subscribers"], r["lost"],
                         verdict(r["lost"] == 0 and not r["errors"]), r["copy_s"],
                         f"{cpu:.2f}" if cpu is not None else "-", f"< {CPU_TARGET}",
                         verdict(cpu is not None and cpu < CPU_TARGET), r["connect_s"]])
    print(table(["subscribers", "events in the run", "events delivered (expected)", "lost", "",
                 "copy s", "service CPU, cores", "target", "", "subscribe all s"], cpu_rows,
                title="Streaming: fan-out to one run"))
    if many["errors"]:
        print(f"\nsubscriber errors: {many['errors']}")
    print()
    extra = (many["cpu_cores"] or 0) - (single["cpu_cores"] or 0)
    print(f"fan-out cost: {extra:+.2f} cores for {many['subscribers'] - 1} more subscribers "
          f"({many['progress_events']} progress events in {many['copy_s'] or 0:.1f} s)")
    print(machine_note())
    write_json(args.json, {"rounds": [{k: v for k, v in r.items() if k != "latency"} | {
        "latency_ms": {k: {"p50": _ms(v, 50), "p95": _ms(v, 95), "n": len(v)} for k, v in r["latency"].items()}}
        for r in rounds]})
    ok = all(r["run"]["status"] == "succeeded" for r in rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
