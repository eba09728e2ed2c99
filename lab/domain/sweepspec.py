"""Custom sweeps: a definition (rows, or a grid of client x server fields) made into runs.

A definition is plain data (from JSON, TOML or the API's body):

    {"name": "fast zero on A and B",
     "grid": {"client": ["qemu-3.1", "qemu-4.2"], "zeromode": ["plugin", "emulate"]},
     "server": {"size": "16M", "delay_write": "5ms"},        # the base of every row
     "repeats": 3, "parallelism": 1, "priority": 0}

or `"rows": [{"key": "a", "client": "qemu-4.2", "server": {...}, "queue_depth": 1}, ...]` instead
of `grid`. A grid's axes are `client`, `queue_depth` and any server field; its rows are their
product, keyed by their values joined with `/` ("qemu-3.1/plugin/16M"). Axes go in one fixed
order (AXES: client, queue_depth, then the server fields' own order) and values in one spelling
(sizes and delays as a person types them: 16M, 5ms), whatever order and spelling a definition
used: the API, `lab sweep` and a definition posted back name every row alike. `repeats` runs
every row that many times, in rounds (all rows, then all rows again), so slow drift of the
machine spreads over every row alike; results then give each row's p50, p95, min and max, with
contended runs counted apart (group_rows). A row without delays (bandwidth-bound) runs at least
BANDWIDTH_REPEATS times whatever `repeats` says.

Errors name the place in the definition (`DefinitionError.loc`, such as
["grid", "size", 1] or ["rows", 2, "server", "delay_write"]), as the API's 422s do.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.domain.clients import client_ids
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.run import Run
from lab.domain.spec import MachineCheck, ServerSpec, SpecError, build_spec, normal_fields, text

MAX_RUNS = 1000
MAX_REPEATS = 20
MAX_PARALLELISM = 64
PRIORITIES = range(-10, 11)
KEY_MAX = 80
FIELDS = tuple(ServerSpec.model_fields)
AXES = ("client", "queue_depth", *FIELDS)  # the one order of a grid's axes (rows and keys)


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

    def row_repeats(self, spec: ServerSpec) -> int:
        """How many times a row runs: `repeats`, and at least BANDWIDTH_REPEATS for a row without delays."""
        return max(self.repeats, BANDWIDTH_REPEATS) if bandwidth_bound(spec) else self.repeats

    def runs(self) -> list[Run]:
        """Rounds of every row (each run a fresh Run); a row runs in row_repeats(spec) of them."""
        n = [self.row_repeats(spec) for _, _, spec, _ in self.rows]
        return [Run(client=client, server=spec, label=key, queue_depth=depth)
                for k in range(max(n, default=0))
                for (key, client, spec, depth), times in zip(self.rows, n, strict=True) if k < times]


# A row without injected delays is a bandwidth-bound copy, often sub-second, whose time varies by
# 5-10% from run to run on a quiet machine, and one such copy in a few takes the machine's slow copy
# path (1.5-3x; measured 2026-12-07: 1 GiB era-client copies, 1 or 2 of every 3): one run of it says
# little, so a sweep runs it at least this many times and reports the median and spread (a median of
# five still stands when two runs were slow; of three, when one was).
BANDWIDTH_REPEATS = 5


def bandwidth_bound(spec: ServerSpec) -> bool:
    return spec.delay_write <= 0 and spec.delay_zero <= 0


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


def _depth(v: Any, loc: list[str | int]) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
        raise DefinitionError(loc, "an integer from 1 to 64")
    return v


def _keys(d: Any, allowed: Sequence[str], loc: list[str | int], what: str) -> dict[str, Any]:
    """d as a dict whose keys are all in `allowed` (DefinitionError otherwise)."""
    if not isinstance(d, dict):
        raise DefinitionError(loc, f"{what} is an object")
    for k in d:
        if k not in allowed:
            raise DefinitionError([*loc, k], f"unknown key; {what} has {', '.join(allowed)}")
    return d


def _spec(fields: dict[str, Any], limits: Limits, machine: MachineCheck | None,
          loc_of: dict[str, list[str | int]]) -> ServerSpec:
    try:
        return build_spec(fields, limits, machine)
    except SpecError as e:
        raise DefinitionError(loc_of.get(e.field, [e.field]), e.message) from None


def plan(definition: dict[str, Any], limits: Limits = DEFAULT_LIMITS,
         machine: MachineCheck | None = None) -> Planned:
    """Check a definition and make its rows; DefinitionError names the place at fault (`machine`:
    lab.domain.spec.MachineCheck, what this machine has)."""
    d = _keys(definition, ("name", "rows", "grid", "server", "repeats", "parallelism", "priority"), [],
              "a sweep definition")
    name = d.get("name", "custom")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        raise DefinitionError(["name"], "a name is 1 to 64 characters")
    repeats = _int(d, "repeats", 1, range(1, MAX_REPEATS + 1)) or 1
    parallelism = _int(d, "parallelism", None, range(1, MAX_PARALLELISM + 1))
    priority = _int(d, "priority", 0, PRIORITIES) or 0
    base = _keys(d.get("server") or {}, FIELDS, ["server"], "server")
    if ("rows" in d) == ("grid" in d):
        raise DefinitionError(["rows" if "rows" in d else "grid"], "give either rows or grid (exactly one)")
    which = "grid" if "grid" in d else "rows"
    rows = _grid_rows(d["grid"], base, limits, machine) if which == "grid" else \
        _list_rows(d["rows"], base, limits, machine)
    keys = [r[0] for r in rows]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise DefinitionError([which, keys.index(dup), "key"], f"two rows have the key {dup!r}")
    normal = {"name": name.strip(), "server": normal_fields(base), "repeats": repeats, "parallelism": parallelism,
              "priority": priority,
              which: _normal_grid(d["grid"]) if which == "grid" else _normal_rows(d["rows"], rows)}
    planned = Planned(name.strip(), rows, repeats, parallelism, priority, normal)
    _check_runs(planned, which)
    return planned


def _normal_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The grid as saved: axes in AXES order, server-field values as runs echo them (bytes, ms)."""
    return {axis: [v if axis in ("client", "queue_depth") else normal_fields({axis: v})[axis] for v in grid[axis]]
            for axis in AXES if axis in grid}


def _normal_rows(given: list[dict[str, Any]], rows: list[tuple[str, str, Any, int]]) -> list[dict[str, Any]]:
    """The rows as saved: each with its key (row-N filled in), client, depth and server fields normalised."""
    return [{"key": key, "client": client, "server": normal_fields(row.get("server") or {}), "queue_depth": depth}
            for row, (key, client, _, depth) in zip(given, rows, strict=True)]


def _check_runs(planned: Planned, which: str) -> None:
    """At most MAX_RUNS runs in a sweep, counting the extra repeats of rows without delays."""
    rows, repeats = planned.rows, planned.repeats
    total = sum(planned.row_repeats(spec) for _, _, spec, _ in rows)
    if total > MAX_RUNS:
        extra = f" (rows without delays run at least {BANDWIDTH_REPEATS} times)" if total > len(rows) * repeats else ""
        raise DefinitionError([which], f"{len(rows)} rows x {repeats} repeats = {total} runs{extra}; "
                                       f"at most {MAX_RUNS}")


def _list_rows(rows: Any, base: dict[str, Any], limits: Limits,
               machine: MachineCheck | None) -> list[tuple[str, str, Any, int]]:
    if not isinstance(rows, list) or not rows:
        raise DefinitionError(["rows"], "rows is a non-empty list")
    return [_list_row(i, row, base, limits, machine) for i, row in enumerate(rows)]


def _list_row(i: int, row: Any, base: dict[str, Any], limits: Limits,
              machine: MachineCheck | None) -> tuple[str, str, Any, int]:
    row = _keys(row, ("key", "client", "server", "queue_depth"), ["rows", i], "a row")
    client = _client(row.get("client", "qemu-img"), ["rows", i, "client"])
    server = _keys(row.get("server") or {}, FIELDS, ["rows", i, "server"], "server")
    loc_of: dict[str, list[str | int]] = {k: ["server", k] for k in base}
    loc_of.update({k: ["rows", i, "server", k] for k in server})
    spec = _spec({**base, **server}, limits, machine, loc_of)
    depth = _depth(row.get("queue_depth", 1), ["rows", i, "queue_depth"])
    key = row.get("key") or f"row-{i + 1}"
    if not isinstance(key, str) or len(key) > KEY_MAX:
        raise DefinitionError(["rows", i, "key"], f"a key is a string of at most {KEY_MAX} characters")
    return key, client, spec, depth


def _axes(grid: Any, base: dict[str, Any], limits: Limits,
          machine: MachineCheck | None) -> list[tuple[str, list[Any]]]:
    """The grid's axes in AXES' order, each value checked alone first (so an error names its index)."""
    if not isinstance(grid, dict) or not grid:
        raise DefinitionError(["grid"], "grid is an object: axis -> list of values (client, queue_depth or a "
                                        "server field)")
    base_loc: dict[str, list[str | int]] = {k: ["server", k] for k in base}
    axes = []
    for axis in grid:
        if axis not in AXES:
            raise DefinitionError(["grid", axis], f"unknown axis; use client, queue_depth or {', '.join(FIELDS)}")
    for axis in (a for a in AXES if a in grid):  # AXES' order, whatever the definition's
        values = grid[axis]
        if not isinstance(values, list) or not values:
            raise DefinitionError(["grid", axis], "an axis is a non-empty list of values")
        for j, v in enumerate(values):
            loc: list[str | int] = ["grid", axis, j]
            if axis == "client":
                _client(v, loc)
            elif axis == "queue_depth":
                _depth(v, loc)
            else:
                _spec({**base, axis: v}, limits, machine, {**base_loc, axis: loc})
        axes.append((axis, values))
    return axes


def _grid_rows(grid: Any, base: dict[str, Any], limits: Limits,
               machine: MachineCheck | None) -> list[tuple[str, str, Any, int]]:
    axes = _axes(grid, base, limits, machine)
    size = 1
    for _, values in axes:
        size *= len(values)
    if size > MAX_RUNS:
        raise DefinitionError(["grid"], f"the grid has {size} rows; at most {MAX_RUNS}")
    out = []
    for combo in itertools.product(*[values for _, values in axes]):
        chosen = dict(zip([a for a, _ in axes], combo, strict=True))
        client = chosen.pop("client", "qemu-img")
        depth = chosen.pop("queue_depth", 1)
        loc_of: dict[str, list[str | int]] = {k: ["server", k] for k in base}
        loc_of.update({k: ["grid", k] for k in chosen})  # an axis overrides the same field of server
        spec = _spec({**base, **chosen}, limits, machine, loc_of)
        parts = [str(v) if axis in ("client", "queue_depth") else text(axis, getattr(spec, axis))
                 for (axis, _), v in zip(axes, combo, strict=True)]
        out.append(("/".join(parts)[:KEY_MAX], client, spec, depth))
    return out


# -- results grouped per row --------------------------------------------------------------

STAT_FIELDS = ("duration_s", "predicted_s", "ratio", "backend.write_ops", "backend.zero_ops", "expected_s",
               "expected_low_s", "expected_high_s")


def _get(run: dict[str, Any], path: str) -> float | None:
    node: Any = run
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear between the closest ranks (numpy's default): with 5 runs, p95 lies 80% of the way from
    the 4th to the 5th."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def stats(values: Sequence[float]) -> dict[str, float] | None:
    """p50 (the median), p95, min, max, spread (max - min) and relative spread (spread / p50)."""
    if not values:
        return None
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    lo, hi = ordered[0], ordered[-1]
    return {"p50": p50, "p95": _quantile(ordered, 0.95), "min": lo, "max": hi, "spread": hi - lo,
            "rel_spread": (hi - lo) / p50 if p50 else 0.0, "n": len(ordered)}


def _warnings(ok: Sequence[dict[str, Any]], contended: int, counted: bool) -> list[dict[str, str]]:
    """What makes a row's statistics less clean than they look (typed, as hyperfine's warnings)."""
    out = []
    if contended and counted:
        out.append({"type": "contended", "message": f"{contended} of {len(ok)} succeeded runs were contended "
                    "(others' CPU use during the copy): their times say more about the neighbours than the "
                    "protocol; leave them out with contended=false"})
    outside = {v: sum(1 for r in ok if r.get("model_verdict") == v) for v in ("slower-than-model", "faster-than-model")}
    if any(outside.values()):
        out.append({"type": "outside-model", "message": f"{sum(outside.values())} of {len(ok)} succeeded runs fell "
                    f"outside their expectation's interval ({outside['slower-than-model']} slower, "
                    f"{outside['faster-than-model']} faster): their notes say which part was most likely off"})
    slow = sum(1 for r in ok if (r.get("contention") or {}).get("slow_copy_path"))
    if slow:
        out.append({"type": "slow-copy-path", "message": f"{slow} of {len(ok)} succeeded runs took the slow copy "
                    "path (own CPU well above the calibration's): the machine moved their bytes slowly"})
    return out


def group_rows(runs: Sequence[dict[str, Any]], contended: bool | None = None) -> list[dict[str, Any]]:
    """A sweep's runs grouped by row (label), in first-seen order, with statistics over the
    succeeded runs of each row (`duration_s`, `predicted_s`, `ratio`, backend write and zero ops).

    `contended`: None counts every succeeded run (a warning says how many were contended), False
    only the runs not marked contended, True only those; `contended` in each row counts them anyway."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run.get("label") or run["id"], []).append(run)
    out = []
    for key, members in groups.items():
        ok = [r for r in members if r.get("status") == "succeeded"]
        n_contended = sum(1 for r in ok if r.get("contended"))
        measured = ok if contended is None else [r for r in ok if bool(r.get("contended")) == contended]
        first = members[0]
        out.append({
            "key": key, "client": first.get("client"), "server": first.get("server"),
            "runs": len(members), "succeeded": len(ok), "contended": n_contended, "run_ids": [r["id"] for r in members],
            "statuses": {s: sum(r.get("status") == s for r in members) for s in {r.get("status") for r in members}},
            "stats": {f: stats([v for r in measured if (v := _get(r, f)) is not None]) for f in STAT_FIELDS},
            "warnings": _warnings(measured, sum(1 for r in measured if r.get("contended")), contended is None),
        })
    return out
