"""Cluster mode through the service, as a script author or a teacher uses it: `lab serve` with LAB_BROKER_URL
on a redis-server of the test's own, and two `lab worker`s, each a simulated machine (own data and runtime
dirs, own network namespace where this process may make one). No timing asserts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit import LiveService, wait_for
from testkit.cluster import Cluster

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "64M", "delay_write": "20ms", "delay_zero": "5ms"}  # ~6 s of sleeps: long enough to act on

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, LiveService]]:
    root = tmp_path_factory.mktemp("cluster")
    with Cluster(root, n=2, slots=2) as c:
        svc = LiveService(root / "service", env={"LAB_BROKER_URL": c.url, "LAB_AUTO_CALIBRATE": "0"})
        svc.start()
        try:
            wait_for(lambda: len(svc.get("/api/v1/workers")["workers"]) == 2, 30, 0.1, what="two workers listed")
            yield c, svc
        finally:
            svc.stop()


class Watcher:
    """An SSE client on /api/v1/events, in a thread: every event it saw, in order."""

    def __init__(self, base: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base,), daemon=True)
        self._thread.start()

    def _read(self, base: str) -> None:
        with httpx.stream("GET", f"{base}/api/v1/events", timeout=None) as stream:
            kind = None
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind:
                    self.events.append((kind, json.loads(line.split(":", 1)[1])))

    def close(self) -> None:
        self._stop.set()


def _runs_of(svc: LiveService, sweep_id: str) -> list[dict[str, Any]]:
    return svc.get(f"/api/v1/sweeps/{sweep_id}")["runs"]


def test_the_service_lists_its_workers(cluster: tuple[Cluster, LiveService]) -> None:
    c, svc = cluster
    got = svc.get("/api/v1/workers")
    assert got["cluster"] is True
    assert sorted(w["name"] for w in got["workers"]) == sorted(w.name for w in c.workers)
    for w in got["workers"]:
        assert w["state"] == "ready" and w["slots"] == 2 and len(w["fingerprint"]) == 16
        assert "kind:nbdkit" in w["capabilities"] and w["heartbeat_age_s"] < 10
        assert w["calibrated_at"] is None  # these workers were started with LAB_AUTO_CALIBRATE=0


def test_a_20_row_sweep_spreads_over_both_workers_and_watchers_see_it_live(cluster: tuple[Cluster, LiveService],
                                                                           tmp_path: Path) -> None:
    c, svc = cluster
    watcher = Watcher(svc.base)
    try:
        wait_for(lambda: svc.get("/api/v1/health")["manager"]["subscribers"] >= 1, 10, what="the watcher connected")
        sweep = svc.post("/api/v1/sweeps", {"name": "cluster twenty", "grid": {"client": ["qemu-2.8", "qemu-4.2"],
                                                                                "zeromode": ["plugin", "emulate"]},
                                            "server": FAST, "repeats": 5, "parallelism": 4})
        assert sweep["total"] == 20
        wait_for(lambda: svc.get(f"/api/v1/sweeps/{sweep['id']}")["status"] not in ("queued", "running"), 240, 0.5,
                 what="the sweep done")
    finally:
        watcher.close()
    runs = _runs_of(svc, sweep["id"])
    assert len(runs) == 20 and all(r["status"] == "succeeded" and r["verified"] is True for r in runs), \
        [(r["status"], r["error"]) for r in runs]
    assert {r["worker"]["name"] for r in runs} == {w.name for w in c.workers}
    ids = {r["id"] for r in runs}
    seen = [(k, e) for k, e in watcher.events if e.get("run_id") in ids]
    for run_id in ids:  # every run's own story, live, in order: queued, setup, copy + progress, verify, done
        mine = [(k, e.get("phase")) for k, e in seen if e["run_id"] == run_id]
        phases = [p for k, p in mine if k == "state"]
        assert phases[:4] == ["queued", "setup", "copy", "verify"] and phases[-1] == "finished", mine
        assert any(k == "progress" for k, _ in mine) and mine[-1][0] == "done", mine
    # a remote run is a local run's twin: the same fields, and each row's counts are what this machine
    # counts for the same row run here by a service without a broker
    with LiveService(tmp_path / "embedded", env={"LAB_AUTO_CALIBRATE": "0"}) as local:
        here = {}
        for client in ("qemu-2.8", "qemu-4.2"):
            for zeromode in ("plugin", "emulate"):
                row = local.post("/api/v1/runs", {"client": client, "server": {**FAST, "zeromode": zeromode}})
                wait_for(lambda i=row["id"]: local.get(f"/api/v1/runs/{i}")["status"] == "succeeded", 60, 0.1,
                         what="a local run")
                here[client, zeromode] = local.get(f"/api/v1/runs/{row['id']}")
    for r in runs:
        twin = here[r["client"], r["server"]["zeromode"]]
        assert twin.keys() == r.keys() and twin["worker"] is None
        assert (r["backend"], r["wire"]) == (twin["backend"], twin["wire"]), (r["client"], r["server"]["zeromode"])


def test_a_running_remote_run_says_where_it_runs(cluster: tuple[Cluster, LiveService]) -> None:
    c, svc = cluster
    run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": SLOW})
    row = wait_for(lambda: (lambda r: r if r["status"] == "running" and r.get("worker") else None)(
        svc.get(f"/api/v1/runs/{run['id']}")), 60, 0.05, what="running, with its worker")
    assert row["worker"]["name"] in {w.name for w in c.workers}
    svc.post(f"/api/v1/runs/{run['id']}/cancel")
    wait_for(lambda: svc.get(f"/api/v1/runs/{run['id']}")["status"] == "cancelled", 30, 0.05, what="cancelled")


def test_cancel_of_a_remote_run_frees_its_processes(cluster: tuple[Cluster, LiveService]) -> None:
    c, svc = cluster
    run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": SLOW})
    worker = wait_for(lambda: next((w for w in c.workers if any(p.name == "nbdkit" for p in w.watch())), None),
                      60, 0.05, what="nbdkit running on a worker")
    wait_for(lambda: any(p.name == "qemu-img" for p in worker.watch()), 30, 0.05, what="the copy under way")
    svc.post(f"/api/v1/runs/{run['id']}/cancel")
    wait_for(lambda: svc.get(f"/api/v1/runs/{run['id']}")["status"] == "cancelled", 30, 0.05, what="cancelled")
    wait_for(lambda: not worker.left(), 10, 0.05, what=f"{worker.name}'s nbdkit and qemu-img gone")


def test_kill_9_of_a_worker_mid_run_ends_its_run_interrupted_and_leaves_nothing(
        cluster: tuple[Cluster, LiveService]) -> None:
    c, svc = cluster
    run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": SLOW})
    worker = wait_for(lambda: next((w for w in c.workers if any(p.name == "qemu-img" for p in w.watch())), None),
                      60, 0.05, what="the copy under way on a worker")
    worker.kill9()
    wait_for(lambda: svc.get(f"/api/v1/runs/{run['id']}")["status"] != "running", 30, 0.1, what="the run ended")
    row = svc.get(f"/api/v1/runs/{run['id']}")
    assert row["status"] == "interrupted" and worker.name in row["error"], row
    wait_for(lambda: not worker.left(), 10, 0.05, what="nothing of the killed worker left")
    names = [w["name"] for w in svc.get("/api/v1/workers")["workers"]]
    assert worker.name not in names and len(names) == 1
