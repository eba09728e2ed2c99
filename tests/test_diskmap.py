"""The disk map: per-request trace from nbdkit's log filter, its kinds, cells, and the API that serves it."""

from __future__ import annotations

import csv
import io
import json

import pytest
from apiutil import FAST, serve, start_run, wait_final

from lab.nbd import diskmap
from lab.nbd.trace import LogParser

MiB = 1 << 20


def test_log_lines_become_rows_with_times_flags_and_results() -> None:
    p = LogParser()
    for line in [
        "2026-11-25 17:19:02.922720 connection=1 Zero id=2 offset=0x100000 count=0x100000 trim=1 fua=0 fast=1 ...",
        "2026-11-25 17:19:02.923847 connection=1 ...Zero id=2 return=-1 (ENOTSUP)",
        "2026-11-25 17:19:03.000001 connection=1 Write id=3 offset=0x0 count=0x40000 fua=0 ...",
        "2026-11-25 17:19:03.020001 connection=1 ...Write id=3 return=0",
        "2026-11-25 17:19:03.030001 connection=1 Read id=4 offset=0x0 count=0x1000 ...",
    ]:
        p.feed(line + "\n")
    zero, write = p.rows  # reads are not part of the trace
    assert (zero.op, zero.offset, zero.count, zero.flags, zero.result) == ("Zero", MiB, MiB, "fast may_trim", "ENOTSUP")
    assert zero.end - zero.start == pytest.approx(0.001127, abs=1e-6)
    assert (write.result, round(write.end - write.start, 6)) == ("ok", 0.02)
    assert p.counts.fast_zero_failed == 1


def test_kinds_follow_the_request_and_the_source_layout() -> None:
    layout = diskmap.Layout.of("alternate:1M", 8 * MiB)  # data at 0-1M, 2-3M, ...
    assert diskmap.classify("Write", 0, MiB, "ok", layout) == "data"
    assert diskmap.classify("Write", MiB, MiB, "ok", layout) == "zero-write"
    assert diskmap.classify("Write", 0, 8 * MiB, "ok", layout) == "prezero-write"
    assert diskmap.classify("Zero", MiB, MiB, "ok", layout) == "zero"
    assert diskmap.classify("Zero", 0, 8 * MiB, "ok", layout) == "prezero"
    assert diskmap.classify("Zero", 0, 8 * MiB, "ENOTSUP", layout) == "refused"
    assert diskmap.classify("Trim", MiB, MiB, "ok", layout) == "trim"
    assert diskmap.classify("Extents", 0, 8 * MiB, "ok", layout) == "status"


def test_cells_paint_in_order_and_round_trip_through_rle() -> None:
    rows = [{"kind": "prezero-write", "offset": 0, "count": 8 * MiB},
            {"kind": "data", "offset": 0, "count": MiB},
            {"kind": "refused", "offset": 0, "count": 8 * MiB}]  # a refusal changes nothing
    cells = diskmap.paint(rows, 8 * MiB, cell=MiB)
    assert cells == "DPPPPPPP"
    assert diskmap.rle(cells) == "D7P"
    assert diskmap.unrle("D7P") == cells
    assert diskmap.cell_size_for(100 * MiB) == 256 * 1024  # 400 cells: 1 MiB extents stay whole
    assert diskmap.cell_size_for(4096) == 4096


def test_a_cell_that_holds_data_and_a_hole_shows_both_at_any_hole_size() -> None:
    """The block-status act at 64 and 128 MiB: 64 KiB extents, cells of 128 and 256 KiB. Every data
    extent written, every hole zeroed after it: each cell shows data and zero, not the last painter."""
    for size in (32 * MiB, 64 * MiB, 128 * MiB):
        ext = 64 * 1024
        rows = [{"kind": "data", "offset": o, "count": ext} for o in range(0, size, 2 * ext)]
        rows += [{"kind": "zero", "offset": o + ext, "count": ext} for o in range(0, size, 2 * ext)]
        cells = diskmap.paint_cells(rows, size)
        main, second, marks = cells.layers()
        if cells.cell == ext:  # 32 MiB: a cell per extent, one kind each
            assert main == "DZ" * (len(main) // 2) and second == main
        else:
            assert set(main) == {"D"} and set(second) == {"Z"}, (size, set(main), set(second))
        assert set(marks) == {"."}
        enc = diskmap.encoded(cells)
        assert ("under" in enc) == (cells.cell > ext) and "marks" not in enc


def test_the_main_kind_is_the_one_covering_most_of_a_cell() -> None:
    rows = [{"kind": "prezero-write", "offset": 0, "count": 4 * MiB},
            {"kind": "data", "offset": 0, "count": 768 * 1024}]  # three quarters of the first 1 MiB cell
    main, second, _ = diskmap.paint_cells(rows, 4 * MiB, cell=MiB).layers()
    assert (main, second) == ("DPPP", "PPPP")


def test_a_refused_fast_zero_leaves_a_mark_and_changes_nothing() -> None:
    rows = [{"kind": "refused", "offset": 0, "count": 2 * MiB}, {"kind": "zero-write", "offset": MiB, "count": MiB}]
    cells = diskmap.paint_cells(rows, 4 * MiB, cell=MiB)
    assert cells.layers() == (".W..", ".W..", "RR..")
    assert diskmap.encoded(cells) == {"cells": ".W2.", "marks": "2R2."}


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


def test_prezero_on_server_b_is_writes_over_the_whole_disk_then_the_data(api) -> None:
    """Act 3 on server B: qemu 3.1's blind pre-zero pass, written out, then the data again."""
    run = wait_final(api, start_run(api, "qemu-3.1", zeromode="emulate", fastzeromode="none")["id"])
    assert run["status"] == "succeeded", run["error"]
    r = api.get(f"/api/runs/{run['id']}/trace")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    prezero = [x for x in rows if x["kind"] == "prezero-write"]
    assert prezero and prezero[0]["seq"] == 0
    covered = sum(x["count"] for x in prezero)
    assert covered == run["server"]["size"], "the pre-zero pass writes the whole disk"
    data = [x for x in rows if x["kind"] == "data"]
    assert all(x["t0"] >= prezero[-1]["t1"] for x in data), "the data comes after the pre-zero pass"
    # The trace is the wire log: its writes are the log filter's writes, byte for byte.
    writes = [x for x in rows if x["op"] == "Write"]
    assert len(writes) == run["server_log"]["write"]
    assert sum(x["count"] for x in writes) == run["server_log"]["write_bytes"]
    assert all(x["t1"] is not None and x["t1"] >= x["t0"] and x["result"] == "ok" for x in writes)
    # The map kept with the run is its trace, painted; data cells over pre-zeroed holes.
    m = run["diskmap"]
    assert diskmap.unrle(m["cells"]) == diskmap.paint(rows, m["size"], m["cell_size"])
    assert set(diskmap.unrle(m["cells"])) == {"D", "P"}
    assert m["requests"] == len(rows)


def test_refused_fast_zero_on_server_b_comes_from_the_client_and_csv(api) -> None:
    run = wait_final(api, start_run(api, "qemu-4.2", zeromode="emulate")["id"])
    assert run["status"] == "succeeded", run["error"]
    text = api.get(f"/api/runs/{run['id']}/trace", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    refused = [x for x in rows if x["kind"] == "refused"]
    assert len(refused) == 1 and refused[0]["flags"] == "fast" and refused[0]["result"] == "ENOTSUP"
    assert refused[0]["source"] == "client", "nbdkit's core refuses it above the log filter on server B"
    assert {x["kind"] for x in rows} >= {"data", "zero-write"}


def test_progress_events_carry_cells_and_a_cancelled_run_keeps_how_far_it_got(api) -> None:
    slow = {**FAST, "delay_write": "40ms"}
    run = start_run(api, "qemu-2.7", **slow)
    from apiutil import wait_for

    wait_for(lambda: (api.get(f"/api/runs/{run['id']}").json()["status"] == "running"
                      and api.get(f"/api/runs/{run['id']}/trace").status_code == 404), timeout=30)
    import time

    time.sleep(0.8)
    api.post(f"/api/runs/{run['id']}/cancel")
    row = wait_final(api, run["id"])
    assert row["status"] == "cancelled"
    assert 0 < row["reached"]["fraction"] < 1
    assert row["backend"]["write_ops"] > 0, "the counts it reached are kept"
    assert "." in diskmap.unrle(row["diskmap"]["cells"]), "part of the disk was never written"
    events = api.get(f"/api/runs/{run['id']}/events").text
    assert '"cells":' in events and '"cell_size":' in events


def test_trace_of_an_unknown_run_is_404(api) -> None:
    assert api.get("/api/runs/nope/trace").status_code == 404
    assert api.get("/api/runs/nope/trace", params={"format": "xml"}).status_code in (404, 422)


def test_live_cells_show_block_status_questions_but_the_kept_map_does_not(api) -> None:
    # the block-status act's setup, small: a reused disk (data everywhere), extents visible,
    # one BLOCK_STATUS before each of 64 holes; zeroes slowed so questions land between events
    server = {"plugin": "file", "disk_init": "data", "noextents": False, "pattern": "alternate:64k",
              "zeromode": "plugin", "size": "8M", "delay_write": 0, "delay_zero": "10ms"}
    run = start_run(api, "qemu-bs", **server)
    done = wait_final(api, run["id"])
    assert done["status"] == "succeeded", done.get("error")
    assert done["wire"]["block_status"] == 64
    events = [json.loads(line[5:]) for line in api.get(f"/api/runs/{run['id']}/events").text.splitlines()
              if line.startswith("data:")]
    live = [e["cells"] for e in events if e.get("type") == "progress" and "cells" in e]
    asked = [diskmap.unrle(c) for c in live if "S" in c]
    assert asked, "no progress event showed a BLOCK_STATUS question"
    # a question shows on the cells it asked about, holes only (this layout asks before each hole)
    layout = diskmap.Layout.of("alternate:64k", 8 * MiB)
    cell = done["diskmap"]["cell_size"]
    for cells in asked:
        for i, ch in enumerate(cells):
            if ch == "S":
                assert layout.data_in(i * cell, cell) < cell, f"cell {i} holds only data, yet was asked about"
    # shown once: the map kept with the run is what the disk holds
    assert "S" not in diskmap.unrle(done["diskmap"]["cells"])


def test_block_status_rows_tell_their_runs_apart_by_storage(api) -> None:
    """The six block-status rows differ by storage and size only: a run on tmpfs measures the
    tmpfs row, never its ext4 twin (the talk showed the same run in both lanes)."""
    from lab.domain.scenarios import BLOCK_STATUS_ROWS

    a = next(r for r in BLOCK_STATUS_ROWS if r.key == "act-bs-A-32M")
    run = api.post("/api/runs", json={"client": a.client, "server": a.server}).json()
    assert wait_final(api, run["id"])["status"] == "succeeded"
    rows = {r["key"]: r for r in api.get("/api/scenarios/acts/rows").json()["rows"]}
    assert rows["act-bs-A-32M"]["match"]["server"]["storage"] == "tmpfs"
    assert rows["act-bs-B-32M"]["match"]["server"]["storage"] == "ext4"
    assert [r["id"] for r in rows["act-bs-A-32M"]["runs"]] == [run["id"]]
    assert rows["act-bs-B-32M"]["total"] == 0
    assert "storage" not in rows["act1-baseline"]["match"]["server"], "rows that leave storage out match any"
