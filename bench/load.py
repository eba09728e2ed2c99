"""Load: 200 SSE subscribers on /api/v1/events plus 50 API requests a second for 60 s, runs going.

A real `lab serve` (free loopback port, private data and runtime dirs, LAB_WORKERS=2) is
kept saturated: a feeder keeps runs queued (32M images, 20 ms writes, clients qemu-img,
qemu-4.2, nbdcopy, qemu-2.8 in turn; about 25 progress events a second per running run).
Meanwhile:
- N subscribers hold /api/v1/events from one starting id. Each records every event id it
  receives and a CRC of the event data, in order. At the end, when the service is idle,
  every subscriber must hold exactly the ids the database holds after the start id, with
  the same CRC: no event lost, repeated, reordered or altered.
- 50 requests a second (reads of every kind, plus the feeder's POSTs) with their status
  and latency: no 5xx, no transport error; 429 is the documented answer to a full queue.
- A separate process asks /api/v1/health every 50 ms on a kept-alive connection (so the
  client's own event loop does not colour the figure): latency while the workers are busy.
- The service's RSS is sampled every second: flat means the second half's median is within
  10% (and 16 MiB) of the first half's, after a warm-up of a fifth of the run.
- Before the load, each read's CPU cost in the service (one request at a time): a route that
  costs tens of ms holds the GIL and stalls the event loop under load (GET /api/v1/scenarios did:
  ~500 ms, found with py-spy; docs/benchmarks.md).

    .venv/bin/python bench/load.py [--quick] [--subscribers 200] [--rate 50] [--seconds 60]
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import random
import sqlite3
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import machine_note, parser, percentile, setup_env, table, verdict, write_json

TMP = setup_env()

from _service import Service, cpu_s  # noqa: E402

HEALTH_P99_TARGET_MS = 100.0
RUN = {"size": "32M", "delay_write": "20ms", "delay_zero": "5ms"}
QUICK_RUN = {"size": "8M", "delay_write": "5ms", "delay_zero": "1ms"}
CLIENTS = ["qemu-img", "qemu-4.2", "nbdcopy", "qemu-2.8"]
READS = ["/api/v1/health", "/api/v1/runs?limit=20", "/api/v1/runs?status=succeeded&limit=5",
         "/api/v1/results.json?limit=50", "/api/v1/results.csv?limit=50", "/api/v1/sweeps", "/api/v1/servers",
         "/api/v1/scenarios", "/api/v1/clients", "RUN"]


@dataclass
class Sub:
    ids: list[int] = field(default_factory=list)
    crc: int = 0
    error: str | None = None
    connected: bool = False


@dataclass
class Req:
    path: str
    status: int
    seconds: float


async def http_request(port: int, method: str, path: str, body: dict[str, Any] | None = None
                       ) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        writer.write(head.encode() + b"\r\n" + data)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    status = int(raw.split(b" ", 2)[1])
    return status, raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


async def subscriber(port: int, start: int, sub: Sub, stop: asyncio.Event) -> None:
    """Hold /api/v1/events from `start`; record ids and a CRC of each event's data, in order."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as e:
        sub.error = f"connect: {e}"
        return
    try:
        writer.write(f"GET /api/v1/events?last_event_id={start} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
            sub.error = head.split(b"\r\n", 1)[0].decode(errors="replace")
            return
        sub.connected = True
        buf = b""
        while not stop.is_set():
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                sub.error = "the stream ended"
                return
            buf += (await reader.readexactly(size + 2))[:-2]
            while (cut := buf.find(b"\n\n")) >= 0:
                block, buf = buf[:cut], buf[cut + 2:]
                if block.startswith(b":"):
                    continue
                ev_id = data = None
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        ev_id = int(line[4:])
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if ev_id is not None and data is not None:
                    sub.ids.append(ev_id)
                    sub.crc = zlib.crc32(data, sub.crc)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        if not stop.is_set():
            sub.error = f"{type(e).__name__}: {e}"
    finally:
        writer.close()


def health_probe(port: int, seconds: float, out: Any) -> None:
    """In its own process: GET /api/v1/health every 50 ms on one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    lat: list[float] = []
    running: list[int] = []
    errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/api/v1/health")
            resp = conn.getresponse()
            body = resp.read()
            lat.append(time.perf_counter() - t0)
            if resp.status != 200:
                errors += 1
            else:
                running.append(json.loads(body)["manager"]["running"])
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(max(0.0, 0.05 - (time.perf_counter() - t0)))
    conn.close()
    out.put({"latency": lat, "running": running, "errors": errors})


async def drive(svc: Service, args: Any, start: int) -> dict[str, Any]:
    port = svc.port
    stop_subs = asyncio.Event()
    subs = [Sub() for _ in range(args.subscribers)]
    tasks = []
    for i, s in enumerate(subs):
        tasks.append(asyncio.create_task(subscriber(port, start, s, stop_subs)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    t_sub = time.monotonic()
    while sum(s.connected or s.error is not None for s in subs) < len(subs):
        if time.monotonic() - t_sub > 60:
            break
        await asyncio.sleep(0.05)

    reqs: list[Req] = []
    run_ids: list[str] = []
    pending: set[asyncio.Task] = set()
    server = QUICK_RUN if args.quick else RUN
    rng = random.Random(7)
    feeder_i = 0

    async def one(path: str) -> None:
        nonlocal feeder_i
        t0 = time.perf_counter()
        try:
            if path == "POST":
                client = CLIENTS[feeder_i % len(CLIENTS)]
                feeder_i += 1
                status, body = await http_request(port, "POST", "/api/v1/runs", {"client": client, "server": server})
                if status == 202:
                    run_ids.append(json.loads(body)["id"])
            else:
                if path == "RUN":
                    path = f"/api/v1/runs/{rng.choice(run_ids)}" if run_ids else "/api/v1/health"
                status, _ = await http_request(port, "GET", path)
        except (OSError, ValueError, IndexError) as e:
            status = 0
            path = f"{path} ({type(e).__name__})"
        reqs.append(Req(path, status, time.perf_counter() - t0))

    rss: list[tuple[float, int]] = []
    queued_seen: list[int] = []
    mp = multiprocessing.get_context("spawn")
    probe_out = mp.Queue()
    probe = mp.Process(target=health_probe, args=(port, args.seconds, probe_out))
    probe.start()
    cpu0 = cpu_s(svc.pid)
    t0 = time.monotonic()
    tick = 1.0 / args.rate
    n = 0
    next_rss = t0
    next_feed = t0
    while (now := time.monotonic()) < t0 + args.seconds:
        if now >= next_rss:
            rss.append((now - t0, svc.rss_kib()))
            next_rss += 1.0
        if now >= next_feed:  # keep the queue topped up: the workers never idle
            status, body = await http_request(port, "GET", "/api/v1/health")
            reqs.append(Req("/api/v1/health (feeder)", status, 0.0))
            queued = json.loads(body)["manager"]["queued"] if status == 200 else 0
            queued_seen.append(queued)
            for _ in range(max(0, 3 - queued)):
                pending.add(asyncio.create_task(one("POST")))
            next_feed += 0.5
        pending.add(asyncio.create_task(one(READS[n % len(READS)])))
        pending = {t for t in pending if not t.done()}
        n += 1
        await asyncio.sleep(max(0.0, t0 + n * tick - time.monotonic()))
    load_s = time.monotonic() - t0
    cpu_used = cpu_s(svc.pid) - cpu0
    if pending:
        await asyncio.wait(pending)
    probe.join(timeout=30)
    health = probe_out.get(timeout=30)

    # Drain: let the runs finish, then every subscriber must reach the last event.
    t_drain = time.monotonic()
    while True:
        status, body = await http_request(port, "GET", "/api/v1/health")
        m = json.loads(body)["manager"]
        if m["queued"] == 0 and m["running"] == 0:
            break
        if time.monotonic() - t_drain > 300:
            raise RuntimeError("the runs did not finish")
        await asyncio.sleep(0.2)
    end_id = m["last_event_id"]
    t_catch = time.monotonic()
    while any(s.error is None and (not s.ids or s.ids[-1] < end_id) for s in subs):
        if time.monotonic() - t_catch > 60:
            break
        await asyncio.sleep(0.05)
    catch_up_s = time.monotonic() - t_catch
    stop_subs.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"subs": subs, "reqs": reqs, "rss": rss, "health": health, "end_id": end_id, "load_s": load_s,
            "cpu_cores": cpu_used / load_s, "catch_up_s": catch_up_s, "runs": run_ids, "queued": queued_seen}


ROUTE_CPU_TARGET_MS = 20.0  # a sync route costing more holds the GIL long enough to stall the event loop


def route_costs(svc: Service, run_id: str, times: int) -> list[tuple[str, float]]:
    """Each read's CPU in the service per request, asked one at a time on an idle service: the
    figure that would have caught GET /api/v1/scenarios at ~500 ms of CPU (every row's spec checked
    three times, each pattern's extents built), which stalled /health under load (issue 24)."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    out = []
    try:
        for path in dict.fromkeys(READS):
            path = f"/api/v1/runs/{run_id}" if path == "RUN" else path
            for _ in range(2):  # warm: caches, imports
                conn.request("GET", path)
                conn.getresponse().read()
            before = cpu_s(svc.pid)
            for _ in range(times):
                conn.request("GET", path)
                conn.getresponse().read()
            out.append((path, (cpu_s(svc.pid) - before) * 1000 / times))
    finally:
        conn.close()
    return out


def stored_events(db: Path, start: int, end: int) -> tuple[list[int], int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ids, crc = [], 0
        for eid, data in conn.execute("SELECT id, data FROM events WHERE id > ? AND id <= ? ORDER BY id",
                                      (start, end)):
            ids.append(eid)
            crc = zlib.crc32(data.encode(), crc)
        return ids, crc
    finally:
        conn.close()


def flat(rss: list[tuple[float, int]], seconds: float) -> tuple[float, float, float, bool]:
    """(first-half MiB, second-half MiB, max MiB, flat?) after a warm-up of a fifth of the run."""
    warm = [kib for t, kib in rss if t >= seconds / 5]
    if len(warm) < 4:
        warm = [kib for _, kib in rss]
    half = len(warm) // 2
    a = statistics.median(warm[:half] or warm) / 1024
    b = statistics.median(warm[half:]) / 1024
    top = max(kib for _, kib in rss) / 1024
    return a, b, top, b - a <= max(0.10 * a, 16.0)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=200)
    p.add_argument("--rate", type=float, default=50.0, help="API requests a second (default 50)")
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    if args.quick:
        args.subscribers, args.rate, args.seconds = 20, 10.0, 6.0
    print(machine_note(), file=sys.stderr)
    with Service(LAB_WORKERS="2", LAB_QUEUE_SIZE="64") as svc:
        warm = svc.post("/api/v1/runs", {"client": "qemu-img", "server": QUICK_RUN if args.quick else RUN})
        while svc.get(f"/api/v1/runs/{warm['id']}")["status"] in ("queued", "running"):  # images built before timing
            time.sleep(0.2)
        costs = route_costs(svc, warm["id"], 3 if args.quick else 20)
        start = svc.get("/api/v1/runs")["last_event_id"]
        print(f"  {args.subscribers} subscribers from event {start}, {args.rate:g} req/s for {args.seconds:g} s",
              file=sys.stderr)
        got = asyncio.run(drive(svc, args, start))
        subscribers_after = svc.get("/api/v1/health")["manager"]["subscribers"]
        db = svc.data_dir / "lab.sqlite3"
        statuses = [svc.get(f"/api/v1/runs/{rid}")["status"] for rid in got["runs"]]
        hwm = svc.hwm_kib() / 1024
    want_ids, want_crc = stored_events(db, start, got["end_id"])
    subs: list[Sub] = got["subs"]
    errors = [s.error for s in subs if s.error]
    exact = sum(1 for s in subs if s.ids == want_ids and s.crc == want_crc)
    lost = sum(len(set(want_ids) - set(s.ids)) for s in subs)
    dup = sum(len(s.ids) - len(set(s.ids)) for s in subs)
    reqs: list[Req] = got["reqs"]
    bad = [r for r in reqs if r.status == 0 or r.status >= 500 or (r.status >= 400 and r.status != 429)]
    posts = [r for r in reqs if r.path == "POST"]
    lat = [r.seconds * 1000 for r in reqs if r.status == 200 and r.seconds > 0]
    h = got["health"]
    h_ms = [x * 1000 for x in h["latency"]]
    saturated = sum(1 for r in h["running"] if r >= 2) / max(1, len(h["running"]))
    a, b, top, is_flat = flat(got["rss"], args.seconds)
    runs_ok = statuses.count("succeeded")

    quick = " (--quick)" if args.quick else ""
    events_ok = exact == len(subs) and not errors
    rows = [
        ["SSE subscribers", args.subscribers, "", ""],
        ["events in the window (database)", len(want_ids), "", ""],
        ["events delivered", sum(len(s.ids) for s in subs), f"{len(want_ids) * len(subs)} expected",
         verdict(sum(len(s.ids) for s in subs) == len(want_ids) * len(subs))],
        ["subscribers with every id, in order, data CRC equal", f"{exact}/{len(subs)}", "all", verdict(events_ok)],
        ["events lost / repeated (all subscribers)", f"{lost} / {dup}", "0 / 0", verdict(lost == 0 and dup == 0)],
        ["subscriber errors", len(errors), "0", verdict(not errors)],
        ["subscribers left after they closed", subscribers_after, "0", verdict(subscribers_after == 0)],
        ["catch-up after the last event", f"{got['catch_up_s']:.2f} s", "", ""],
        ["API requests (feeder POSTs)", f"{len(reqs)} ({len(posts)})", f"{args.rate * args.seconds:.0f}+", ""],
        ["API errors (5xx, transport, unexpected 4xx)", len(bad), "0", verdict(not bad)],
        ["429 queue full (feeder)", sum(1 for r in reqs if r.status == 429), "", ""],
        ["API latency p50 / p99 / max", f"{percentile(lat, 50):.1f} / {percentile(lat, 99):.1f} / {max(lat):.1f} ms",
         "", ""],
        ["runs finished (succeeded)", f"{len(statuses)} ({runs_ok})", "", verdict(runs_ok == len(statuses))],
        ["workers busy (health samples with 2 running)", f"{saturated:.0%}", "", ""],
        ["health latency p50 / p99 / max", f"{percentile(h_ms, 50):.1f} / {percentile(h_ms, 99):.1f} / "
         f"{max(h_ms):.1f} ms", f"p99 < {HEALTH_P99_TARGET_MS:.0f} ms",
         verdict(percentile(h_ms, 99) < HEALTH_P99_TARGET_MS and h["errors"] == 0)],
        ["health probes (errors)", f"{len(h_ms)} ({h['errors']})", "", ""],
        ["service RSS first half / second half / max", f"{a:.1f} / {b:.1f} / {top:.1f} MiB",
         "flat: +10% or 16 MiB at most", verdict(is_flat)],
        ["service RSS peak (VmHWM)", f"{hwm:.1f} MiB", "", ""],
        ["service CPU during the load", f"{got['cpu_cores']:.2f} cores", "", ""],
    ]
    print(table(["figure", "value", "target", "verdict"], rows,
                title=f"Load: {args.subscribers} SSE subscribers + {args.rate:g} req/s for {args.seconds:g} s, "
                      f"workers saturated{quick}"))
    print()
    print(table(["read (idle service, one at a time)", "service CPU per request", "target", "verdict"],
                [[path, f"{ms:.1f} ms", f"< {ROUTE_CPU_TARGET_MS:.0f} ms", verdict(ms < ROUTE_CPU_TARGET_MS)]
                 for path, ms in costs], title="What each read costs the service"))
    print()
    print("RSS samples (s, MiB): " + ", ".join(f"{t:.0f}:{k / 1024:.0f}" for t, k in got["rss"][:: max(1, len(
        got["rss"]) // 12)]))
    if errors:
        print(f"subscriber errors: {errors[:5]}")
    if bad:
        print(f"API errors: {[(r.path, r.status) for r in bad[:10]]}")
    print(machine_note())
    write_json(args.json, {"subscribers": args.subscribers, "events": len(want_ids), "exact": exact, "lost": lost,
                           "duplicated": dup, "subscriber_errors": errors[:20], "requests": len(reqs),
                           "api_errors": len(bad), "api_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99)},
                           "health_ms": {"p50": percentile(h_ms, 50), "p99": percentile(h_ms, 99), "max": max(h_ms)},
                           "rss_mib": {"first": a, "second": b, "max": top, "hwm": hwm}, "runs": len(statuses),
                           "runs_succeeded": runs_ok, "saturated": saturated, "cpu_cores": got["cpu_cores"],
                           "route_cpu_ms": dict(costs)})
    # Correctness failures fail the script; timing and memory are verdicts in the table.
    correct = events_ok and lost == 0 and dup == 0 and not bad and runs_ok == len(statuses) and subscribers_after == 0
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
