"""The trace parsers: first on lines captured once from nbdkit 1.32 (canned text, fast, every
branch), then on what a live nbdkit writes for known requests, which also checks that the
canned lines still have the shape this nbdkit gives them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbd

from lab.domain.counts import BackendCounts
from lab.domain.spec import build_spec
from lab.host import procs
from lab.nbd.handle import close_handle
from lab.nbd.servers import build_argv
from lab.nbd.trace import DatapathScanner, LogParser, parse_stats
from testkit import wait_for

MiB = 1 << 20

LOG = """\
2026-11-25 17:19:02.910000 Ready thread_model=3
2026-11-25 17:19:02.911000 Fork
2026-11-25 17:19:02.916101 connection=1 Write id=1 offset=0x0 count=0x100000 fua=0 ...
2026-11-25 17:19:02.922633 connection=1 ...Write id=1 return=0
2026-11-25 17:19:02.922720 connection=1 Zero id=2 offset=0x100000 count=0x100000 trim=1 fua=0 fast=0 ...
2026-11-25 17:19:02.923847 connection=1 ...Zero id=2 return=0
2026-11-25 17:19:02.923900 connection=1 Zero id=3 offset=0x0 count=0x2000000 trim=1 fua=0 fast=1 ...
2026-11-25 17:19:02.923950 connection=1 ...Zero id=3 return=-1 (ENOTSUP)
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
    assert c.errors == ["Zero id=3 return=-1 (ENOTSUP)"]
    assert p.ready


def test_log_read_in_pieces_cut_mid_line_gives_the_same_requests(tmp_path: Path):
    """The server reads the log file in batches while nbdkit writes it: a batch may end in the
    middle of a line. Whatever the cuts, the counts and the trace equal one read of the whole."""
    import threading

    from lab.nbd.servers import _WireLog

    whole = LogParser()
    whole.feed(LOG)
    path = tmp_path / "wire.log"
    log = _WireLog(threading.Lock())
    log.open(path)
    with open(path, "a") as f:
        for cut in (0, 37, 150, 151, 152, 400, 401, len(LOG) - 3, len(LOG)):
            f.write(LOG[f.tell():cut])
            f.flush()
            log.drain()
    log.close()
    assert log.parser.counts == whole.counts and log.parser.ready
    assert [(r.op, r.offset, r.count, r.flags, r.result, r.start, r.end) for r in log.parser.rows] == \
        [(r.op, r.offset, r.count, r.flags, r.result, r.start, r.end) for r in whole.rows]
    assert [r.result for r in whole.rows] == ["ok", "ok", "ENOTSUP", "ok"]
    assert whole.rows[2].flags == "fast may_trim" and whole.rows[0].end - whole.rows[0].start > 0


def test_datapath_scanner_counts_only_its_layers_and_finds_markers():
    backend, top = BackendCounts(), BackendCounts()
    sc = DatapathScanner({"memory": backend, "log": top}, sync_layer="memory")
    chunk = (b"nbdkit: memory.0: debug: log: pwrite count=1048576 offset=0 fua=0\n"
             b"nbdkit: memory.0: debug: blocksize: pwrite count=1048576 offset=0 fua=0\n"
             b"nbdkit: memory.0: debug: memory: pwrite count=262144 offset=524288 fua=0\n"
             b"nbdkit: memory.3: debug: stats: zero count=1048576 offset=0 may_trim=1 fua=0 fast=0\n"
             b"nbdkit: memory.3: debug: memory: zero count=1048576 offset=0 may_trim=1 fua=0 fast=0\n"
             b"nbdkit: memory.3: debug: memory: trim count=4096 offset=0 fua=0\n"
             b"nbdkit: memory.3: debug: memory: flush\n"
             b"nbdkit: debug: nozero: config key=zeromode, value=plugin\n"
             b"nbdkit: memory[1]: debug: newstyle negotiation: flags: global 0x3\n"
             b"nbdkit: memory.1: debug: memory: pread count=65536 offset=0\n"
             b"nbdkit: memory.1: debug: log: pread count=4093 offset=8192\n"
             b"nbdkit: memory.1: debug: memory: pread count=4093 offset=8192\n")
    moved, marks = sc.scan(chunk)
    assert moved == {"memory", "log"} and marks == [8192]
    assert (backend.write_ops, backend.write_bytes, backend.zero_ops, backend.zero_bytes) == (1, 262144, 1, 1 << 20)
    assert (backend.trim_ops, backend.trim_bytes, backend.flush_ops) == (1, 4096, 1)
    assert (backend.read_ops, backend.read_bytes) == (1, 65536)  # the marker is not a read
    assert (top.write_ops, top.write_bytes, top.read_ops) == (1, 1 << 20, 1)  # only the sync layer's is a marker


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

    backend, top = BackendCounts(), BackendCounts()
    DatapathScanner({"memory": backend, "log": top}, sync_layer="memory").scan(err.read_bytes())
    assert (backend.write_ops, backend.write_bytes) == (4, MiB), "the blocksize filter split the 1 MiB write at maxdata"
    assert (backend.zero_ops, backend.zero_bytes, backend.flush_ops) == (2, 3 * MiB, 1)
    assert (top.write_ops, top.zero_ops, top.flush_ops) == (1, 2, 1)

    assert parse_stats(stats.read_text()) == {"write": 4, "zero": 2, "flush": 1}

    live = {_shape(line) for line in log.read_text().splitlines()}
    canned = {_shape(line) for line in LOG.splitlines() if re.search(r" (\.\.\.)?(Write|Flush)|fast=0", line)
              and "error=" not in line}
    assert canned <= live, f"canned lines no longer look like this nbdkit's: {sorted(canned - live)}"
