"""The zero audit against real servers on real storage (root: mounts and loop devices).

The acceptance cases of issue 25, each with the sizes that decide it (a full audit runs 4 KiB
to 1 GiB; the bugs show from 64 MiB + 4 KiB up, so the tests stop at 128 MiB):
- nbd-server on tmpfs: `unsafe`, stale from 64 MiB into the request, and the reproducer fails
  when run as pasted;
- nbdkit's file plugin on ramfs: `unsafe`; on ext2 only the repeated NO_HOLE zero; on ext4 safe;
- qemu-nbd raw on tmpfs and nbdkit memory: safe, fast zero `fast`.
Nothing is left behind: processes, mounts, loop devices, private dirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.host import storage
from lab.nbd import audit
from testkit import mentioning, own_helpers

MiB = 1 << 20
pytestmark = pytest.mark.slow  # real servers writing hundreds of MiB: minutes in all
AVAIL = storage.availability()
STD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's: nbdsh runs /usr/bin/python3 with the bindings


def need(*stores: str) -> None:
    for s in stores:
        if not AVAIL[s]["available"]:
            pytest.skip(f"storage {s} unavailable here: {AVAIL[s]['reason']}")


def leftovers() -> list[str]:
    out = [f"process {p}" for p in own_helpers()]
    for root in (storage.resolve(None).runtime(),):
        for d in root.glob("sto-*"):
            out += [f"mount {m}" for m in storage._mounts_under(d)] + storage._loops_backed_by(d) + [str(d)]
        out += [str(d) for d in root.glob("aud-*")]
    return out


@pytest.fixture
def clean():
    assert not leftovers(), leftovers()
    yield
    assert not leftovers(), f"left behind: {leftovers()}"


def run(fields: dict, sizes: list[str], **kw) -> dict:
    plan = audit.make_plan(sizes, inflight=kw.pop("inflight", 1), flags=kw.pop("flags", None),
                           disks=kw.pop("disks", None))
    return audit.run_audit(fields, plan, deadline_s=600, **kw)


def by_key(a: dict) -> dict[tuple[str, str], dict]:
    return {(c["key"], c["position"]): c for c in a["cells"]}


@pytest.fixture
def repro_dir(tmp_path: Path):
    """Where a pasted reproducer makes its files; whatever it leaves (a mount, a loop device, a server) goes."""
    yield tmp_path
    for p in mentioning(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    for m in sorted((ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                     if ln.split()[1].startswith(str(tmp_path))), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    for loop in storage._loops_backed_by(tmp_path):
        subprocess.run(["losetup", "-d", loop], check=False)


def paste(script: str, where: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": STD_PATH, "REPRO_DIR": str(where)}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, env=env)


def test_nbd_server_on_tmpfs_is_unsafe_from_64_mib_and_its_reproducer_fails_when_pasted(clean, repro_dir):
    need("tmpfs")
    a = run({"kind": "nbd-server", "storage": "tmpfs"}, ["64M", "64M+4K"], flags=("none",))
    assert a["verdict"] == "unsafe" and a["status"] == "done"
    fb = a["safety"]["first_bad"]
    assert fb["request"] == "64M+4k none dirty" and fb["offset_in_request"] == 64 * MiB and fb["bytes"] == 4096
    cells = by_key(a)
    assert not cells[("64M none dirty", "first")]["unsafe"]  # 64 MiB exactly: one piece, zeroed
    assert not cells[("64M+4k none sparse", "first")]["unsafe"]  # a sparse disk hides it
    assert cells[("64M+4k none dirty", "first")]["cost"]["class"] == "dear"  # written out by the server
    assert "nbd-server" in a["server"]["argv"][0] and "3." in a["server"]["version"]
    assert "expwrite_zeroes" in a["upstream_report"] and "+64M" in a["upstream_report"]
    r = a["reproducers"][0]
    assert r["request"] == "64M+4k none dirty" and "nbdsh" in r["nbdsh"]
    got = paste(r["script"], repro_dir)
    assert got.returncode == 1, got.stdout + got.stderr
    assert "STALE 4096 bytes" in got.stdout and "= 67108864 into the request" in got.stdout
    assert not list(repro_dir.iterdir()), "the reproducer cleans up after itself"


def test_nbdkit_file_on_ramfs_is_unsafe_and_shows_its_fallback(clean):
    need("ramfs")
    a = run({"plugin": "file", "storage": "ramfs"}, ["128M"], flags=("none",), disks=("dirty",))
    assert a["verdict"] == "unsafe"
    c = by_key(a)[("128M none dirty", "first")]
    assert c["stale"]["bad_bytes"] == 64 * MiB and a["safety"]["first_bad"]["offset_in_request"] == 64 * MiB
    assert "fallback" in c["cost"]["mechanism"]["how"] and c["cost"]["class"] == "dear"
    assert c["cost"]["server_wrote"] >= 128 * MiB  # it wrote the request's size, yet half of it is stale
    caps = a["server"]["storage"]["capabilities"]["fallocate"]
    assert all(v.startswith("no") for v in caps.values())  # ramfs: no fallocate at all
    assert "plugins.c" in a["upstream_report"] and "1.44.1" in a["upstream_report"]


def test_nbdkit_file_on_ext2_fails_only_the_repeated_no_hole_zero(clean):
    need("ext2")
    a = run({"plugin": "file", "storage": "ext2"}, ["128M"], flags=("none", "no-hole"), disks=("dirty",))
    cells = by_key(a)
    assert a["verdict"] == "unsafe"
    assert [k for k, c in cells.items() if c["unsafe"]] == [("128M no-hole dirty", "repeated")]
    assert cells[("128M none dirty", "first")]["cost"]["class"] == "cheap"  # punch hole
    assert a["speed"]["no_hole"] in ("dear", "unknown")


def test_nbdkit_file_on_ext4_is_safe(clean):
    need("ext4")
    a = run({"plugin": "file", "storage": "ext4"}, ["64M", "128M"], flags=("none", "no-hole"))
    assert a["verdict"] != "unsafe" and not a["safety"]["bad_cells"], a["why"]
    assert a["speed"]["zero"] == "cheap" and a["reproducers"] == [] and a["upstream_report"] is None
    assert a["server"]["storage"]["capabilities"]["device"].startswith("/dev/loop")


@pytest.mark.parametrize("fields", [{"kind": "qemu-nbd", "storage": "tmpfs"}, {"plugin": "memory"}],
                         ids=["qemu-nbd-raw-tmpfs", "nbdkit-memory"])
def test_fast_zero_is_fast_and_safe(clean, fields):
    if fields.get("storage"):
        need(fields["storage"])
    a = run(fields, ["64M", "64M+4K"], flags=("none", "fast-zero"), inflight=2)
    assert a["verdict"] == "fast", a["why"]
    assert not a["safety"]["unsafe"]
    assert {c["inflight"] for c in a["cells"]} == {1, 2}
    assert a["latency"]["zero fast-zero"]["n"] >= 4 and a["zero_sizes"]


def test_cancel_stops_between_requests_and_releases_everything(clean):
    need("tmpfs")
    import threading

    cancel = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e)
        if len(seen) == 2:
            cancel.set()

    a = run({"kind": "nbd-server", "storage": "tmpfs"}, ["1M", "64M"], cancel=cancel, on_event=on_event)
    assert a["status"] == "cancelled" and a["groups"]["done"] < a["groups"]["total"]


def test_cli_exit_codes_and_json(clean, tmp_path):
    need("tmpfs")
    cmd = [sys.executable, "-m", "lab.cli", "audit", "--kind", "nbd-server", "--storage", "tmpfs",
           "--sizes", "64M+4K", "--flags", "none", "--disks", "dirty", "--inflight", "1", "--json",
           "--html", str(tmp_path / "a.html")]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert got.returncode == 1, got.stderr
    a = json.loads(got.stdout)
    assert a["verdict"] == "unsafe"
    page = (tmp_path / "a.html").read_text()
    assert "STALE +64M" in page and "<script src" not in page and "expwrite_zeroes" in page
    for bad in (["--sizes", "nope"], ["--kind", "podman"], ["--storage", "floppy"], ["--flags", "trim"],
                ["--storage", "dev:/dev/sda", "--destructive"]):
        got = subprocess.run([sys.executable, "-m", "lab.cli", "audit", *bad], capture_output=True, text=True,
                             timeout=60)
        assert got.returncode == 2, (bad, got.stderr)
        assert got.stderr.strip() and "Traceback" not in got.stderr


def test_a_directory_of_the_users(clean, tmp_path):
    """path:/DIR: a private scratch dir made inside it, removed afterwards."""
    a = run({"plugin": "file", "storage": f"path:{tmp_path}"}, ["1M"], flags=("none",), disks=("dirty",))
    assert a["status"] == "done" and not a["safety"]["unsafe"]
    assert a["server"]["storage"]["place"] == f"path:{tmp_path}"
    assert a["server"]["storage"]["capabilities"]["fallocate"]  # tried on a scratch file beside the disk
    assert list(tmp_path.iterdir()) == []  # nothing left in the user's directory


@pytest.fixture
def loop_device(tmp_path):
    """A loop device of this test's own (over a sparse file in tmp_path), detached by its name."""
    if not AVAIL["blockdev"]["available"]:
        pytest.skip(AVAIL["blockdev"]["reason"])
    backing = tmp_path / "dev.img"
    with open(backing, "wb") as f:
        f.truncate(256 * MiB)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_a_block_device_is_used_only_when_listed_and_destructive(clean, loop_device):
    from lab.domain.limits import Limits

    plan = audit.make_plan(["64M+4K"], flags=("none",), disks=("dirty",), inflight=1)
    for fields, limits, field in (({"kind": "nbd-server", "storage": f"dev:{loop_device}", "destructive": True},
                                   Limits(), "storage"),
                                  ({"kind": "nbd-server", "storage": f"dev:{loop_device}"},
                                   Limits(audit_devices=(loop_device,)), "storage")):
        with pytest.raises(audit.AuditError) as e:
            audit.check_request(fields, plan, limits)
        assert e.value.field == field
    a = audit.run_audit({"kind": "nbd-server", "storage": f"dev:{loop_device}", "destructive": True}, plan,
                        limits=Limits(audit_devices=(loop_device,)))
    assert a["verdict"] == "unsafe"  # nbd-server on a block device: the same stale 4 KiB
    caps = a["server"]["storage"]["capabilities"]
    assert caps["blkzeroout"] == "yes" and caps["device"].startswith("/dev/loop")
    assert a["reproducers"][0]["script"].count(loop_device) >= 1


def test_the_deadline_stops_it_and_keeps_what_was_done(clean):
    need("tmpfs")
    a = audit.run_audit({"kind": "nbd-server", "storage": "tmpfs"},
                        audit.make_plan(["4K", "1M", "64M", "128M"], inflight=1), deadline_s=4)
    assert a["status"] == "incomplete" and a["stopped"] == "deadline"
    assert 0 < a["groups"]["done"] < a["groups"]["total"]
    assert all(c["outcome"] != "ok" or "unsafe" in c for c in a["cells"])  # a cell cut short is not judged
