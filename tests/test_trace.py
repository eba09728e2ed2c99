"""Parsers against lines captured from nbdkit 1.32, and against a live nbdkit."""

from __future__ import annotations

from lab.trace import LogParser, parse_debug_line, parse_stats

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
