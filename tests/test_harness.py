"""The live-service harness itself (testkit): a restart keeps port and data, a stop leaves
nothing of ours, and the process checks see what the service starts."""

from __future__ import annotations

import signal

from apiutil import FAST

from testkit import wait_for


def test_restart_keeps_port_and_data_and_stop_leaves_nothing(live_service):
    svc = live_service()
    first_pid, port = svc.pid, svc.port
    run = svc.post("/api/runs", {"server": FAST})
    wait_for(lambda: svc.get(f"/api/runs/{run['id']}")["status"] == "succeeded", 60)
    svc.post("/api/servers", FAST)
    nbdkit = wait_for(lambda: [p for p in svc.descendants() if p.name == "nbdkit"], 10)
    assert {p.pid for p in svc.descendants()} >= {p.pid for p in nbdkit}
    assert svc.stop() in (0, -signal.SIGTERM)
    assert not any(p.alive() for p in nbdkit), "the service stopped its server"
    svc.start()
    assert (svc.port, svc.get("/api/health")["status"]) == (port, "ok") and svc.pid != first_pid
    assert svc.get(f"/api/runs/{run['id']}")["status"] == "succeeded", "same data dir"
    assert svc.get("/api/servers")["servers"] == [] and svc.descendants() == []
