"""The read side of the facade (lab/service/history.py): its SQL agrees with the domain's rules."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lab.domain.run import Run
from lab.domain.scenarios import SCENARIOS, Row, rows_of
from lab.domain.spec import build_spec
from lab.service.history import History
from lab.service.store import Store


def _rows() -> dict[str, Row]:
    out: dict[str, Row] = {}
    for s in SCENARIOS.values():
        for r in (*s.rows, *(r for a in s.acts for r in a.rows)):
            out.setdefault(r.key, r)
            for alt in r.alternatives:
                out.setdefault(f"{r.key} (stand-in {alt.server.get('storage')})", alt)
    return out


def _runs() -> list[dict]:
    """Runs that measure rows, runs that almost do (one field off, another client, a labelled sweep
    at another geometry), and a run stored before the backend fields existed."""
    runs = []
    seq = itertools.count()
    for key, row in _rows().items():
        base = key.split(" (stand-in")[0]
        variants = [(row.client, row.server, None), (row.client, {**row.server, "size": "16M"}, None),
                    (row.client, {**row.server, "size": "16M"}, base),
                    (row.client, {**row.server, "zeromode": "notrim"}, base),
                    ("nbdcopy" if row.client != "nbdcopy" else "qemu-img", row.server, None)]
        for client, server, label in variants:
            try:
                spec = build_spec(server)
            except ValueError:
                continue
            run = Run(client=client, server=spec, label=label)
            run.created_at = 1000.0 + next(seq)
            runs.append(run.to_dict())
    old = runs[0]
    runs.append({**old, "id": "old-run", "server": {k: v for k, v in old["server"].items()
                                                   if k not in ("storage", "kind", "disk_init")}})
    return runs


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[History, list[dict]]:
    store = Store(Path(tmp_path_factory.mktemp("history")))
    runs = _runs()
    for run in runs:
        store.save_run(run)
    yield History(store), runs
    store.close()


def test_a_rows_runs_in_sql_are_the_ones_the_domain_rule_picks(history) -> None:
    h, runs = history
    for key, row in _rows().items():
        if " (stand-in" in key:
            continue
        picked = [r for r in runs if r["client"] == row.client and key in rows_of(r["client"], r["server"],
                                                                                   r.get("label"))]
        got, total = h.row_runs(row, 1000)
        assert total == len(picked), key
        assert {r["id"] for r in got} == {r["id"] for r in picked}, key
        assert [r["created_at"] for r in got] == sorted((r["created_at"] for r in got), reverse=True)
        assert all(key in r["scenario_rows"] for r in got)
        newest, total_again = h.row_runs(row, 2)
        assert [r["id"] for r in newest] == [r["id"] for r in got[:2]] and total_again == total
    assert any(h.row_runs(row, 1)[1] for row in _rows().values())  # the fixture has members at all


def test_latest_succeeded_is_the_newest_succeeded_run_of_each_label(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        plan = [("act1-A", "succeeded", 10.0), ("act1-A", "succeeded", 30.0), ("act1-A", "failed", 40.0),
                ("act1-B", "cancelled", 50.0), ("act2-A", "succeeded", 20.0), (None, "succeeded", 60.0)]
        ids = {}
        for label, status, at in plan:
            run = Run(client="qemu-img", server=build_spec({"size": "8M"}), label=label)
            run.status, run.created_at = status, at
            store.save_run(run.to_dict())
            ids[(label, status, at)] = run.id
        got = History(store).latest_succeeded(["act1-A", "act1-B", "act2-A", "act9"])
        assert {k: v["id"] for k, v in got.items()} == {"act1-A": ids[("act1-A", "succeeded", 30.0)],
                                                         "act2-A": ids[("act2-A", "succeeded", 20.0)]}
        assert History(store).latest_succeeded([]) == {}
    finally:
        store.close()
