"""What one SSE delivery costs in the web layer: FastAPI's EventSourceResponse vs plain bytes.

A diagnostic for streaming.py's fan-out figures (not part of run_all). A tiny FastAPI app
in a uvicorn subprocess broadcasts N events at 20 a second to S subscribers through two
endpoints fed by the same per-subscriber asyncio queues:
- /sse/fastapi: `fastapi.sse.EventSourceResponse` yielding `ServerSentEvent(id, event, raw_data)`,
  as app/api/events.py does (FastAPI adds a producer task, two memory streams and a
  keepalive timer per event);
- /sse/plain:   `StreamingResponse(media_type="text/event-stream")` yielding the frame
  encoded once per event and shared by every subscriber.
Measured: the server process's CPU per delivered event, and publish -> arrival latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import machine_note, parser, percentile, setup_env, table, verdict, write_json

TMP = setup_env()

from _service import SseResult, cpu_s, free_port, subscribe  # noqa: E402

APP = '''
import asyncio, json, time
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

app = FastAPI()
subs: set[asyncio.Queue] = set()

def frame(i, data):
    return f"id: {i}\\nevent: progress\\ndata: {data}\\n\\n".encode()

async def feed():
    q = asyncio.Queue()
    subs.add(q)
    try:
        while True:
            item = await q.get()
            yield item
            if item[0] == "done":
                return
    finally:
        subs.discard(q)

@app.get("/sse/fastapi", response_class=EventSourceResponse)
async def sse_fastapi():
    yield ServerSentEvent(comment="hello")
    async for kind, i, data, _ in feed():
        yield ServerSentEvent(id=str(i), event=kind, raw_data=data)

@app.get("/sse/plain")
async def sse_plain():
    async def gen():
        yield b": hello\\n\\n"
        async for kind, i, data, encoded in feed():
            yield encoded
    return StreamingResponse(gen(), media_type="text/event-stream")

@app.get("/subs")
def count():
    return {"n": len(subs)}

@app.post("/publish")
async def publish(n: int, rate: float = 20.0):
    async def run():
        for i in range(1, n + 1):
            kind = "done" if i == n else "progress"
            data = json.dumps({"id": i, "type": kind, "ts": time.time(), "backend": {"write_ops": i}})
            item = (kind, i, data, frame(i, data).replace(b"event: progress", f"event: {kind}".encode()))
            for q in list(subs):
                q.put_nowait(item)
            await asyncio.sleep(1 / rate)
    asyncio.get_running_loop().create_task(run())
    return {"ok": True}
'''


async def _round(port: int, pid: int, path: str, subs: int, events: int) -> dict:
    import urllib.request

    results = [SseResult() for _ in range(subs)]
    connected = [asyncio.Event() for _ in range(subs)]
    tasks = [asyncio.create_task(subscribe(port, path, r, "done", c)) for r, c in zip(results, connected, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), timeout=120)

    def get(p: str, method: str = "GET") -> dict:
        body = b"" if method == "POST" else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{p}", method=method, data=body)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    while (await asyncio.to_thread(get, "/subs"))["n"] < subs:
        await asyncio.sleep(0.02)
    cpu0, t0 = cpu_s(pid), time.time()
    await asyncio.to_thread(get, f"/publish?n={events}", "POST")
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=300)
    cpu1, t1 = cpu_s(pid), time.time()
    delivered = sum(len(r.events) for r in results)
    lat = [e.t - e.data["ts"] for r in results for e in r.events]
    return {"delivered": delivered, "expected": subs * events, "cpu_s": cpu1 - cpu0, "wall_s": t1 - t0,
            "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=500)
    p.add_argument("--events", type=int, default=50)
    args = p.parse_args()
    subs, events = (20, 5) if args.quick else (args.subscribers, args.events)
    app_file = TMP / "sse_app.py"
    app_file.write_text(APP)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(TMP)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "sse_app:app", "--port", str(port),
                               "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    rows, out = [], {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                import urllib.request

                urllib.request.urlopen(f"http://127.0.0.1:{port}/subs", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        print(machine_note(), file=sys.stderr)
        for name in ("fastapi", "plain", "fastapi", "plain"):  # alternate, keep the second of each
            out[name] = asyncio.run(_round(port, server.pid, f"/sse/{name}", subs, events))
        for name, label in (("fastapi", "EventSourceResponse (as app/api/events.py)"),
                            ("plain", "StreamingResponse, frame encoded once")):
            r = out[name]
            cores = r["cpu_s"] / r["wall_s"]
            rows.append([label, f"{r['delivered']}/{r['expected']}", f"{r['cpu_s']:.2f}", f"{r['wall_s']:.2f}",
                         f"{cores:.2f}", verdict(cores < 0.5), f"{1e6 * r['cpu_s'] / max(1, r['delivered']):.0f}",
                         f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", verdict(r["p95_ms"] < 250)])
    finally:
        server.terminate()
        server.wait(timeout=10)
        Path(app_file).unlink(missing_ok=True)
    print(table(["endpoint", "delivered", "server CPU s", "wall s", "cores", "< 0.5", "us CPU per delivery",
                 "publish->arrival p50 ms", "p95 ms", "< 250"], rows,
                title=f"SSE layer alone: {subs} subscribers x {events} events at 20/s (no lab work in the process)"))
    print()
    print(machine_note())
    write_json(args.json, out)
    return 0 if all(r["delivered"] == r["expected"] for r in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
