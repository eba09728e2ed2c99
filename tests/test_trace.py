"""The trace parsers: first on lines captured once from nbdkit 1.32 (canned text, fast, every
branch), then on what a live nbdkit writes for known requests, which also checks that the
canned lines still have the shape this nbdkit gives them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbd

from lab import procs
from lab.servers import build_argv, close_handle
from lab.spec import build_spec
from lab.testing import wait_for
from lab.trace import LogParser, parse_debug_line, parse_stats

MiB = 1 << 20

LOG = """\
2026-11-25 17:19:02.910000 Ready thread_model=3
2026-11-25 17:19:02.911000 Fork
2026-11-25 17:19:02.916101 connection=1 Write id=1 offset=0x0 count=0x100000 fua=0 ...
2026-11-25 17:19:02.922633 connection=1 ...Write id=1 return=0
2026-11-25 17:19:02.922720 connection=1 Zero id=2 offset=0x100000 count=0x100000 trim=1 fua=0 fast=0 ...
2026-11-25 17:19:02.923847 connection=1 ...Zero id=2 return=0
2026-11-25 17:19:02.923900 connection=1 Zero id=3 offset=0x0 count=0x2000000 trim=1 fua=0 fast=1 ...
2026-11-25 17:19:02.923950 connection=1 ...Zero id=3 return=-1 error=ENOTSUP
2026-11-25 17:19:02.924000 connection=1 Flush id=4 ...
2026-11-25 17:19:02.924010 connection=1 ...Flush id=4 return=0
"""


def test_log_parser_counts_by_type_and_flag():
    p = LogParser()
    for line in LOG.splitlines(keepends=True):
        p.feed(line)
    c = p.counts
    assert (c.write, c.write_bytes) == (1, 1 << 20)
    assert (c.zero, c.zero_bytes) == (2, (1 << 20) + (32 << 20))
    assert (c.fast_zero, c.fast_zero_failed, c.failed, c.flush) == (1, 1, 1, 1)
    assert c.errors == ["Zero id=3 return=-1 error=ENOTSUP"]
    assert p.ready


def test_debug_line_parser():
    ev = parse_debug_line("nbdkit: memory.0: debug: memory: pwrite count=262144 offset=524288 fua=0\n")
    assert (ev.layer, ev.op, ev.count, ev.offset) == ("memory", "pwrite", 262144, 524288)
    ev = parse_debug_line("nbdkit: memory.3: debug: stats: zero count=1048576 offset=0 may_trim=1 fua=0 fast=0")
    assert (ev.layer, ev.op, ev.count) == ("stats", "zero", 1048576)
    assert parse_debug_line("nbdkit: debug: nozero: config key=zeromode, value=plugin") is None
    assert parse_debug_line("nbdkit: memory[1]: debug: newstyle negotiation: flags: global 0x3") is None


def test_stats_parser():
    text = """total: 251 ops, 4.3 s, 100.00 MiB, 23.1 MiB/s
write: 200 ops, 0.1 s, 50.00 MiB, 500 MiB/s op, 11.6 MiB/s total
  Request size and alignment breakdown:
    18 bits: 100.0% (200 reqs, 50.00 MiB total)
zero: 50 ops, 0.0001 s, 50.00 MiB, 46 GiB/s op
flush: 1 ops, 0.000003 s, 0 bytes, 0 bytes/s op, 0 bytes/s total
"""
    assert parse_stats(text) == {"write": 200, "zero": 50, "flush": 1}


def _shape(line: str) -> str:
    """A log line without its timestamp and values: what a format change would alter."""
    line = re.sub(r"^\S+ \S+ ", "", line.strip())
    return re.sub(r"=(0x[0-9a-f]+|-?\d+)", "=N", line)


def _connect(uri: str) -> nbd.NBD | None:
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
    except nbd.Error:  # bound but not listening yet
        return None
    return h


def test_parsers_read_a_live_nbdkit(tmp_path: Path, no_leftovers):
    """nbdkit with the lab's own argv, driven by libnbd with known requests; its log file,
    debug stream and stats file go straight to the parsers (no Server plumbing between)."""
    spec = build_spec({"size": "4M", "zeromode": "plugin", "maxdata": "256k", "delay_write": 0, "delay_zero": 0})
    sock, log, stats, err = (tmp_path / n for n in ("nbd.sock", "wire.log", "stats.txt", "stderr.txt"))
    with open(err, "w") as stderr:
        proc = procs.spawn(build_argv(spec, sock, log, stats), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        h = wait_for(lambda: _connect(f"nbd+unix:///?socket={sock}"), 10, what="nbdkit listening")
        h.pwrite(b"\x01" * MiB, 0)
        h.zero(MiB, MiB)
        h.zero(2 * MiB, 2 * MiB, nbd.CMD_FLAG_FAST_ZERO)
        h.flush()
        close_handle(h)
    finally:
        procs.stop(proc)  # the stats filter writes its summary at exit

    parser = LogParser()
    for line in log.read_text().splitlines(keepends=True):
        parser.feed(line)
    c = parser.counts
    assert parser.ready
    assert (c.write, c.write_bytes, c.zero, c.zero_bytes) == (1, MiB, 2, 3 * MiB)
    assert (c.fast_zero, c.fast_zero_failed, c.flush, c.failed) == (1, 0, 1, 0)

    backend = [ev for ev in map(parse_debug_line, err.read_text().splitlines()) if ev and ev.layer == "memory"]
    writes = [ev.count for ev in backend if ev.op == "pwrite"]
    assert writes == [256 * 1024] * 4, "the blocksize filter split the 1 MiB write at maxdata"
    assert sorted(ev.count for ev in backend if ev.op == "zero") == [MiB, 2 * MiB]

    assert parse_stats(stats.read_text()) == {"write": 4, "zero": 2, "flush": 1}

    live = {_shape(line) for line in log.read_text().splitlines()}
    canned = {_shape(line) for line in LOG.splitlines() if re.search(r" (\.\.\.)?(Write|Flush)|fast=0", line)
              and "error=" not in line}
    assert canned <= live, f"canned lines no longer look like this nbdkit's: {sorted(canned - live)}"
