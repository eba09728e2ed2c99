"""Cancel at any moment: queued, setup, copy (real binaries and an era client), verify.

The phase is hit for sure, not by sleeping and hoping: LAB_FAULT=pause-at:PHASE holds each
run at that phase until it is cancelled (setup: before the image and nbdkit; verify: after
the copy, before the read-back), and copy is a run slowed to 500 ms a request, cancelled
once its client process is up and the backend has seen a write. After the cancel call
returns: status `cancelled`, nothing counted as a success, no process and no private dir
of the run left. (How fast: bench/cancel.py; the tests assert no timing.)
"""

from __future__ import annotations

import os
import time

import pytest
from apiutil import FAST, client_for, start_run, wait_for, wait_phase

from testkit import HELPERS, descendants, mentioning

CRAWL = {**FAST, "delay_write": "500ms", "delay_zero": "500ms"}
CLIENT_PROCESS = {"qemu-img": "qemu-img", "nbdcopy": "nbdcopy", "qemu-4.2": "python"}


@pytest.fixture
def private_runtime(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    monkeypatch.setenv("LAB_RUNTIME_DIR", str(runtime))
    return runtime


def _ours_left(runtime, before: set[int]) -> list[str]:
    """Helper or era-client processes started during the test and still alive, plus any naming our dir."""
    left = [f"{p.name}:{p.pid}" for p in descendants(os.getpid())
            if p.pid not in before and (p.name in HELPERS or p.name.startswith("python"))]
    left += [f"{p.name}:{p.pid}" for p in mentioning(runtime)]
    return left


def _assert_cancelled(api, runtime, rid: str, before: set[int]) -> dict:
    row = api.get(f"/api/runs/{rid}").json()
    assert row["status"] == "cancelled" and row["error"] == "cancelled", row
    assert row["verified"] is not True, "a cancelled run is never counted as verified"
    succeeded = api.get("/api/results.json", params={"status": "succeeded"}).json()["rows"]
    assert rid not in {r["id"] for r in succeeded}
    assert not _ours_left(runtime, before), "a process of the run outlived its cancel"
    assert not [d for d in runtime.iterdir() if d.name.startswith("srv-")] if runtime.exists() else True
    manager = api.app.state.manager
    tail = [(e.type, e.data.get("status")) for e in manager.store.events_after(0, run_id=rid)][-2:]
    assert tail == [("state", "cancelled"), ("done", "cancelled")]
    return row


def _cancel(api, rid: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = api.post(f"/api/runs/{rid}/cancel")
    return r.status_code, time.perf_counter() - t0


def test_cancel_while_queued(tmp_path, private_runtime, monkeypatch):
    monkeypatch.setenv("LAB_FAULT", "pause-at:setup")  # the first run holds the only worker
    before = {p.pid for p in descendants(os.getpid())}
    with client_for(tmp_path / "data", workers=1) as api:
        blocker = start_run(api)
        manager = api.app.state.manager
        wait_for(lambda: manager.stats()["running"] == 1)
        target = start_run(api, "nbdcopy")
        code, _ = _cancel(api, target["id"])
        assert code == 200
        row = _assert_cancelled(api, private_runtime, target["id"], before)
        assert row["started_at"] is None and row["backend"] is None, "it never started"
        assert _cancel(api, blocker["id"])[0] == 200
        _assert_cancelled(api, private_runtime, blocker["id"], before)


@pytest.mark.parametrize("phase", ["setup", "verify"])
def test_cancel_in_a_held_phase(tmp_path, private_runtime, monkeypatch, phase):
    monkeypatch.setenv("LAB_FAULT", f"pause-at:{phase}")
    before = {p.pid for p in descendants(os.getpid())}
    with client_for(tmp_path / "data") as api:
        run = start_run(api, "qemu-img")
        wait_phase(api, run["id"], phase)
        if phase == "verify":  # the copy is over and nbdkit is still up, holding the result
            assert [p.name for p in mentioning(private_runtime)] == ["nbdkit"]
        code, _ = _cancel(api, run["id"])
        assert code == 200
        row = _assert_cancelled(api, private_runtime, run["id"], before)
        if phase == "verify":
            assert row["backend"]["write_ops"] == 32 and row["verified"] is None, "copied, never verified"
        else:
            assert row["backend"] is None and row["flags"] is None, "stopped before nbdkit started"


@pytest.mark.parametrize("client", ["qemu-img", "nbdcopy", "qemu-4.2"])
def test_cancel_while_copying(tmp_path, private_runtime, client):
    before = {p.pid for p in descendants(os.getpid())}
    with client_for(tmp_path / "data", max_delay_ms=1000) as api:
        run = start_run(api, client, **CRAWL)
        manager = api.app.state.manager

        def copying() -> bool:
            names = [p.name for p in descendants(os.getpid()) if p.pid not in before]
            wrote = any(e.type == "progress" and e.data["backend"]["write_ops"] > 0
                        for e in manager.store.events_after(0, run_id=run["id"]))
            return wrote and any(n.startswith(CLIENT_PROCESS[client]) for n in names)

        wait_for(copying)
        code, _ = _cancel(api, run["id"])
        assert code == 200
        row = _assert_cancelled(api, private_runtime, run["id"], before)
        assert row["duration_s"] is None, "a cancelled copy reports no copy time"
