"""`today-dirty`: both upstream bugs show as failed verifications with their stale ranges; qemu-img passes.

And the client options that change the zero traffic (nbdcopy --allocated, qemu-img -S 0), and the
per-operation latency percentiles and zero-size histogram every run carries (from the log's trace).
"""

from __future__ import annotations

import pytest

from lab.cli.report import stale_text, today_table
from lab.domain.run import Run
from lab.domain.scenarios import get_scenario
from lab.domain.spec import build_spec
from lab.host import storage
from lab.measure.execute import execute

AVAIL = storage.availability()
MiB = 1 << 20
pytestmark = pytest.mark.slow  # real servers writing hundreds of MiB: minutes in all


def row_server(key: str, size: str) -> tuple[str, dict]:
    row = next(r for r in get_scenario("today-dirty").rows if r.key == key)
    return row.client, {**row.server, "size": size}


def need(name: str) -> None:
    if not AVAIL[name]["available"]:
        pytest.skip(f"storage {name} unavailable here: {AVAIL[name]['reason']}")


def test_nbdcopy_into_nbd_server_fails_with_its_stale_ranges_and_qemu_img_passes(no_leftovers):
    need("tmpfs")
    runs = []
    for key in ("qemu-img@nbd-server-tmpfs-dirty", "nbdcopy@nbd-server-tmpfs-dirty"):
        client, server = row_server(key, "512M")
        run = Run(client=client, server=build_spec(server), label=key)
        runs.append(execute(run))
    ok, bad = runs
    assert ok.status == "succeeded" and ok.verified, ok.error
    assert max(b["le"] for b in ok.request_stats["zero_sizes"]) <= 32 * MiB  # qemu-img's zeroes: <= 32 MiB
    assert bad.status == "failed" and bad.verified is False
    # 512 MiB of 16 MiB data / 240 MiB holes: nbdcopy zeroes each hole in 128 + 112 MiB; nbd-server zeroes
    # the first 64 MiB of each, 16+64 = 80 MiB into the image the first stale byte.
    assert "stale ranges 80M-128M" in bad.verify_detail, bad.verify_detail
    assert max(b["le"] for b in bad.request_stats["zero_sizes"]) == 128 * MiB
    assert bad.request_stats["latency"]["Zero"]["n"] >= 4
    table = today_table(runs)
    assert "failed (stale 80M-128M" in table and "qemu-img" in table


def test_nbdcopy_allocated_fails_on_ext2_where_plain_nbdcopy_passes(no_leftovers):
    need("ext2")
    plain, allocated = (execute(Run(client=c, server=build_spec(s), label=k)) for k, (c, s) in
                        ((k, row_server(k, "512M")) for k in ("nbdcopy@file-ext2-dirty",
                                                               "nbdcopy-allocated@file-ext2-dirty")))
    assert plain.status == "succeeded", plain.error  # may trim: a hole is punched on ext2
    assert allocated.status == "failed" and "stale ranges" in allocated.verify_detail  # NO_HOLE: the fallback
    assert stale_text(allocated.verify_detail).startswith("stale ")


def test_client_options_change_the_zero_traffic(no_leftovers):
    base = {"size": "32M", "pattern": "alternate:1M:7M", "delay_write": 0, "delay_zero": 0, "zeromode": "plugin"}
    s0 = execute(Run(client="qemu-img-S0", server=build_spec(base)))
    alloc = execute(Run(client="nbdcopy-allocated", server=build_spec(base)))
    plain = execute(Run(client="nbdcopy", server=build_spec(base)))
    assert s0.status == alloc.status == plain.status == "succeeded"
    assert s0.server_log.zero == 0 and s0.server_log.write_bytes == 32 * MiB  # every hole written as data
    zeroes = [r for r in alloc.trace if r.op == "Zero"]
    assert zeroes and all("may_trim" not in r.flags for r in zeroes)  # --allocated: NO_HOLE
    assert all("may_trim" in r.flags for r in plain.trace if r.op == "Zero")
