"""kill -9 of a real `lab serve` holding servers on mounts and loop devices: its servers die
with it, and the next service's start-up sweep releases exactly what it had provisioned."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.host import storage
from testkit import wait_for


def _need(*names: str) -> None:
    for name in names:
        a = storage.availability()[name]
        if not a["available"]:
            pytest.skip(f"storage {name} unavailable here: {a['reason']}")


def test_kill_9_of_the_service_then_restart_releases_mounts_and_loops(live_service):
    _need("ext4", "blockdev", "tmpfs")
    svc = live_service()
    made = [svc.post("/api/v1/servers", body) for body in (
        {"kind": "qemu-nbd", "storage": "ext4", "size": "8M"},
        {"plugin": "file", "storage": "blockdev", "size": "8M"},
        {"kind": "nbd-server", "storage": "tmpfs", "size": "8M"},
    )]
    # a run in flight too: an era client copying slowly onto a file server on xfs (or ext4)
    where = "xfs" if storage.availability()["xfs"]["available"] else "ext4"
    run = svc.post("/api/v1/runs", {"client": "qemu-2.7", "server": {
        "plugin": "file", "storage": where, "size": "8M", "delay_write": "100ms"}})
    wait_for(lambda: svc.get(f"/api/v1/runs/{run['id']}")["status"] == "running", 30)
    dirs = [Path(m["real_server"]["storage"]["dir"]) for m in made]
    assert all(d.name.startswith(storage.PREFIX) for d in dirs), dirs
    assert storage._mounts_under(dirs[0]) and storage._loops_backed_by(dirs[0])
    assert storage._loops_backed_by(dirs[1]) and storage._mounts_under(dirs[2])
    helpers = svc.descendants()
    assert {"nbdkit", "qemu-nbd", "nbd-server"} <= {p.name for p in helpers}

    svc.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(p.alive() for p in helpers):
        time.sleep(0.05)
    assert not [p.name for p in helpers if p.alive()], "servers outlived the killed service"
    left = sorted({*[str(d) for d in dirs if d.exists()]})
    assert left, "what the killed service provisioned is still there (for the sweep to find)"
    everything = [d for root in (svc.runtime_dir, svc.data_dir / "scratch") if root.exists()
                  for d in root.glob(storage.PREFIX + "*")]
    assert len(everything) >= 4  # three servers and the run's

    svc2 = live_service()  # same data and runtime dirs: its start-up sweep cleans up
    assert svc2.runtime_dir == svc.runtime_dir
    for d in everything:
        assert not storage._mounts_under(d) and not storage._loops_backed_by(d) and not d.exists(), d
    assert svc2.get("/api/v1/runs/" + run["id"])["status"] == "interrupted"


@pytest.mark.parametrize("phase", ["setup", "copy", "verify"])
def test_cancel_in_each_phase_releases_storage(tmp_path, monkeypatch, phase):
    """LAB_FAULT=pause-at:PHASE holds the run there for sure; the cancel then leaves no mount,
    no loop device and no storage dir (setup: nothing provisioned yet; copy and verify: an
    ext4 image loop-mounted under a qemu-nbd)."""
    from apiutil import client_for, start_run, wait_phase

    _need("ext4")
    runtime = tmp_path / "run"
    monkeypatch.setenv("LAB_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("LAB_FAULT", f"pause-at:{phase}")
    with client_for(tmp_path / "data") as api:
        run = start_run(api, "qemu-4.2", kind="qemu-nbd", storage="ext4")
        wait_phase(api, run["id"], phase, 30)
        dirs = list(runtime.glob(storage.PREFIX + "*"))
        if phase != "setup":
            assert dirs and storage._mounts_under(dirs[0]) and storage._loops_backed_by(dirs[0])
        assert api.post(f"/api/runs/{run['id']}/cancel").status_code == 200
        got = api.get(f"/api/runs/{run['id']}").json()
        assert got["status"] == "cancelled", got["error"]
        for d in dirs:
            assert not storage._mounts_under(d) and not storage._loops_backed_by(d) and not d.exists(), d
        assert not list(runtime.glob(storage.PREFIX + "*"))
