"""The block-status client (qemu-bs): one BLOCK_STATUS per hole, the zero skipped when the
destination already reads as zero there. Counts only: the timings are bench/block_status.py's."""

from __future__ import annotations

import pytest

from lab.domain.run import Run
from lab.domain.scenarios import BLOCK_STATUS_ROWS
from lab.domain.spec import build_spec
from lab.host import storage
from lab.measure.execute import execute

HOLES = 64  # 8 MiB of 64 KiB data / 64 KiB hole
BASE = {"size": "8M", "pattern": "alternate:64k", "plugin": "file", "zeromode": "plugin", "delay_write": 0,
        "delay_zero": 0, "maxdata": "32M"}


def need(name: str) -> None:
    a = storage.availability()[name]
    if not a["available"]:
        pytest.skip(f"storage {name} unavailable here: {a['reason']}")


@pytest.mark.parametrize("where", ["tmpfs", "ext4"])
@pytest.mark.parametrize(("disk_init", "noextents", "skipped"), [
    ("sparse", False, HOLES),  # a fresh destination reads as zero: every hole zero is skipped
    ("data", False, 0),  # a reused one reads as data: every question is overhead
    ("sparse", True, 0),  # block status hidden (noextents): everything looks like data
])
def test_one_block_status_per_hole_and_skips_only_real_holes(where, disk_init, noextents, skipped, no_leftovers):
    need(where)
    spec = build_spec({**BASE, "storage": where, "disk_init": disk_init, "noextents": noextents})
    run = execute(Run(client="qemu-bs", server=spec))
    assert run.status == "succeeded" and run.verified, run.error
    w = run.wire
    assert w.source == "client" and w.block_status == HOLES
    assert w.zero_skipped == skipped
    assert w.zero == HOLES - skipped  # the holes not skipped are zeroed, one request each
    assert run.backend.zero_ops == HOLES - skipped
    assert any("BLOCK_STATUS" in n for n in run.notes)


def test_the_act_rows_run_and_count(no_leftovers):
    row = BLOCK_STATUS_ROWS[0]  # tmpfs, reused disk, 32 MiB
    need(row.server["storage"])
    run = execute(Run(client=row.client, server=build_spec(row.server)))
    assert run.status == "succeeded" and run.verified, run.error
    assert run.wire.block_status == 256 and run.wire.zero_skipped == 0


def test_data_init_needs_a_raw_file_disk():
    from lab.domain.spec import SpecError

    with pytest.raises(SpecError) as e:
        build_spec({"disk_init": "data"})
    assert e.value.field == "disk_init"
