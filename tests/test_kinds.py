"""Server kinds on real storage: every kind copies and verifies, and nothing is left behind.

Loop devices and mounts are real (losetup, mkfs.*, mount): where this machine does not
allow them, the tests skip and say why (lab.host.storage.availability() gives the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lab.domain.run import Run
from lab.domain.spec import SpecError, build_spec
from lab.host import leftovers, procs, storage
from lab.measure.execute import execute
from lab.nbd import backends
from lab.nbd.servers import Server
from testkit import children, wait_for

AVAIL = storage.availability()
SMALL = {"size": "8M", "delay_write": 0, "delay_zero": 0, "zeromode": "plugin"}


def need(name: str) -> None:
    a = AVAIL[name]
    if not a["available"]:
        pytest.skip(f"storage {name} unavailable here: {a['reason']}")


def ours() -> tuple[list[str], list[str]]:
    """Mounts and loop devices that belong to this test session's storage dirs."""
    roots = [procs.runtime_root(), storage.data_root()]
    mounts, loops = [], []
    for root in roots:
        for d in root.glob(storage.PREFIX + "*"):
            mounts += [str(m) for m in storage._mounts_under(d)]
            loops += storage._loops_backed_by(d)
    return mounts, loops


def no_storage_left() -> None:
    mounts, loops = ours()
    assert not mounts and not loops, f"left behind: mounts {mounts}, loop devices {loops}"
    left = [p for r in (procs.runtime_root(), storage.data_root()) for p in r.glob(storage.PREFIX + "*")]
    assert not left, f"storage dirs left behind: {left}"


@pytest.mark.parametrize("name", storage.STORAGES)
def test_provision_and_release_each_storage(name):
    need(name)
    p = storage.provision(name, 16 << 20)
    try:
        assert p.disk is not None
        if name in ("ext4", "xfs", "btrfs", "tmpfs"):
            assert storage._mounts_under(p.dir), "the filesystem is mounted below its private dir"
            out = subprocess.run(["stat", "-f", "-c", "%T", str(p.disk.parent)], capture_output=True, text=True)
            assert (name if name != "ext4" else "ext2/ext3") in out.stdout
        if name in ("ext4", "xfs", "btrfs", "blockdev"):
            assert p.loops and Path(p.loops[0]).exists()
        if name == "blockdev":
            assert str(p.disk).startswith("/dev/loop")
    finally:
        p.release()
    assert not storage._mounts_under(p.dir) and not storage._loops_backed_by(p.dir) and not p.dir.exists()
    p.release()  # twice is harmless


def test_release_refuses_a_dir_that_is_not_ours(tmp_path):
    with pytest.raises(ValueError, match="not a lab storage dir"):
        storage.release_dir(tmp_path)


@pytest.mark.parametrize("fields", [
    {"plugin": "file", "storage": "tmpfs"},
    {"plugin": "file", "storage": "blockdev"},
    {"kind": "qemu-nbd", "disk_format": "qcow2", "storage": "ext4"},
    {"kind": "qemu-nbd", "storage": "xfs"},
    {"kind": "nbd-server", "storage": "btrfs"},
    {"kind": "nbd-server"},
], ids=lambda f: "-".join(str(v) for v in f.values()))
def test_every_kind_copies_and_verifies(fields, no_leftovers):
    if fields.get("storage"):
        need(fields["storage"])
    if not backends.availability()[fields.get("kind", "nbdkit")]["available"]:
        pytest.skip(backends.availability()[fields["kind"]]["reason"])
    run = execute(Run(client="qemu-4.2", server=build_spec({**SMALL, **fields})))
    assert run.status == "succeeded", run.error
    assert run.verified
    assert run.backend is not None and run.backend.write_ops > 0  # the filter stack saw the writes
    if fields.get("kind") == "qemu-nbd":
        assert run.flags["can_fast_zero"] is True  # qemu-nbd 7.2 passes fast zero through the proxy
        assert any("nbd proxy in front of qemu-nbd" in n for n in run.notes), run.notes  # its cost, on the run
    if fields.get("storage"):
        assert any(n.startswith(f"disk on {fields['storage']}") for n in run.notes), run.notes
    no_storage_left()


def test_proxy_cost_is_measured_for_proxied_kinds(no_leftovers):
    with Server(build_spec({**SMALL, "kind": "qemu-nbd"})) as srv:
        cost = srv.info()["proxy_cost"]
        assert cost["reads"] > 0 and cost["direct_us"] > 0 and cost["proxied_us"] > 0
        assert srv.info()["real_server"]["direct_uri"].startswith("nbd+unix://")


def test_cancel_during_copy_releases_storage(no_leftovers):
    need("ext4")
    cancel = threading.Event()
    run = Run(client="qemu-2.7", server=build_spec({"size": "8M", "plugin": "file", "storage": "ext4",
                                                    "delay_write": "50ms"}))
    timer = threading.Timer(0.8, cancel.set)
    timer.start()
    execute(run, cancel=cancel)
    timer.cancel()
    assert run.status == "cancelled"
    no_storage_left()


def test_failure_after_provisioning_releases_storage(monkeypatch, no_leftovers):
    need("blockdev")
    real_start = backends.QemuNbdBackend.start

    def start_then_fail(self, d):
        real_start(self, d)  # qemu-nbd running on a loop device by now
        raise RuntimeError("failed after provisioning")

    monkeypatch.setattr(backends.QemuNbdBackend, "start", start_then_fail)
    run = execute(Run(client="qemu-img", server=build_spec({**SMALL, "kind": "qemu-nbd", "storage": "blockdev"})))
    assert run.status == "failed" and "failed after provisioning" in run.error
    no_storage_left()


_HOLDER = """
import sys, time
from lab.nbd.servers import Server
from lab.domain.spec import build_spec
from lab.host import places
from lab.config import Settings
places.use(places.Places.from_settings(Settings()))  # this script is a driver: the session's LAB_RUNTIME_DIR
srvs = [Server(build_spec(f)).start() for f in ({"size": "8M", "kind": "qemu-nbd", "storage": "ext4"},
                                                 {"size": "8M", "plugin": "file", "storage": "blockdev"})]
print(" ".join(str(s.backend_kind.store.dir) for s in srvs), flush=True)
time.sleep(600)
"""


def test_kill_9_leaves_what_the_startup_sweep_releases():
    """A service killed with -9: its servers die with it (PDEATHSIG); its mounts and loop
    devices stay until the next start-up sweep, which releases exactly those."""
    need("ext4")
    need("blockdev")
    env = {**os.environ}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).parent.parent)
    try:
        line = proc.stdout.readline()
        dirs = [Path(p) for p in line.split()]
        assert len(dirs) == 2, line
        assert storage._mounts_under(dirs[0]) and storage._loops_backed_by(dirs[1])
        helpers = children(proc.pid)
        assert len(helpers) >= 3, helpers  # nbdkit x2, qemu-nbd
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not any(p.alive() for p in helpers), 10, what="servers die with the killed service")
    assert storage._loops_backed_by(dirs[0]), "nothing released the loop device yet: the sweep must"
    leftovers.sweep()  # what Manager.start() runs
    for d in dirs:
        assert not storage._mounts_under(d) and not storage._loops_backed_by(d) and not d.exists()


def test_spec_rules_for_kinds():
    with pytest.raises(SpecError) as e:
        build_spec({"storage": "tmpfs"})
    assert e.value.field == "storage" and "memory plugin" in e.value.message
    with pytest.raises(SpecError) as e:
        build_spec({"kind": "nbd-server", "disk_format": "qcow2"})
    assert e.value.field == "disk_format"
    with pytest.raises(SpecError) as e:
        build_spec({"kind": "qemu-nbd", "disk_format": "qcow2", "storage": "blockdev"})
    assert e.value.field == "disk_format"
    with pytest.raises(SpecError) as e:
        build_spec({"kind": "nbdkit", "target": "/x.sock"})
    assert e.value.field == "target"
    with pytest.raises(SpecError) as e:
        build_spec({"kind": "podman"})
    assert e.value.field == "kind"


def test_lab_kinds_cli_lists_availability():
    out = subprocess.run([sys.executable, "-m", "lab.cli", "kinds"], capture_output=True, text=True, check=True)
    for name in (*backends.KINDS, *storage.STORAGES):
        assert name in out.stdout
    assert "LAB_EXTERNAL_TARGETS" in out.stdout or os.environ.get("LAB_EXTERNAL_TARGETS")
    json.dumps(storage.availability())  # serialisable for the API


def test_rows_needing_what_this_machine_lacks_are_left_out_with_the_reason(monkeypatch):
    """A machine without mount rights (simulated: the availability answer) plans `today` without
    the tmpfs rows, and says why; nothing is started to find out."""
    from lab.domain import scenarios
    from lab.service import sweeps

    real = storage.availability()
    fake = {**real, "tmpfs": {"available": False, "reason": "mount is not allowed here"}}
    monkeypatch.setattr(storage, "availability", lambda places=None: fake)
    rows = list(scenarios.get_scenario("today").rows)
    keep, skipped = backends.Machine().runnable(rows)
    tmpfs_rows = {r.key for r in rows if r.server.get("storage") == "tmpfs"}
    assert tmpfs_rows and set(skipped) >= tmpfs_rows
    assert all("mount is not allowed here" in skipped[k] for k in tmpfs_rows)
    runs, _, _ = sweeps.plan("today", overrides={"size": "8M"})
    assert not any(r.server.storage == "tmpfs" for r in runs)
    assert len(runs) == len(keep)
