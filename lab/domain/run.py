"""A run: the one model of a convert run and its result, with its statuses.

`Run.to_dict()` is the JSON the CLI prints, the store keeps and the API answers with; the CSV's
columns are its leaves (lab.service.export). Carried out by lab.measure.execute.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    computed_field,
    field_serializer,
    model_validator,
)
from typing_extensions import TypedDict

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.flags import ServerFlags
from lab.domain.spec import ServerSpec

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
STATUSES: tuple[str, ...] = get_args(RunStatus)
ACTIVE: tuple[str, ...] = ("queued", "running")  # a run (or sweep) still to finish
FINAL: tuple[str, ...] = tuple(s for s in STATUSES if s not in ACTIVE)  # succeeded ... interrupted: it stays
# A run against its calibrated expectation (lab.measure.expectation): what the time is mostly made of,
# and whether it fell inside the interval.
Regime = Literal["delay-bound", "per-request-bound", "bandwidth-bound"]
ModelVerdict = Literal["within", "slower-than-model", "faster-than-model"]
VERDICT_WORDS: dict[str, str] = {"within": "within the model", "slower-than-model": "slower than the model",
                                 "faster-than-model": "faster than the model"}
# The breakdown's parts (Run.breakdown keys; `model_term` names one) in words.
PART_WORDS: dict[str, str] = {"delays_s": "delays", "per_request_s": "per-request", "per_byte_s": "per-byte",
                              "fixed_s": "fixed"}



def new_id() -> str:
    return uuid.uuid4().hex[:12]


class StatsCheck(TypedDict):
    """The stats filter's op counts beside the datapath count (they must agree)."""

    stats_write_ops: int
    stats_zero_ops: int
    agree: bool | None


class WorkerStamp(TypedDict):
    """The `lab worker` that ran a run (cluster mode) and the calibration its expectation came from."""

    name: str
    fingerprint: str  # the worker's machine and tool versions (lab.measure.expectation.fingerprint)
    calibrated_at: float | None  # when that worker was calibrated (None: it was not; no expectation)


class Reached(TypedDict, total=False):
    """How far a copy got (what a cancelled or failed run had reached)."""

    fraction: float
    bytes_done: int
    elapsed_s: float
    backend: dict[str, int]
    phase: str | None


class DiskMap(TypedDict, total=False):
    """The disk map of a copy (lab.nbd.diskmap): run-length encoded, one letter per cell: `cells` the
    kind covering most of a cell, `under` a second kind where a cell holds two, `marks` "R" where a
    fast zero was refused."""

    cell_size: int
    size: int
    cells: str
    under: str
    marks: str
    requests: int
    truncated: bool


# What the server advertised, as a plain dict (run.flags["can_zero"]), with ServerFlags' schema.
FlagsDict = Annotated[dict[str, Any], WithJsonSchema(TypeAdapter(ServerFlags).json_schema())]


class Run(BaseModel):
    """A run and, once finished, its result: the one model of a run.

    `to_dict()` is the JSON the CLI prints, the store keeps and the API answers with (the
    API's response model is this class, app/schemas/runs.py), and the CSV's columns are its
    leaves (lab/service/export.py). Adding a run field is one line here. Assignments are
    validated (a misspelt status fails where it is set, not in a reader).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    client: str = Field(description="copy client, see GET /api/clients")
    server: ServerSpec = Field(description="the server's fields, normalised (bytes, milliseconds)")
    id: str = Field(default_factory=new_id)
    status: RunStatus = "queued"
    queue_depth: int = Field(1, description="requests in flight, for the lab's own clients")
    server_id: str | None = Field(None, description="the long-lived server it ran on (None: a fresh one)")
    sweep_id: str | None = None
    label: str | None = None
    # Who asked for it (a display name, lab.domain.students) and what they expected (lab.domain.students.compare).
    student: str | None = None
    lane: Literal["system", "teacher", "student", "anonymous"] | None = Field(
        None, description="the queue lane it waited in (lab.service.scheduler): teacher, student or anonymous")
    prediction: dict[str, int | float] | None = None
    reference: dict[str, Any] | None = Field(None, description="the talk's figures for this scenario row")
    # Which scenario rows it measures (lab.domain.scenarios.rows_of), filled when the run is made:
    # {row key: true when the run is at the row's own geometry, so the row's 2019 figures hold}.
    scenario_rows: dict[str, bool] | None = Field(None, description="the scenario rows this run measures: "
                                                  "{row key: at the row's own geometry (its 2019 figures hold)}")
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    setup_s: float | None = None
    duration_s: float | None = None
    verify_s: float | None = None
    predicted_s: float | None = None
    # The calibrated expectation (lab.measure.expectation): the floor plus this machine's measured per-request,
    # per-byte and fixed costs; `breakdown` splits it (delays_s, per_request_s, per_byte_s, fixed_s).
    expected_s: float | None = None
    breakdown: dict[str, float] | None = None
    calibration: str | None = None  # the coefficient set used, e.g. "era-q1/single"
    # The interval that holds `expected_coverage` of runs, the part the expectation is mostly made of, and
    # where this run fell: outside, `model_term` names the breakdown part most likely short (or long).
    expected_low_s: float | None = None
    expected_high_s: float | None = None
    expected_coverage: float | None = None
    regime: Regime | None = None
    model_verdict: ModelVerdict | None = None
    model_term: str | None = None
    # The control's correction in expected_s (this machine now / at its calibration; None: none applied),
    # and whether the control says the calibration is stale (lab.measure.drift).
    machine_factor: float | None = None
    calibration_stale: bool | None = None
    # Others' CPU during the copy above lab.measure.contention.CONTENDED_CORES: the time is not a clean measurement.
    contended: bool | None = None
    contention: dict[str, Any] | None = None  # machine_cores, own_cores, others_cores, limit_cores
    model: str | None = None
    verified: bool | None = None
    verify_detail: str | None = None
    backend: BackendCounts | None = Field(None, description="requests the backend (plugin) carried out")
    wire: WireCounts | None = Field(None, description="requests as the client sent them")
    server_log: WireCounts | None = Field(None, description="requests as nbdkit's log filter saw them")
    stats_check: StatsCheck | None = None
    flags: FlagsDict | None = Field(None, description="what the server advertised")
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    # How far the copy got (fraction, bytes, phase): what a cancelled or failed run had reached.
    reached: Reached | None = None
    # From the log filter's trace (lab.domain.latency): {"latency": {op: {n, p50_ms, p90_ms, p99_ms, max_ms}},
    # "zero_sizes": [{le: bytes, count}]}.
    request_stats: dict[str, Any] | None = Field(
        None, description="per-operation latency percentiles (ms) as the log filter timed each request, and "
                          "the zero requests' size histogram (power-of-two buckets)")
    # The disk map of the copy: {"cell_size", "size", "cells" (run-length encoded), "requests"}.
    diskmap: DiskMap | None = None
    worker: WorkerStamp | None = Field(
        None, description="cluster mode: the worker that ran it, and the calibration behind its expected_s "
                          "(null: this service's own machine)")
    # The per-request trace (lab.nbd.diskmap.TraceRow); kept apart from to_dict(), saved by the manager.
    trace: list[Any] | None = Field(None, repr=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _computed_are_not_input(cls, data: Any) -> Any:
        """A stored run's JSON holds its computed fields: with extra="allow" they would come back twice."""
        if isinstance(data, dict) and data.keys() & cls.model_computed_fields.keys():
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data

    @model_validator(mode="after")
    def _scenario_rows(self) -> Run:
        if self.scenario_rows is None:  # once, when the run is made (or read back from before the field)
            from lab.domain.scenarios import rows_of

            self.__dict__["scenario_rows"] = rows_of(self.client, self.server.to_dict(), self.label)
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ratio(self) -> float | None:
        if self.duration_s is None or not self.predicted_s:
            return None
        return round(self.duration_s / self.predicted_s, 4)

    @field_serializer("wire", "server_log")
    def _wire(self, w: WireCounts | None) -> WireCounts | None:
        """At most 10 error lines (as WireCounts.to_dict), with the dataclass's own schema."""
        return dataclasses.replace(w, errors=w.errors[:10]) if w is not None else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()
