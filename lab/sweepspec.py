"""Custom sweeps: a definition (rows, or a grid of client x server fields) made into runs.

A definition is plain data (from JSON, TOML or the API's body):

    {"name": "fast zero on A and B",
     "grid": {"client": ["qemu-3.1", "qemu-4.2"], "zeromode": ["plugin", "emulate"]},
     "server": {"size": "16M", "delay_write": "5ms"},        # the base of every row
     "repeats": 3, "parallelism": 1, "priority": 0}

or `"rows": [{"key": "a", "client": "qemu-4.2", "server": {...}, "queue_depth": 1}, ...]` instead
of `grid`. A grid's axes are `client`, `queue_depth` and any server field; its rows are their
product, in the order the axes are given, keyed by their values joined with `/`
("qemu-3.1/plugin"). `repeats` runs every row that many times, in rounds (all rows, then all
rows again), so slow drift of the machine spreads over every row alike; results then give
each row's median and spread.

Errors name the place in the definition (`DefinitionError.loc`, such as
["grid", "size", 1] or ["rows", 2, "server", "delay_write"]), as the API's 422s do.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.clients import client_ids
from lab.runs import Run
from lab.spec import DEFAULT_LIMITS, Limits, ServerSpec, SpecError, build_spec

MAX_RUNS = 1000
MAX_REPEATS = 20
MAX_PARALLELISM = 64
PRIORITIES = range(-10, 11)
KEY_MAX = 80
FIELDS = tuple(ServerSpec.__dataclass_fields__)


class DefinitionError(ValueError):
    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc, self.message = list(loc), message


@dataclass(frozen=True)
class Planned:
    """A definition made concrete: rows (key, client, spec, queue_depth) and how to run them."""

    name: str
    rows: list[tuple[str, str, Any, int]]
    repeats: int
    parallelism: int | None
    priority: int
    definition: dict[str, Any]

    def runs(self) -> list[Run]:
        """repeats rounds of every row (each run a fresh Run)."""
        return [Run(client=client, server=spec, label=key, queue_depth=depth)
                for _ in range(self.repeats) for key, client, spec, depth in self.rows]


def _int(d: dict[str, Any], name: str, default: int | None, allowed: range) -> int | None:
    v = d.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
        raise DefinitionError([name], f"must be an integer from {allowed.start} to {allowed.stop - 1}")
    return v


def _client(v: Any, loc: list[str | int]) -> str:
    if v not in client_ids():
        raise DefinitionError(loc, f"unknown client {v!r}; choose one of {', '.join(client_ids())}")
    return str(v)


def _spec(fields: dict[str, Any], limits: Limits, loc_of: dict[str, list[str | int]]) -> Any:
    try:
        return build_spec(fields, limits)
    except SpecError as e:
        raise DefinitionError(loc_of.get(e.field, [e.field]), e.message) from None


def _show(v: Any) -> str:
    return str(v).strip()


def plan(definition: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> Planned:
    """Check a definition and make its rows; DefinitionError names the place at fault."""
    if not isinstance(definition, dict):
        raise DefinitionError([], "a sweep definition is an object")
    allowed = {"name", "rows", "grid", "server", "repeats", "parallelism", "priority"}
    for k in definition:
        if k not in allowed:
            raise DefinitionError([k], f"unknown key; a definition has {', '.join(sorted(allowed))}")
    name = definition.get("name", "custom")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise DefinitionError(["name"], "a name is 1 to 64 characters")
    repeats = _int(definition, "repeats", 1, range(1, MAX_REPEATS + 1)) or 1
    parallelism = _int(definition, "parallelism", None, range(1, MAX_PARALLELISM + 1))
    priority = _int(definition, "priority", 0, PRIORITIES) or 0
    base = definition.get("server") or {}
    if not isinstance(base, dict):
        raise DefinitionError(["server"], "server is an object of server fields")
    for k in base:
        if k not in FIELDS:
            raise DefinitionError(["server", k], f"unknown server field; use {', '.join(FIELDS)}")
    has_rows, has_grid = "rows" in definition, "grid" in definition
    if has_rows == has_grid:
        raise DefinitionError(["rows" if has_rows else "grid"], "give either rows or grid (exactly one)")
    rows = _grid_rows(definition["grid"], base, limits) if has_grid else _list_rows(definition["rows"], base, limits)
    if len(rows) * repeats > MAX_RUNS:
        raise DefinitionError(["grid" if has_grid else "rows"],
                              f"{len(rows)} rows x {repeats} repeats = {len(rows) * repeats} runs; at most {MAX_RUNS}")
    keys = [r[0] for r in rows]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise DefinitionError(["rows", keys.index(dup), "key"], f"two rows have the key {dup!r}")
    normal = {"name": name.strip(), "server": dict(base), "repeats": repeats, "parallelism": parallelism,
              "priority": priority}
    normal["grid" if has_grid else "rows"] = definition["grid" if has_grid else "rows"]
    return Planned(name.strip(), rows, repeats, parallelism, priority, normal)


def _list_rows(rows: Any, base: dict[str, Any], limits: Limits) -> list[tuple[str, str, Any, int]]:
    if not isinstance(rows, list) or not rows:
        raise DefinitionError(["rows"], "rows is a non-empty list")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DefinitionError(["rows", i], "a row is an object: {key, client, server, queue_depth}")
        for k in row:
            if k not in ("key", "client", "server", "queue_depth"):
                raise DefinitionError(["rows", i, k], "unknown key; a row has key, client, server, queue_depth")
        client = _client(row.get("client", "qemu-img"), ["rows", i, "client"])
        server = row.get("server") or {}
        if not isinstance(server, dict):
            raise DefinitionError(["rows", i, "server"], "server is an object of server fields")
        fields = {**base, **server}
        loc_of: dict[str, list[str | int]] = {k: ["server", k] for k in base}
        loc_of.update({k: ["rows", i, "server", k] for k in server})
        spec = _spec(fields, limits, loc_of)
        depth = row.get("queue_depth", 1)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 64:
            raise DefinitionError(["rows", i, "queue_depth"], "an integer from 1 to 64")
        key = row.get("key") or f"row-{i + 1}"
        if not isinstance(key, str) or len(key) > KEY_MAX:
            raise DefinitionError(["rows", i, "key"], f"a key is a string of at most {KEY_MAX} characters")
        out.append((key, client, spec, depth))
    return out


def _grid_rows(grid: Any, base: dict[str, Any], limits: Limits) -> list[tuple[str, str, Any, int]]:
    if not isinstance(grid, dict) or not grid:
        raise DefinitionError(["grid"], "grid is an object: axis -> list of values (client, queue_depth or a "
                                        "server field)")
    axes: list[tuple[str, list[Any]]] = []
    for axis, values in grid.items():
        if axis not in ("client", "queue_depth") and axis not in FIELDS:
            raise DefinitionError(["grid", axis], f"unknown axis; use client, queue_depth or {', '.join(FIELDS)}")
        if not isinstance(values, list) or not values:
            raise DefinitionError(["grid", axis], "an axis is a non-empty list of values")
        if axis in base:
            raise DefinitionError(["grid", axis], "this field is also in server: give it in one place")
        axes.append((axis, values))
    for axis, values in axes:  # each value alone first: an error names its index
        for j, v in enumerate(values):
            if axis == "client":
                _client(v, ["grid", "client", j])
            elif axis == "queue_depth":
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
                    raise DefinitionError(["grid", "queue_depth", j], "an integer from 1 to 64")
            else:
                _spec({**base, axis: v}, limits, {axis: ["grid", axis, j], **{k: ["server", k] for k in base}})
    out = []
    for combo in itertools.product(*[values for _, values in axes]):
        chosen = dict(zip([a for a, _ in axes], combo, strict=True))
        client = chosen.pop("client", "qemu-img")
        depth = chosen.pop("queue_depth", 1)
        loc_of: dict[str, list[str | int]] = {k: ["grid", k] for k in chosen}
        loc_of.update({k: ["server", k] for k in base})
        spec = _spec({**base, **chosen}, limits, loc_of)
        key = "/".join(_show(v) for v in combo)
        out.append((key[:KEY_MAX], client, spec, depth))
    if len(out) > MAX_RUNS:
        raise DefinitionError(["grid"], f"the grid has {len(out)} rows; at most {MAX_RUNS}")
    return out


# -- results grouped per row --------------------------------------------------------------

STAT_FIELDS = ("duration_s", "predicted_s", "ratio", "backend.write_ops", "backend.zero_ops")


def _get(run: dict[str, Any], path: str) -> float | None:
    node: Any = run
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def stats(values: Sequence[float]) -> dict[str, float] | None:
    """median, min, max, spread (max - min) and relative spread (spread / median) of the values."""
    if not values:
        return None
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {"median": med, "min": lo, "max": hi, "spread": hi - lo, "rel_spread": (hi - lo) / med if med else 0.0,
            "n": len(values)}


def group_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sweep's runs grouped by row (label), in first-seen order, with statistics over the
    succeeded runs of each row (`duration_s`, `predicted_s`, `ratio`, backend write and zero ops)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run.get("label") or run["id"], []).append(run)
    out = []
    for key, members in groups.items():
        ok = [r for r in members if r.get("status") == "succeeded"]
        first = members[0]
        out.append({
            "key": key, "client": first.get("client"), "server": first.get("server"),
            "runs": len(members), "succeeded": len(ok), "run_ids": [r["id"] for r in members],
            "statuses": {s: sum(r.get("status") == s for r in members) for s in {r.get("status") for r in members}},
            "stats": {f: stats([v for r in ok if (v := _get(r, f)) is not None]) for f in STAT_FIELDS},
        })
    return out
