"""Results as JSON and CSV: Run.to_dict() rows, flattened one column per leaf, with filters."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from apiutil import FAST, SLOW, client_for, serve, sse_events, start_run, wait_final, wait_for

from lab.service.export import COLUMNS, cell, flatten

LAB = str(Path(sys.executable).with_name("lab"))
COUNTS = ("backend.write_ops", "backend.write_bytes", "backend.zero_ops", "backend.zero_bytes", "backend.trim_ops",
          "backend.flush_ops", "wire.write", "wire.zero", "wire.fast_zero", "wire.fast_zero_failed", "wire.flush")


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


def _sweep(api, name: str, **body) -> dict:
    r = api.post(f"/api/scenarios/{name}/runs", json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    with api.stream("GET", f"/api/sweeps/{sweep['id']}/events") as resp:
        for _ in sse_events(resp.iter_lines()):
            pass  # the stream ends after sweep_done
    return api.get(f"/api/sweeps/{sweep['id']}").json()


def _csv(api, **params) -> list[dict[str, str]]:
    r = api.get("/api/results.csv", params=params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert tuple(reader.fieldnames) == COLUMNS
    return list(reader)


def test_csv_is_the_json_flattened_with_filters(api):
    sweep = _sweep(api, "reference", only=["ref-none", "ref-plugin-default", "ref-emulate-none"], server=FAST)
    assert sweep["status"] == "succeeded", sweep
    other = wait_final(api, start_run(api, "nbdcopy")["id"])
    body = api.get("/api/results.json", params={"sweep_id": sweep["id"], "sort": "created_at"}).json()
    assert body["count"] == 3 and body["columns"] == list(COLUMNS)
    rows = body["rows"]
    assert [r["label"] for r in rows] == ["ref-none", "ref-emulate-none", "ref-plugin-default"], "scenario order"
    assert rows == sweep["runs"]
    csv_rows = _csv(api, sweep_id=sweep["id"], sort="created_at")
    for row, line in zip(rows, csv_rows, strict=True):
        flat = flatten(row)
        assert line == {c: cell(flat.get(c)) for c in COLUMNS}
    assert csv_rows[0]["backend.write_ops"] == "32" and csv_rows[0]["verified"] == "true"
    # filters
    assert [r["id"] for r in api.get("/api/results.json", params={"client": "nbdcopy"}).json()["rows"]] == [
        other["id"]]
    assert api.get("/api/results.json", params={"status": "failed"}).json()["count"] == 0
    assert len(_csv(api)) == 4
    assert len(_csv(api, label="ref-none")) == 1
    assert api.get("/api/results.json", params={"client": "qemu-99"}).status_code == 422


def test_columns_do_not_depend_on_the_rows():
    """Reference notes nested deeper than the prototype are one JSON cell, for every row alike."""
    from lab.domain.scenarios import SCENARIOS

    rows = [r for s in SCENARIOS.values() for r in s.rows if r.reference]
    for row in rows:
        flat = flatten({"id": "x", "reference": row.reference})
        assert tuple(k for k in flat if k in COLUMNS) == tuple(flat)[:len(COLUMNS)]
        assert set(flat) == set(COLUMNS)


def test_unfinished_run_keeps_every_column(tmp_path):
    """A run cancelled while queued has no counts: its CSV row has the same columns, empty."""
    with client_for(tmp_path / "data", workers=1) as api:
        busy = start_run(api, **SLOW)
        wait_for(lambda: api.get(f"/api/runs/{busy['id']}").json()["status"] == "running")
        queued = start_run(api)
        assert api.post(f"/api/runs/{queued['id']}/cancel").json()["status"] == "cancelled"
        api.post(f"/api/runs/{busy['id']}/cancel")
        lines = _csv(api)
        assert len(lines) == 2 and {len(line) for line in lines} == {len(COLUMNS)}
        mine = next(line for line in lines if line["id"] == queued["id"])
        assert mine["status"] == "cancelled" and mine["backend.write_ops"] == "" and mine["verified"] == ""


@pytest.mark.slow
def test_sweep_rows_match_the_cli_scenario(api):
    """Full size, the talk's delays: the API's rows carry the same fields and counts as `lab scenario --json`."""
    only = "ref-none,ref-plugin-default"
    out = subprocess.run([LAB, "scenario", "reference", "--only", only, "--json"], capture_output=True, text=True,
                         timeout=300)
    cli = {r["label"]: r for r in json.loads(out.stdout)["rows"]}
    sweep = _sweep(api, "reference", only=only.split(","))
    assert sweep["status"] == "succeeded"
    for row in sweep["runs"]:
        ref = cli[row["label"]]
        assert set(row) == set(ref)
        flat, flat_ref = flatten(row), flatten(ref)
        assert {c: flat[c] for c in COUNTS} == {c: flat_ref[c] for c in COUNTS}, row["label"]
        assert row["server"] == ref["server"] and row["reference"] == ref["reference"]


def test_a_talk_run_counts_in_its_rows_of_every_scenario(api):
    """The service answers which run measures which row (one rule, lab.domain.scenarios.rows_of), for the
    rows endpoint and on every run (`scenario_rows`): a talk act's run at the talk's geometry counts in
    the act's row and in the case study's row of the same client and server; a labelled run at another
    geometry counts in its act's row only, marked as not at the row's geometry."""
    talk = api.post("/api/runs", json={"client": "qemu-2.8", "label": "act2-A",
                                       "server": {"zeromode": "plugin", "fastzeromode": "none"}}).json()  # ~5 s
    small = api.post("/api/runs", json={"client": "qemu-2.8", "label": "act2-A",
                                        "server": {"zeromode": "plugin", "fastzeromode": "none", **FAST}}).json()
    other = api.post("/api/runs", json={"client": "qemu-2.8", "server": {"zeromode": "emulate", **FAST}}).json()
    assert talk["scenario_rows"] == {"act2-A": True, "qemu-2.8-A": True}
    assert small["scenario_rows"] == {"act2-A": False}
    assert other["scenario_rows"] == {}
    for run in (talk, small, other):
        assert wait_final(api, run["id"])["status"] == "succeeded"
    acts = {r["key"]: r for r in api.get("/api/scenarios/acts/rows").json()["rows"]}
    case = {r["key"]: r for r in api.get("/api/scenarios/case-study/rows").json()["rows"]}
    assert {r["id"] for r in acts["act2-A"]["runs"]} == {talk["id"], small["id"]}
    assert [r["id"] for r in case["qemu-2.8-A"]["runs"]] == [talk["id"]]
    assert case["qemu-2.8-B"]["total"] == 0 and acts["act2-B"]["total"] == 0
    assert all(r["scenario_rows"]["act2-A"] is (r["id"] == talk["id"]) for r in acts["act2-A"]["runs"])
