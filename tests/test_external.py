"""External targets: refused unless listed (before any connection), written only when asked."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import Settings
from lab.domain import targets
from lab.domain.run import Run
from lab.domain.spec import SpecError, build_spec
from lab.host.places import Core
from lab.measure.execute import execute
from lab.nbd import backends

FIELDS = {"size": "8M", "delay_write": 0, "delay_zero": 0, "zeromode": "plugin", "kind": "external"}


def listing(targets: str, **settings: object) -> Core:
    """The core's slice of settings that list `targets` (as LAB_EXTERNAL_TARGETS would)."""
    return Core.from_settings(Settings(external_targets=targets, **settings))


@pytest.fixture
def qemu_nbd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A qemu-nbd the test starts on a Unix socket over a 16 MiB raw file; stopped by its own pid."""
    disk = tmp_path / "ext.raw"
    disk.write_bytes(b"")
    with open(disk, "r+b") as f:
        f.truncate(16 << 20)
    sock = tmp_path / "ext.sock"
    proc = subprocess.Popen(["qemu-nbd", "-f", "raw", "-k", str(sock), "-t", "-e", "8", str(disk)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backends.wait_for_socket(sock, proc, "qemu-nbd", tmp_path / "none.log")
        yield str(sock), disk
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """TERM, then KILL: qemu-nbd 7.2 drops a SIGTERM that arrives after its socket listens but
    before its main loop runs (its handler only moves RUNNING to TERMINATE), 1 start in ~20 here."""
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Listener:
    """A plain listening socket that records whether anyone connected to it."""

    def __init__(self, family: int, addr: object) -> None:
        self.s = socket.socket(family, socket.SOCK_STREAM)
        self.s.bind(addr)
        self.s.listen(4)
        self.s.setblocking(False)

    def connected(self) -> bool:
        try:
            conn, _ = self.s.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


def test_off_by_default(monkeypatch):
    monkeypatch.setenv(targets.ENV, "127.0.0.1:10809")  # the core reads no environment: only what it is handed
    assert not backends.availability()["external"]["available"]
    with pytest.raises(SpecError) as e:
        build_spec({**FIELDS, "target": "127.0.0.1:10809", "destructive": True})
    assert e.value.field == "target" and "off" in e.value.message
    assert backends.availability(listing("127.0.0.1:10809").limits)["external"]["available"]


def test_the_setting_lists_targets_separated_by_commas_or_spaces():
    limits = listing(" /run/a.sock,127.0.0.1:10809  [::1]:10809 ,").limits
    assert limits.external_targets == ("/run/a.sock", "127.0.0.1:10809", "[::1]:10809")
    assert [t.text for t in targets.allowed_targets(limits)] == list(limits.external_targets)
    assert targets.allowed_targets(listing("not-a-target").limits) == []  # a malformed entry allows nothing


def test_unlisted_targets_are_refused_before_any_connection(monkeypatch, tmp_path):
    unix = Listener(socket.AF_UNIX, str(tmp_path / "not-listed.sock"))
    tcp = Listener(socket.AF_INET, ("127.0.0.1", 0))
    port = tcp.s.getsockname()[1]
    core = listing(f"{tmp_path / 'other.sock'}, 127.0.0.1:{port + 1}")
    for target in (str(tmp_path / "not-listed.sock"), f"127.0.0.1:{port}"):
        with pytest.raises(SpecError) as e:
            build_spec({**FIELDS, "target": target, "destructive": True}, core.limits)
        assert e.value.field == "target" and "not listed" in e.value.message
        # and the run path refuses the same way (a spec that skipped validation)
        run = execute(Run(client="qemu-img", server=build_spec({"size": "8M"}).with_(
            kind="external", target=target, destructive=True)), core=core)
        assert run.status == "failed" and "not listed" in run.error
    assert not unix.connected() and not tcp.connected(), "a refused target must see no connection"


def test_listed_target_needs_destructive(qemu_nbd):
    sock, _ = qemu_nbd
    with pytest.raises(SpecError) as e:
        build_spec({**FIELDS, "target": sock}, listing(sock).limits)
    assert e.value.field == "destructive"


def test_listed_qemu_nbd_target_runs_and_verifies(no_leftovers, qemu_nbd):
    sock, disk = qemu_nbd
    core = listing(sock)
    run = execute(Run(client="qemu-4.2", server=build_spec({**FIELDS, "target": sock, "destructive": True},
                                                           core.limits)), core=core)
    assert run.status == "succeeded", run.error
    assert run.verified and run.backend.write_ops > 0
    assert disk.stat().st_size == 16 << 20  # the export is larger: only the first 8 MiB was the run's


def test_read_only_and_oversized_exports_are_refused(qemu_nbd, tmp_path):
    sock, _ = qemu_nbd
    core = listing(sock, max_size="8M")  # the 16 MiB export is larger than LAB_MAX_SIZE
    run = execute(Run(client="qemu-img", server=build_spec({**FIELDS, "target": sock, "destructive": True},
                                                           core.limits)), core=core)
    assert run.status == "failed" and "larger than the size limit" in run.error
    ro_disk = tmp_path / "ro.raw"
    ro_disk.write_bytes(bytes(8 << 20))
    ro_sock = tmp_path / "ro.sock"
    proc = subprocess.Popen(["qemu-nbd", "-r", "-f", "raw", "-k", str(ro_sock), "-t", str(ro_disk)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backends.wait_for_socket(ro_sock, proc, "qemu-nbd", tmp_path / "none.log")
        core = listing(str(ro_sock))
        run = execute(Run(client="qemu-img", server=build_spec({**FIELDS, "target": str(ro_sock),
                                                                 "destructive": True}, core.limits)), core=core)
        assert run.status == "failed" and "read-only" in run.error
    finally:
        stop(proc)


def test_target_parsing():
    assert targets.parse_target("[::1]:10809").host == "::1"
    assert targets.parse_target("/run/x/../y.sock").socket == "/run/y.sock"
    for bad in ("host", "a:b", "1.2.3.4:70000", "nbd://x"):
        with pytest.raises(targets.ExternalError):
            targets.parse_target(bad)
