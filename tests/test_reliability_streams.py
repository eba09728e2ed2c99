"""Event streams under churn: watchers that leave in the middle of a burst cost nothing.

Found by scripts/fuzz_api.py: with FastAPI's generator-based SSE, a client leaving while the
stream's producer and keepalive tasks both held an event made its task group raise
(BrokenResourceError, "Exception in ASGI application" in the log), and the subscription
stayed registered until garbage collection. app/api/events.py now streams with a plain
StreamingResponse that closes its generator and subscription when the response ends.
"""

from __future__ import annotations

import socket

from apiutil import wait_for

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service.store import Store


def test_watchers_leaving_mid_burst_leave_no_error_and_no_subscription(tmp_path, live_service):
    store = Store(tmp_path / "data")
    run = Run(client="qemu-img", server=build_spec({"size": "8M"}), id="r1")
    store.append_event("state", "r1", None, {"status": "running", "phase": "copy"}, run=run.to_dict())
    for i in range(3000):  # a history to replay: every new watcher starts with a burst
        store.append_event("progress", "r1", None, {"n": i, "pad": "x" * 300})
    store.close()
    svc = live_service()
    with svc.http() as http:
        host, port = svc.base.removeprefix("http://").split(":")
        for i in range(40):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                path = "/api/events" if i % 2 else "/api/runs/r1/events"
                s.sendall(f"GET {path}?last_event_id={i * 7} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = s.recv(65536)
                assert head.startswith(b"HTTP/1.1 200"), head[:200]  # a stream, not a refusal
                for _ in range(i % 5):  # read a little more of the burst, then vanish
                    s.recv(65536)
        wait_for(lambda: http.get("/api/health").json()["manager"]["subscribers"] == 0, 10)
        log = svc.log_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
