"""Runs as flat rows: one column per leaf of Run.to_dict(), for CSV and spreadsheets.

Nested objects become dotted columns (`backend.write_ops`, `contention.others_cores`,
`reached.backend.write_ops`). The column set is fixed by a prototype run with every nested
object present, so a failed run (no `backend` yet) still has the same columns, empty, and the
columns do not depend on which rows a filter picked; an object the prototype does not know
still becomes columns (appended). No cell holds JSON: a list is its items joined with " | " (an
object in it as key=value pairs: `request_stats.zero_sizes` "le=4096 count=10 | le=65536 count=2"),
`scenario_rows` the keys of the rows a run measures ("act1-A ref-none~": `~` when at another
geometry than the row's own).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.flags import ServerFlags
from lab.domain.latency import FIGURES, OPERATIONS
from lab.domain.run import DiskMap, Reached, Run, StatsCheck
from lab.domain.spec import ServerSpec
from lab.domain.students import PREDICTION_FIELDS
from lab.domain.sweepspec import STAT_FIELDS
from lab.measure.contention import FIELDS as CONTENTION_FIELDS


def _reference_keys() -> dict[str, Any]:
    """Every key a scenario row's reference figures use, nested notes with theirs."""
    from lab.domain.scenarios import SCENARIOS

    keys: dict[str, Any] = {}
    for scenario in SCENARIOS.values():
        for row in scenario.rows:
            for k, v in (row.reference or {}).items():
                if isinstance(v, dict):
                    keys[k] = {**(keys.get(k) or {}), **dict.fromkeys(v)}
                else:
                    keys.setdefault(k, None)
    return keys


def _prototype() -> dict[str, Any]:
    """Run.to_dict() with every nested object present: the model fixes the columns, not the data."""
    flags = {f.name: None for f in fields(ServerFlags)}
    stats = dict.fromkeys(StatsCheck.__annotations__)
    reached = {**dict.fromkeys(Reached.__annotations__), "backend": BackendCounts().to_dict()}
    run = Run.model_construct(client="", server=ServerSpec(), backend=BackendCounts(), wire=WireCounts(),
                              server_log=WireCounts(), flags=flags, stats_check=stats, reference=_reference_keys(),
                              student="", prediction=dict.fromkeys(PREDICTION_FIELDS),
                              breakdown={"delays_s": 0.0, "per_request_s": 0.0, "per_byte_s": 0.0, "fixed_s": 0.0},
                              contention=dict.fromkeys(CONTENTION_FIELDS), reached=reached,
                              diskmap=dict.fromkeys(DiskMap.__annotations__),
                              request_stats={"latency": {op: dict.fromkeys(FIGURES) for op in OPERATIONS},
                                             "zero_sizes": None})
    return run.to_dict()


PROTOTYPE = _prototype()


def _walk(value: Any, proto: Any, prefix: str, out: dict[str, Any]) -> None:
    if prefix == "scenario_rows":
        out[prefix] = None if value is None else " ".join(k if at_own else f"{k}~" for k, at_own in value.items())
        return
    if isinstance(proto, dict) or isinstance(value, dict):  # an object the prototype lacks: columns too
        proto = proto if isinstance(proto, dict) else {}
        keys = list(proto)
        if isinstance(value, dict):
            keys += [k for k in value if k not in proto]
        for k in keys:
            _walk(value.get(k) if isinstance(value, dict) else None, proto.get(k), f"{prefix}.{k}" if prefix else k,
                  out)
        return
    out[prefix] = value


def flatten(run: dict[str, Any]) -> dict[str, Any]:
    """{'backend': {'write_ops': 3}} -> {'backend.write_ops': 3}, with the prototype's columns."""
    out: dict[str, Any] = {}
    _walk(run, PROTOTYPE, "", out)
    return out


COLUMNS = tuple(flatten(PROTOTYPE))


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"):
# `=HYPERLINK(...)` typed as a student's name must reach the teacher's spreadsheet as text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutral(text: str) -> str:
    """`text` as a CSV cell no spreadsheet evaluates: a leading apostrophe when it (or its first
    non-blank character) starts a formula. Numbers are not text and never pass here."""
    return "'" + text if text.lstrip(" ").startswith(FORMULA_START) or text.startswith(FORMULA_START) else text


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):  # a run's notes: one cell, items apart
        return " | ".join(cell(v) for v in value)
    if isinstance(value, dict):  # flatten() leaves none; another CSV's cell: key=value pairs
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return neutral(str(value))


def csv_lines(rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """THE writer of every CSV the lab serves (results, guesses, the class, traces): each row (the
    header first) as one line, every cell through cell(): text neutralised, None empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in rows:
        w.writerow([cell(v) for v in row])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    return "".join(csv_lines(rows))


def to_csv(runs: Iterable[dict[str, Any]]) -> str:
    rows = [flatten(r) for r in runs]
    columns = list(COLUMNS)
    for row in rows:  # fields a newer core added: appended, never dropped
        columns += [k for k in row if k not in columns]
    return csv_text([columns, *([row.get(c) for c in columns] for row in rows)])


def guess_rows(guesses: list[dict[str, Any]]) -> Iterator[list[Any]]:
    """CSV rows (header first) of guesses: one column per prediction field."""
    yield ["id", "student", "target", "created_at", *PREDICTION_FIELDS]
    for g in guesses:
        yield [g["id"], g["student"], g["target"], g["created_at"],
               *(g["prediction"].get(k) for k in PREDICTION_FIELDS)]


def row_csv(rows: Iterable[dict[str, Any]]) -> str:
    """A sweep's rows (lab.domain.sweepspec.group_rows) as CSV: one line per row; statistics as
    `duration_s.p50`, `backend.write_ops.p95`, ...; the row's server fields as `server.size`; its
    warnings' types joined (`contended | slow-copy-path`)."""
    stat_keys = ("p50", "p95", "min", "max", "spread", "rel_spread", "n")
    head = ["key", "client", "runs", "succeeded", "contended", "warnings",
            *(f"server.{f}" for f in PROTOTYPE["server"]), *(f"{f}.{k}" for f in STAT_FIELDS for k in stat_keys)]
    lines = [head]
    for r in rows:
        server = r.get("server") or {}
        line = [r["key"], r.get("client"), r["runs"], r["succeeded"], r.get("contended"),
                [w["type"] for w in r.get("warnings", [])], *(server.get(f) for f in PROTOTYPE["server"])]
        for f in STAT_FIELDS:
            st = r["stats"].get(f) or {}
            line += [st.get(k) for k in stat_keys]
        lines.append(line)
    return csv_text(lines)
