"""Flags come from the real server, not the lab's proxy; a run shows the real command line, and `plugin`
only where there is one (issue 25).

An nbdkit `file` target advertises no fast zero (nbdinfo says can_fast_zero: false). The lab used to put
nbdkit's truncate filter in front of external targets, which advertises fast zero whatever is below it
(1.32's truncate_can_fast_zero returns 1), so the target came out "refused-but-cheap".
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lab.domain.limits import Limits
from lab.domain.spec import build_spec
from lab.host import procs
from lab.nbd import audit
from lab.nbd.backends import wait_for_socket
from lab.nbd.servers import Server

FLAGS = ("can_zero", "can_fast_zero", "can_trim", "can_flush", "can_fua", "can_multi_conn")


@pytest.fixture
def file_target(tmp_path: Path):
    """A test-owned nbdkit file server on a Unix socket (stopped by its own handle)."""
    disk, sock = tmp_path / "target.img", tmp_path / "target.sock"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    proc = procs.spawn(["nbdkit", "-f", "--exit-with-parent", "-U", str(sock), "file", f"file={disk}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc, "nbdkit", tmp_path / "none.log")
        yield str(sock)
    finally:
        procs.stop(proc)


def nbdinfo(sock: str) -> dict:
    out = subprocess.run(["nbdinfo", "--json", f"nbd+unix:///?socket={sock}"], capture_output=True, text=True,
                         check=True, timeout=30)
    return json.loads(out.stdout)["exports"][0]


def test_an_external_nbdkit_file_target_advertises_what_nbdinfo_says(no_leftovers, file_target):
    want = nbdinfo(file_target)
    assert want["can_fast_zero"] is False  # the point: the file plugin has no fast zero
    limits = Limits(external_targets=(file_target,))
    spec = build_spec({"kind": "external", "target": file_target, "destructive": True, "size": "16M",
                       "zeromode": "plugin", "fastzeromode": "default", "delay_write": 0, "delay_zero": 0},
                      limits)
    with Server(spec, limits=limits) as srv:
        seen = srv.flags.to_dict()
        info = srv.info()
        notes = " ".join(srv.kind_notes())
    assert {k: seen[k] for k in FLAGS} == {k: want[k] for k in FLAGS}
    assert {k: info["real_server"]["flags"][k] for k in FLAGS} == {k: want[k] for k in FLAGS}
    assert "--filter=offset" in info["argv"] and "--filter=truncate" not in info["argv"]
    assert "nbd" in info["argv"] and not any(a.startswith("memory") for a in info["argv"])
    assert "passes them on unchanged" in notes
    assert info["server"]["plugin"] is None  # no nbdkit plugin serves an external target


def test_the_audit_reads_the_targets_own_flags(no_leftovers, file_target):
    want = nbdinfo(file_target)
    limits = Limits(external_targets=(file_target,))
    a = audit.run_audit({"kind": "external", "target": file_target, "destructive": True},
                        audit.make_plan(["1M"], flags=("none", "fast-zero"), disks=("dirty",), inflight=1),
                        limits=limits)
    assert {k: a["flags"][k] for k in FLAGS} == {k: want[k] for k in FLAGS}
    assert a["verdict"] in ("not-advertised-cheap", "not-advertised-dear")
    assert a["speed"]["fast_zero"] == "not-advertised"


def test_an_external_target_must_be_listed_and_destructive(file_target):
    with pytest.raises(audit.AuditError) as e:
        audit.check_request({"kind": "external", "target": file_target, "destructive": True},
                            audit.make_plan(["1M"]), Limits())
    assert e.value.field == "target"
    with pytest.raises(audit.AuditError) as e:
        audit.check_request({"kind": "external", "target": file_target}, audit.make_plan(["1M"]),
                            Limits(external_targets=(file_target,)))
    assert e.value.field == "destructive"


def test_a_qemu_nbd_run_shows_qemu_nbds_command_line_not_a_memory_plugin(no_leftovers):
    with Server(build_spec({"kind": "qemu-nbd", "size": "8M", "zeromode": "plugin"})) as srv:
        info = srv.info()
    assert info["real_server"]["argv"][0] == "qemu-nbd" and "--discard=unmap" in info["real_server"]["argv"]
    assert not any(a.startswith("memory") for a in info["argv"]) and "nbd" in info["argv"]
    assert info["server"]["plugin"] is None
    assert info["real_server"]["flags"]["can_fast_zero"] is True
