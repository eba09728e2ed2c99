"""Whole runs with the real qemu-img and nbdcopy: counts, model, verification, cleanup."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.host import images
from lab.measure.execute import execute

MiB = 1 << 20


def _run(client: str, **fields) -> Run:
    spec = build_spec({"size": "8M", "delay_write": "1ms", "delay_zero": "1ms", **fields})
    events: list[dict] = []
    run = execute(Run(client=client, server=spec), on_event=events.append)
    run.events = events  # type: ignore[attr-defined]
    return run


def test_image_recipe_has_real_holes_and_known_bytes():
    with images.acquire(8 * MiB, "alternate:1M") as img:
        mapping = json.loads(subprocess.run(["qemu-img", "map", "--output=json", str(img.qcow2)],
                                            capture_output=True, text=True, check=True).stdout)
        data = [(m["start"], m["length"]) for m in mapping if m["data"]]
        assert data == list(img.extents) == [(i * MiB, MiB) for i in range(0, 8, 2)]
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(img.raw), str(img.qcow2)],
                             capture_output=True, text=True)
        assert cmp.returncode == 0, cmp.stdout
        with open(img.raw, "rb") as f:
            block = f.read(4096)
        assert block == images.block_bytes(0) and block.count(0) < 16
        assert len(img.chunk_hashes) == 8


def test_baseline_counts_small(no_leftovers):
    run = _run("qemu-img")
    assert run.status == "succeeded", run.error
    assert run.verified is True
    # 8 MiB with maxdata=256k: every byte is a backend write (holes as zero-filled writes)
    assert (run.backend.write_ops, run.backend.write_bytes, run.backend.zero_ops) == (32, 8 * MiB, 0)
    assert (run.wire.write, run.wire.zero, run.wire.flush) == (8, 0, 1)
    assert run.predicted_s == pytest.approx(0.032)
    assert run.stats_check["agree"] is True
    assert run.flags["can_zero"] is False


def test_plugin_zeroes_each_hole(no_leftovers):
    run = _run("qemu-img", zeromode="plugin")
    assert run.status == "succeeded", run.error
    assert (run.backend.write_ops, run.backend.zero_ops, run.backend.zero_bytes) == (16, 4, 4 * MiB)
    assert (run.wire.write, run.wire.zero, run.wire.fast_zero) == (4, 4, 0)
    assert run.predicted_s == pytest.approx(0.020)


def test_emulated_zeroes_become_writes(no_leftovers):
    run = _run("qemu-img", zeromode="emulate")
    assert run.status == "succeeded", run.error
    assert (run.backend.write_ops, run.backend.zero_ops) == (32, 0)
    # nbdkit >= 1.32 emulates in its core, above the log filter: the log sees writes
    assert (run.wire.write, run.wire.zero) == (8, 0)


def test_geometry_is_general(no_leftovers):
    run = _run("qemu-img", size="12M", pattern="alternate:512k:1536k", maxdata="64k", zeromode="plugin",
               delay_write="2ms", delay_zero="3ms")
    assert run.status == "succeeded", run.error
    # 6 data extents of 512k -> 8 writes each at 64k; qemu-img zeroes the holes
    assert run.backend.write_ops == 48 and run.backend.write_bytes == 3 * MiB
    assert run.backend.zero_bytes == 9 * MiB
    assert run.predicted_s == pytest.approx((48 * 2 + run.backend.zero_ops * 3) / 1000)


def test_nbdcopy_real_binary(no_leftovers):
    run = _run("nbdcopy", zeromode="plugin")
    assert run.status == "succeeded", run.error
    assert run.verified and run.backend.write_bytes == 4 * MiB
    assert run.model == "serial-upper-bound"


def test_progress_events_and_states(no_leftovers):
    run = _run("qemu-img", size="16M", delay_write="5ms")
    types = [e["type"] for e in run.events]
    assert types[0] == "state" and types.count("progress") >= 3
    phases = [e.get("phase") for e in run.events if e["type"] == "state"]
    assert phases == ["setup", "copy", "verify"]
    last = [e for e in run.events if e["type"] == "progress"][-1]
    assert last["backend"]["write_ops"] == run.backend.write_ops
    assert last["fraction"] == 1.0


def test_wrong_copy_is_a_failed_run(monkeypatch, no_leftovers):
    """A client that skips data must fail verification, however fast it was."""
    from lab.nbd.clients import real

    def lazy_copy(self, ctx):
        import nbd

        from lab.nbd.servers import close_handle

        h = nbd.NBD()
        h.connect_uri(ctx.uri)
        h.pwrite(b"\x00" * 4096, 0)
        close_handle(h)
        return real.ClientResult()

    monkeypatch.setattr(real.QemuImg, "copy", lazy_copy)
    run = _run("qemu-img")
    assert run.status == "failed" and run.verified is False
    assert "do not match" in run.error or "does not match" in run.error


def test_cancel_mid_copy_leaves_nothing(no_leftovers):
    spec = build_spec({"size": "32M", "delay_write": "20ms"})
    cancel = threading.Event()
    events: list[dict] = []

    def on_event(e):
        events.append(e)
        if e["type"] == "progress" and e["backend"]["write_ops"] >= 3:
            cancel.set()

    run = execute(Run(client="qemu-img", server=spec), on_event=on_event, cancel=cancel)
    assert run.status == "cancelled"
    assert run.verified is not True


def test_timeout_fails_the_run(no_leftovers):
    spec = build_spec({"size": "32M", "delay_write": "20ms"})
    run = execute(Run(client="qemu-img", server=spec), timeout=0.5)
    assert run.status == "failed" and "timed out" in run.error


def test_managed_server_busy_waits_for_the_run_deadline_only(no_leftovers):
    """A run on a managed server another holder has: the wait for its lock ends with the
    run's deadline (a timeout) or its cancel, and the managed server is left running."""
    from lab.nbd.servers import Server

    spec = build_spec({"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"})
    with Server(spec) as srv:
        with srv.run_lock:
            t0 = time.monotonic()
            timed = execute(Run(client="qemu-img", server=spec), server=srv, timeout=0.5)
            assert (timed.status, timed.error) == ("failed", "timed out after 0.5 s")
            assert time.monotonic() - t0 < 3
            cancel = threading.Event()
            threading.Timer(0.3, cancel.set).start()
            cancelled = execute(Run(client="qemu-img", server=spec), server=srv, cancel=cancel, timeout=60)
            assert cancelled.status == "cancelled"
        assert srv.running, "an attached run must not stop a managed server"
        ok = execute(Run(client="qemu-img", server=spec), server=srv, timeout=60)
        assert ok.status == "succeeded" and ok.server_id == srv.id and ok.stats_check is None
        assert not srv.run_lock.locked()


def test_client_crash_is_reported(no_leftovers, monkeypatch):
    from lab.nbd.clients import real

    def broken(self, ctx):
        real.run_process(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", "/nonexistent.qcow2", ctx.uri], ctx)

    monkeypatch.setattr(real.QemuImg, "copy", broken)
    run = _run("qemu-img")
    assert run.status == "failed"
    assert "qemu-img exited with status 1" in run.error


def test_client_killed_mid_copy(no_leftovers):
    """SIGKILL the real qemu-img mid-copy: the run fails plainly and nothing lingers."""
    import os
    import signal

    from testkit import descendants

    spec = build_spec({"size": "32M", "delay_write": "10ms"})
    killed: list[int] = []

    def on_event(e):
        if e["type"] == "progress" and not killed:
            for p in descendants(os.getpid()):
                if p.name == "qemu-img":
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)

    run = execute(Run(client="qemu-img", server=spec), on_event=on_event)
    assert killed
    assert run.status == "failed"
    assert "status -9" in run.error


@pytest.mark.slow
@pytest.mark.parametrize(("zeromode", "writes", "zeroes", "talk_s"),
                         [("none", 400, 0, 8.54), ("plugin", 200, 50, 4.54)])
def test_talk_geometry_full_size(zeromode, writes, zeroes, talk_s, no_leftovers):
    """The talk's 100 MiB copy with its delays: exact counts; sleep-bound, so never faster than the model."""
    run = execute(Run(client="qemu-img", server=build_spec({"zeromode": zeromode})))
    assert run.status == "succeeded" and run.verified
    assert (run.backend.write_ops, run.backend.zero_ops) == (writes, zeroes)
    assert run.backend.write_bytes == 100 * MiB if zeromode == "none" else 50 * MiB
    assert run.predicted_s == pytest.approx((writes * 20 + zeroes * 5) / 1000)
    # Each request sleeps its delay, so the model is a floor; generous ceiling for a busy CI box.
    assert run.predicted_s <= run.duration_s < run.predicted_s * 1.25
    assert abs(run.duration_s - talk_s) / talk_s < 0.25


def test_era_child_crash_is_reported_with_its_stderr(no_leftovers):
    """The era clients' child process dying is a failed copy that says why, not a hang."""
    from lab.nbd.clients.base import ClientError, CopyContext
    from lab.nbd.clients.child import run_in_child
    from lab.nbd.servers import Server

    with Server(build_spec({"size": "4M"})) as srv, images.acquire(4 * MiB, "alternate:1M") as img:
        ctx = CopyContext(image=img, uri=srv.uri, flags=srv.flags)
        with pytest.raises(ClientError) as e:
            run_in_child("qemu-9.9", ctx)  # no such client in the child's registry
    assert "exited with status 1" in str(e.value) and "unknown client" in str(e.value)


def test_era_child_starts_without_the_spec_or_web_stack():
    """An era client's child process imports the client, libnbd and little else: at a case
    study's start sixteen of them begin at once, and importing the spec's pydantic models in
    each was a burst of CPU (~0.15 s apiece) that slowed the real binaries already copying."""
    import subprocess
    import sys

    code = ("import sys, lab.nbd.clients.child as c; from lab.nbd.clients import get_client; get_client('qemu-4.2');"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'pydantic_settings', 'fastapi', 'starlette', 'lab'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(out.stdout.split())
    assert "lab.nbd.clients.eras" in loaded  # the probe itself works: the era clients did load
    heavy = {m for m in loaded if not m.startswith("lab")}
    heavy |= loaded & {"lab.domain.spec", "lab.nbd.servers", "lab.config"}
    assert not heavy, f"the era child imports {sorted(heavy)}"
