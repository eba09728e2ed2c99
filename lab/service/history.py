"""What has been run, as pages and scripts ask for it: pages of runs and sweeps, a sweep's runs, a
run's trace, where a stream ends. The read side of the service facade (`Manager.history`), so the
web layer never holds the store itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.domain.scenarios import Row, row_matches, rows_of
from lab.nbd import diskmap
from lab.service.export import csv_lines
from lab.service.store import Store

PageKey = tuple[Any, int]  # a keyset page's position: the sort value and seq of the last row shown


class History:
    def __init__(self, store: Store) -> None:
        self._store = store

    def page(self, table: str, filters: dict[str, Any], sort: str = "-created_at", after: PageKey | None = None,
             limit: int = 100, since: float | None = None,
             until: float | None = None) -> tuple[list[dict[str, Any]], int, PageKey | None]:
        """One page of runs or sweeps (lab.service.store.Store.page: filters in SQL, keyset order)."""
        return self._store.page(table, filters, sort, after, limit, since, until)

    def run_counts(self) -> dict[str, int]:
        """{status: runs in it}, over the whole history."""
        return self._store.run_counts()

    def row_runs(self, row: Row, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The runs that measure a scenario row (lab.domain.scenarios.rows_of, as of now), newest first:
        the newest `limit` of them, each with its `scenario_rows`, and how many in all."""
        runs, total = self._store.runs_measuring(row.client, row_matches(row.client, row.key), row.key, limit)
        return [{**run, "scenario_rows": rows_of(run["client"], run.get("server") or {}, run.get("label"))}
                for run in runs], total

    def latest_succeeded(self, labels: list[str]) -> dict[str, dict[str, Any]]:
        """{label (a scenario row's key): its newest succeeded run} for the labels that have one."""
        return self._store.latest_by_label(labels, "succeeded")

    def students(self) -> list[dict[str, Any]]:
        """Each student who started a run: runs by status, total, first and last run time; by name."""
        return self._store.students()

    def guesses(self, target: str | None = None, student: str | None = None) -> list[dict[str, Any]]:
        """The class's guesses oldest first, optionally of one act row and/or one student."""
        return self._store.guesses(target, student)

    def sweep_runs(self, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's runs in the sweep's order."""
        runs, _ = self._store.list_runs(sweep_id=sweep_id, limit=None, newest_first=False)
        return runs

    def trace_path(self, run_id: str) -> Path:
        """Where a finished run's per-request trace is kept (it may not exist: not finished, or no copy)."""
        return diskmap.trace_path(self._store.dir, run_id)

    def trace_csv(self, run_id: str) -> Iterator[str]:
        """The trace as CSV text, in chunks (the run must have one: see trace_path)."""
        return csv_lines(diskmap.csv_rows(diskmap.load(self._store.dir, run_id)))

    def closing_event_id(self, kind: str, key: str) -> int | None:
        """The id of the event that ends a run's stream (`done`) or a sweep's (`sweep_done`), if it happened."""
        return self._store.closing_event_id(kind, key)
