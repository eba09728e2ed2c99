"""A sweep's rows: one key per row whatever the spelling or the axis order (API, CLI, a definition
posted back), statistics per row with contended runs counted apart, and CSV cells without JSON."""

from __future__ import annotations

import csv
import io

import pytest

from lab.domain import sweepspec
from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service.export import to_csv

GRID = {"client": ["qemu-2.8", "qemu-4.2"], "size": ["8M", "16M"], "delay_write": ["5ms", 20]}


def _keys(definition: dict) -> list[str]:
    return [key for key, _, _, _ in sweepspec.plan(definition).rows]


def test_a_grid_row_key_has_one_spelling():
    cli = _keys({"grid": GRID})
    api = _keys({"grid": {"client": ["qemu-2.8", "qemu-4.2"], "size": [8388608, 16777216],
                          "delay_write": [5.0, 20.0]}})
    assert cli == api
    assert cli[0] == "qemu-2.8/8M/5ms" and cli[-1] == "qemu-4.2/16M/20ms", cli


def test_the_axis_order_does_not_change_keys_or_rows():
    reordered = {"delay_write": GRID["delay_write"], "size": GRID["size"], "client": GRID["client"]}
    assert _keys({"grid": reordered}) == _keys({"grid": GRID})


def test_a_definition_posted_back_makes_the_same_rows():
    first = sweepspec.plan({"grid": {"size": ["8M", "16M"], "client": ["qemu-4.2"]}, "server": {"delay_zero": "1ms"}})
    again = sweepspec.plan(first.definition)
    assert [r[0] for r in again.rows] == [r[0] for r in first.rows]
    assert list(first.definition["grid"]) == ["client", "size"]  # canonical order, normalised values
    assert first.definition["grid"]["size"] == [8 << 20, 16 << 20]
    assert first.definition["server"] == {"delay_zero": 1.0}
    assert again.definition == first.definition


def _run(label: str, duration: float, contended: bool | None = False, status: str = "succeeded") -> dict:
    run = Run(client="qemu-img", server=build_spec({"size": "8M"}), label=label, status=status,
              duration_s=duration if status == "succeeded" else None, contended=contended)
    return run.to_dict()


def test_row_statistics_p50_p95_and_contended_apart():
    runs = [_run("a", t) for t in (1.0, 2.0, 3.0, 4.0)] + [_run("a", 9.0, contended=True),
                                                          _run("a", 0, status="failed")]
    row = sweepspec.group_rows(runs)[0]
    assert row["runs"] == 6 and row["succeeded"] == 5 and row["contended"] == 1
    d = row["stats"]["duration_s"]
    assert (d["n"], d["min"], d["max"], d["p50"]) == (5, 1.0, 9.0, 3.0)
    assert d["p95"] == pytest.approx(8.0)  # linear between the two slowest: 4 + 0.8 x (9 - 4)
    assert [w["type"] for w in row["warnings"]] == ["contended"]
    clean = sweepspec.group_rows(runs, contended=False)[0]
    assert clean["stats"]["duration_s"]["n"] == 4 and clean["stats"]["duration_s"]["max"] == 4.0
    assert clean["contended"] == 1 and clean["warnings"] == []  # left out, still counted
    only = sweepspec.group_rows(runs, contended=True)[0]
    assert only["stats"]["duration_s"]["n"] == 1


def test_one_run_has_every_statistic():
    d = sweepspec.stats([2.5])
    assert d == {"p50": 2.5, "p95": 2.5, "min": 2.5, "max": 2.5, "spread": 0.0, "rel_spread": 0.0, "n": 1}


def test_no_cell_of_the_results_csv_holds_json():
    run = Run(client="qemu-4.2", server=build_spec({"size": "8M"}), label="act1-A", status="succeeded",
              duration_s=1.0, notes=["first note", "second; note"],
              contention={"machine_cores": 1.2, "own_cores": 1.0, "others_cores": 0.2, "limit_cores": 0.35,
                          "client_cpu_known": True, "contended": False, "own_cpu_s": 0.5,
                          "expected_own_cpu_s": 0.4, "slow_copy_path": False},
              reached={"fraction": 1.0, "bytes_done": 8 << 20, "elapsed_s": 1.0, "backend": {"write_ops": 3},
                       "phase": "copy"},
              diskmap={"cell_size": 65536, "size": 8 << 20, "cells": "d4z4", "requests": 8, "truncated": False},
              scenario_rows={"act1-A": True, "ref-none": False},
              request_stats={"latency": {"Write": {"n": 3, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 2.0, "max_ms": 2.0}},
                             "zero_sizes": [{"le": 4096, "count": 10}, {"le": 65536, "count": 2}]})
    table = list(csv.reader(io.StringIO(to_csv([run.to_dict()]))))
    header, row = table[0], table[1]
    jsonish = {h: v for h, v in zip(header, row, strict=True) if v[:1] in ("{", "[")}
    assert not jsonish, jsonish
    cells = dict(zip(header, row, strict=True))
    assert cells["contention.others_cores"] == "0.2" and cells["reached.backend.write_ops"] == "3"
    assert cells["diskmap.cells"] == "d4z4" and cells["notes"] == "first note | second; note"
    assert cells["scenario_rows"] == "act1-A ref-none~"
    assert cells["request_stats.latency.Write.p90_ms"] == "2.0" and cells["request_stats.latency.Zero.n"] == ""
    assert cells["request_stats.zero_sizes"] == "le=4096 count=10 | le=65536 count=2"


def test_the_api_names_rows_as_the_cli_does_and_keeps_them_when_posted_back(tmp_path):
    from apiutil import serve

    for api in serve(tmp_path, queue_size=64, workers=1):
        fast = {"delay_write": "1ms", "delay_zero": "1ms"}
        a = api.post("/api/v1/sweeps", json={"grid": {"size": ["8M", 16777216.0], "client": ["qemu-2.8"]},
                                             "server": fast})
        assert a.status_code == 202, a.text
        api.post(f"/api/v1/sweeps/{a.json()['id']}/cancel")
        labels = [r["label"] for r in a.json()["runs"]]
        assert labels == [k for k, _, _, _ in sweepspec.plan({"grid": {"client": ["qemu-2.8"], "size": ["8M", "16M"]},
                                                               "server": fast}).rows]
        assert labels == ["qemu-2.8/8M", "qemu-2.8/16M"]
        b = api.post("/api/v1/sweeps", json=a.json()["definition"])
        assert b.status_code == 202, b.text
        api.post(f"/api/v1/sweeps/{b.json()['id']}/cancel")
        assert [r["label"] for r in b.json()["runs"]] == labels and b.json()["definition"] == a.json()["definition"]
        rows = api.get(f"/api/v1/sweeps/{a.json()['id']}/results.csv")
        assert rows.status_code == 200
        table = list(csv.reader(io.StringIO(rows.text)))
        assert table[0][:6] == ["key", "client", "runs", "succeeded", "contended", "warnings"]
        assert "duration_s.p95" in table[0] and [line[0] for line in table[1:]] == labels
        assert not [c for line in table for c in line if c[:1] in ("{", "[")]
