"""Request and response shapes of custom sweeps (POST /api/v1/sweeps) and of results per row.

The grid's axes are built from ServerFields, so every server field (and any added later) can
be an axis, with the same types, units and patterns as anywhere else.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.runs import RunStatus, ServerFields, ServerOut, SweepGrid, SweepRowIn, no_default, whole

MAX_ROWS = 1000
Repeats = whole(1, 20)
Parallelism = whole(1, 64)
Priority = whole(-10, 10)


class CustomSweepCreate(BaseModel):
    """A custom sweep: `rows` or `grid` (exactly one), on a base `server`, `repeats` times."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"\S")] = "custom"
    rows: Annotated[list[SweepRowIn], Field(min_length=1, max_length=MAX_ROWS)] = Field(
        None, json_schema_extra=no_default, description="the rows, each a client and server fields")
    grid: SweepGrid = Field(None, json_schema_extra=no_default,  # type: ignore[valid-type]
                            description="axis -> values: client, queue_depth or any server field")
    server: ServerFields | None = Field(None, description="server fields every row starts from")
    repeats: Repeats = Field(1, description="runs per row (p50, p95 and spread)")
    parallelism: Parallelism | None = Field(
        None, description="at most this many of its runs at once (default: as many workers as are free)")
    priority: Priority = Field(
        0, description="higher starts before lower, across all queued runs")

    def definition(self) -> dict[str, Any]:
        """As lab.domain.sweepspec.plan() takes it (plain values, bytes and ms)."""
        d = self.model_dump(mode="json", exclude_none=True)
        if "rows" in d:
            for row in d["rows"]:
                row.setdefault("server", {})
        return d


class RowStats(BaseModel):
    p50: float = Field(description="the median")
    p95: float = Field(description="linear between the closest ranks (numpy's default)")
    min: float
    max: float
    spread: float = Field(description="max - min")
    rel_spread: float = Field(description="spread / p50")
    n: int = Field(description="succeeded runs measured")


class RowWarning(BaseModel):
    """What makes a row's statistics less clean than they look."""

    type: str = Field(description="contended (runs with others' CPU use counted in) or slow-copy-path")
    message: str


class RowStatsSet(BaseModel):
    duration_s: RowStats | None = None
    predicted_s: RowStats | None = None
    ratio: RowStats | None = None
    backend_write_ops: RowStats | None = Field(None, alias="backend.write_ops")
    backend_zero_ops: RowStats | None = Field(None, alias="backend.zero_ops")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class RowResult(BaseModel):
    key: str
    client: str | None = None
    server: ServerOut | None = None
    runs: int
    succeeded: int
    contended: int = Field(description="succeeded runs marked contended (in the statistics unless contended=false)")
    run_ids: list[str]
    statuses: dict[str, int]
    stats: RowStatsSet
    warnings: list[RowWarning] = []


class SweepRowsOut(BaseModel):
    sweep_id: str
    name: str
    status: RunStatus
    repeats: int
    contended: bool | None = Field(None, description="as asked: null all runs, false without contended ones, true "
                                                     "only them")
    rows: list[RowResult]
