"""nbdkit lifecycle and what it advertises, against the real binary."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import nbd
import pytest

from lab.domain.spec import build_spec
from lab.host import leftovers
from lab.nbd.servers import Server, ServerError, build_argv, build_chain_argv, close_handle, topology
from testkit import alive, wait_for


def test_argv_stacks_the_filters_in_order():
    spec = build_spec({"zeromode": "plugin", "fastzeromode": "none", "maxdata": "64k", "delay_write": "7ms"})
    argv = build_argv(spec, Path("/s/sock"), Path("/s/log"), Path("/s/stats"))
    filters = [a.split("=", 1)[1] for a in argv if a.startswith("--filter=")]
    assert filters == ["log", "nozero", "blocksize", "delay", "stats", "noextents"]
    assert argv[0] == "nbdkit" and "--exit-with-parent" in argv
    assert argv[argv.index("-U") + 1] == "/s/sock"
    plugin_at = argv.index("memory")
    assert all(not a.startswith("--filter") for a in argv[plugin_at:])
    params = dict(a.split("=", 1) for a in argv[plugin_at + 1:])
    assert params == {"size": str(100 << 20), "logfile": "/s/log", "statsfile": "/s/stats", "zeromode": "plugin",
                      "fastzeromode": "none", "maxdata": "65536", "delay-write": "7ms", "delay-zero": "5ms"}
    no_ext = build_argv(build_spec({"noextents": False}), Path("s"), Path("l"), Path("t"))
    assert "--filter=noextents" not in no_ext


def test_only_emulate_ignore_is_built_as_a_chain():
    for zm in ("none", "emulate", "notrim", "plugin"):
        for fzm in ("default", "none", "slow", "ignore"):
            want = "chain" if (zm, fzm) == ("emulate", "ignore") else "single"
            assert topology(build_spec({"zeromode": zm, "fastzeromode": fzm})) == want


def test_chain_argv_front_forwards_plain_zeroes_to_an_emulating_back():
    spec = build_spec({"zeromode": "emulate", "fastzeromode": "ignore", "maxdata": "64k", "noextents": True})
    front, back = build_chain_argv(spec, Path("/s/sock"), Path("/s/back"), Path("/s/log"), Path("/s/stats"))
    assert [a for a in front if a.startswith("--filter=")] == ["--filter=log", "--filter=nozero"]
    assert front[front.index("-U") + 1] == "/s/sock" and back[back.index("-U") + 1] == "/s/back"
    assert front[front.index("nbd") + 1:] == ["socket=/s/back", "logfile=/s/log", "zeromode=plugin",
                                              "fastzeromode=ignore"]
    assert [a.split("=", 1)[1] for a in back if a.startswith("--filter=")] == [
        "nozero", "blocksize", "delay", "stats", "noextents"]
    params = dict(a.split("=", 1) for a in back[back.index("memory") + 1:])
    assert params == {"size": str(100 << 20), "statsfile": "/s/stats", "zeromode": "emulate", "maxdata": "65536",
                      "delay-write": "20ms", "delay-zero": "5ms"}
    assert "--exit-with-parent" in front and "--exit-with-parent" in back


@pytest.mark.parametrize("plugin", ["memory", "file"])
def test_chain_counts_live_and_leaves_nothing(plugin, no_leftovers):
    """Both processes up, the same flags as one process would advertise, exact live counts of
    the back's plugin, the front's log; both gone after stop."""
    spec = build_spec({"size": "4M", "zeromode": "emulate", "fastzeromode": "ignore", "maxdata": "64k",
                       "delay_write": 0, "delay_zero": 0, "plugin": plugin})
    with Server(spec) as srv:
        pids = [n.proc.pid for n in srv._nbdkits]
        assert len(pids) == 2 and srv.proc.pid == pids[-1]
        f = srv.flags
        assert (f.can_zero, f.can_fast_zero, f.can_flush, f.can_trim, f.is_read_only) == (True, True, True, True,
                                                                                            False)
        info = srv.info()
        assert info["build"]["topology"] == "chain" and info["build"]["processes"] == 2 and "argv_back" in info
        h = nbd.NBD()
        h.connect_uri(srv.uri)
        h.zero(2 << 20, 0, nbd.CMD_FLAG_FAST_ZERO)  # accepted (ignore), written out: 32 writes of 64k
        h.pwrite(b"\x01" * (1 << 20), 2 << 20)  # 16 writes
        h.flush()
        close_handle(h)
        srv.sync()
        b = srv.backend()
        assert (b.write_ops, b.write_bytes, b.zero_ops, b.flush_ops) == (48, 3 << 20, 0, 1)
        w = srv.wire()
        assert (w.zero, w.fast_zero, w.fast_zero_failed, w.write, w.flush, w.failed) == (1, 1, 0, 1, 1, 0)
        reqs = srv.trace_rows(0)  # the per-request trace (lab.nbd.diskmap): the front's log, marker reads apart
        assert srv.trace_len() == len(reqs) == 3 and [r.op for r in reqs] == ["Zero", "Write", "Flush"]
        z = reqs[0]
        assert (z.offset, z.count, z.result) == (0, 2 << 20, "ok") and "fast" in z.flags and z.end >= z.start > 0
    assert srv.stats["write"] == 48 and srv.stats.get("zero", 0) == 0
    assert not any(alive(p) for p in pids)


def test_chain_back_failure_is_reported(runtime_dir, no_leftovers, monkeypatch):
    import lab.nbd.servers

    real = lab.nbd.servers.build_chain_argv

    def bad_back(*args, **kwargs):
        front, back = real(*args, **kwargs)
        return front, [*back, "no-such-key=1"]

    monkeypatch.setattr(lab.nbd.servers, "build_chain_argv", bad_back)
    spec = build_spec({"size": "4M", "zeromode": "emulate", "fastzeromode": "ignore"})
    with pytest.raises(ServerError) as e:
        Server(spec).start()
    assert "back of the chain" in str(e.value) and "no-such-key" in str(e.value)


@pytest.mark.parametrize(("zeromode", "fastzeromode", "can_zero", "can_fast_zero"), [
    ("none", "default", False, False),
    ("emulate", "default", True, True),
    ("emulate", "none", True, False),
    ("plugin", "default", True, True),
    ("plugin", "none", True, False),
    ("plugin", "slow", True, True),
    ("notrim", "ignore", True, True),
])
def test_probe_reports_what_nozero_advertises(zeromode, fastzeromode, can_zero, can_fast_zero, no_leftovers):
    spec = build_spec({"size": "4M", "zeromode": zeromode, "fastzeromode": fastzeromode})
    with Server(spec) as srv:
        f = srv.flags
        assert (f.can_zero, f.can_fast_zero) == (can_zero, can_fast_zero)
        assert f.size == 4 << 20 and f.can_flush and not f.is_read_only
        info = subprocess.run(["nbdinfo", "--json", srv.uri], capture_output=True, text=True, check=True)
        assert f'"can_zero": {str(can_zero).lower()}' in info.stdout
        sock = srv.socket
        assert sock.exists()
        assert (os.stat(srv.dir).st_mode & 0o777) == 0o700
    assert not sock.exists() and not srv.dir.exists()
    assert srv.exit_code is not None


def test_live_counts_match_the_stats_filter(no_leftovers):
    spec = build_spec({"size": "4M", "zeromode": "plugin", "maxdata": "64k", "delay_write": 0, "delay_zero": 0})
    srv = Server(spec).start()
    try:
        h = nbd.NBD()
        h.connect_uri(srv.uri)
        h.pwrite(b"\x01" * (1 << 20), 0)  # 16 backend writes of 64k
        h.zero(1 << 20, 1 << 20)
        h.trim(4096, 2 << 20)
        h.flush()
        close_handle(h)
        srv.sync()
        b = srv.backend()
        assert (b.write_ops, b.write_bytes) == (16, 1 << 20)
        assert (b.zero_ops, b.zero_bytes) == (1, 1 << 20)
        assert (b.trim_ops, b.trim_bytes, b.flush_ops) == (1, 4096, 1)
        w = srv.wire()
        assert (w.write, w.zero, w.trim, w.flush, w.failed) == (1, 1, 1, 1, 0)
    finally:
        srv.stop()
    assert srv.stats["write"] == 16 and srv.stats["zero"] == 1


def test_fast_zero_refused_by_slow_mode_is_logged_as_failed(no_leftovers):
    with Server(build_spec({"size": "4M", "zeromode": "plugin", "fastzeromode": "slow"})) as srv:
        h = nbd.NBD()
        h.connect_uri(srv.uri)
        with pytest.raises(nbd.Error) as e:
            h.zero(1 << 20, 0, nbd.CMD_FLAG_FAST_ZERO)
        assert e.value.errno == "ENOTSUP"
        close_handle(h)
        srv.sync()
        w = srv.wire()
        assert (w.zero, w.fast_zero, w.fast_zero_failed) == (1, 1, 1)
        assert srv.backend().zero_ops == 0


def test_start_failure_is_reported_and_cleaned_up(runtime_dir, no_leftovers):
    # Bypass validation to make nbdkit itself refuse its command line.
    spec = build_spec({"size": "4M"}).with_(fastzeromode="sometimes")
    with pytest.raises(ServerError) as e:
        Server(spec).start()
    assert "fastzeromode" in str(e.value)


def test_killed_nbdkit_is_noticed_and_cleaned(no_leftovers):
    srv = Server(build_spec({"size": "4M"})).start()
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    assert not srv.running
    srv.stop()
    assert not srv.dir.exists()


def test_nbdkit_dies_with_its_parent(tmp_path):
    """Kill -9 a process that started a server: the kernel takes nbdkit down with it."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys, time\n"
        "from lab.nbd.servers import Server\nfrom lab.domain.spec import build_spec\n"
        "from lab.host import places\nfrom lab.config import Settings\n"
        "places.use(places.Places.from_settings(Settings()))\n"  # a driver: the session's LAB_RUNTIME_DIR
        "s = Server(build_spec({'size': '4M'})).start()\n"
        "print(s.proc.pid, s.dir, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([os.sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    pid_s, sdir = owner.stdout.readline().split()
    owner.kill()
    owner.wait()
    wait_for(lambda: not alive(int(pid_s)), 5, what="nbdkit dies with its owner (PR_SET_PDEATHSIG)")
    # its private dir is swept by the next start
    assert Path(sdir).exists()
    leftovers.sweep()
    assert not Path(sdir).exists()
