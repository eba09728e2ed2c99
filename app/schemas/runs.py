"""Request and response shapes, split by role: what a client may send vs what we answer.

Nothing here restates a server field or a run field: the server-field request models are
made from lab.domain.spec.ServerSpec (its units, choices and help; bounds are added to the
OpenAPI schema per settings by app/openapi.py, and checked by lab.domain.spec.build_spec), and
the run and server responses are the core's own models (lab.domain.run.Run, lab.domain.spec.ServerSpec,
lab.nbd.servers.ServerFlags). Requests are strict: unknown fields are refused, a boolean is not
a size. Responses echo values normalised (bytes, milliseconds) and allow extra fields.
"""

from __future__ import annotations

import typing
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
)

from lab.domain.clients import client_ids
from lab.domain.flags import ServerFlags
from lab.domain.run import STATUSES, Run
from lab.domain.spec import FieldsIn, ServerSpec, SizeIn, partial_model, request_model
from lab.domain.students import MAX_DURATION_S, MAX_NAME, MAX_OPS, clean_name, clean_prediction

ClientId = StrEnum("ClientId", {c: c for c in client_ids()})
RunStatus = StrEnum("RunStatus", {s: s for s in STATUSES})

ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Label = Annotated[str, StringConstraints(max_length=80)]
RowKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A display name, typed once by a student (no password); stored trimmed, spaces collapsed. Its
# pattern (lab.domain.students.name_pattern, from the Unicode tables) is written into the OpenAPI
# document where this marker is, by app/openapi.py, once: it takes a quarter second to make.
DISPLAY_NAME = "x-display-name"
Student = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME * 2), AfterValidator(clean_name),
                    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME,
                                    "examples": ["Ana", "Group 3"], DISPLAY_NAME: True})]


def _whole(v: Any) -> Any:
    """JSON's integers: 7 or 7.0 (JSON Schema's `integer` takes both), never a boolean or a string."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be a whole number")
    return v


def whole(ge: int, le: int) -> Any:
    """An integer ge..le that JSON may write as 7 or 7.0 (the constraints first, so the schema shows them)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_whole)]


Ops = whole(0, MAX_OPS)
QueueDepth = whole(1, 64)


def no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


GeometryFields: type[FieldsIn] = request_model(
    "GeometryFields", ("geometry",), "Server fields that do not choose a mode: what a sweep may override in each row.")
ServerFields: type[FieldsIn] = request_model(
    "ServerFields", ("mode", "geometry"), "A server's fields (all optional; defaults = the talk's baseline).")


MAX_TTL_S = 30 * 86_400  # when LAB_SERVER_TTL_S is 0 (servers live until deleted), what a request may ask


class ServerCreate(ServerFields):
    """A long-lived server: its fields, and how long it may live."""

    # strict: a number (7 or 7.0), never a boolean or a string; at most LAB_SERVER_TTL_S (the route
    # checks the setting, app/openapi.py writes it into the schema's maximum)
    ttl_s: Annotated[float, Field(gt=0, le=MAX_TTL_S, strict=True)] | None = Field(
        None, description="stop it this many seconds after it starts (default and most: LAB_SERVER_TTL_S)")

    def raw(self) -> dict[str, Any]:
        out = super().raw()
        out.pop("ttl_s", None)
        return out


class RunFilter(_Strict):
    """Which queued or running runs to cancel: every field given must match (`{}`: all of them)."""

    status: Annotated[str, StringConstraints(pattern="^(queued|running)$")] | None = Field(
        None, description="queued or running (default: both)")
    label: Label | None = None
    sweep_id: ObjectId | None = None
    server_id: ObjectId | None = None
    client: ClientId | None = None
    student: Annotated[str, StringConstraints(min_length=1, max_length=80)] | None = Field(
        None, description="runs started for this student")


class CancelledOut(BaseModel):
    count: int
    runs: list[RunOut] = Field(description="the cancelled runs (final, or still stopping: status running)")


class Prediction(_Strict):
    """A guess made before the run: any of the copy time and the backend request counts (at least one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # not nullable: leave a field out rather than send null (so at least one given field is a number)
    duration_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S, strict=True)] = Field(  # type: ignore[assignment]
        None, json_schema_extra=no_default, description="the copy's wall time in seconds")
    write_ops: Ops = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                           description="write requests that reach the backend")
    zero_ops: Ops = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                          description="zero requests that reach the backend")

    def raw(self) -> dict[str, float]:
        """Normalised by lab.domain.students (one definition of a valid guess); at least one field."""
        return clean_prediction(self.model_dump(exclude_none=True))


class RunCreate(_Strict):
    """A run on a fresh server (`server`, or nothing: the defaults) or on a long-lived one (`server_id`): not both."""

    client: ClientId = Field(ClientId("qemu-img"), description="copy client, see GET /api/v1/clients")
    server: ServerFields = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                                 description="fields of a fresh server for this run (leave it out for the defaults)")
    server_id: ObjectId = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                                description="run on this long-lived server instead")
    queue_depth: QueueDepth = Field(
        1, description="requests in flight, for the lab's own clients")
    label: Label | None = None
    student: Student | None = Field(None, description="who starts it (a display name): GET /api/v1/runs?student=")
    prediction: Prediction | None = Field(None, description="the student's guess, returned beside the result")


class SweepCreate(_Strict):
    only: Annotated[list[RowKey], Field(min_length=1, max_length=200)] | None = Field(
        None, description="row keys of the scenario to run (default, or null: all; an empty list is an error)")
    server: GeometryFields | None = Field(
        None, description="geometry for every row (e.g. a smaller size); reference figures are dropped then")
    student: Student | None = Field(None, description="who starts it; every run of the sweep carries it")


# -- responses ------------------------------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ServerOut(ServerSpec):
    """A server's fields, normalised (bytes, milliseconds): lab.domain.spec.ServerSpec."""


FlagsOut = ServerFlags


class Contention(_Open):
    """Others' CPU use while the copy ran (lab.measure.contention)."""

    machine_cores: float | None = None
    own_cores: float | None = None
    others_cores: float | None = None
    stolen_cores: float | None = Field(None, description="the part of others' CPU the hypervisor took (steal)")
    limit_cores: float | None = None
    client_cpu_known: bool | None = Field(None, description="the client's CPU came from the rusage of its exit")
    contended: bool | None = None
    own_cpu_s: float | None = Field(None, description="CPU seconds the run's own processes used over the copy")
    expected_own_cpu_s: float | None = Field(None, description="what the calibration says they should use")
    slow_copy_path: bool | None = Field(None, description="own CPU above SLOW_PATH_FACTOR x expected: the "
                                        "machine moved bytes slowly in this run (lab.measure.contention)")


Scalar = float | int | str | bool | None


class CalibrationPoint(_Open):
    """One measured plan point of a calibration (lab.measure.calibration._measure_plan)."""

    geometry: list[str | int] = Field(description="size, pattern, maxdata, delay-write ms, delay-zero ms")
    measured_s: float = Field(description="the run that counts, of those not on the slow copy path: the faster "
                              "of two, the median of three or more")
    runs_s: list[float] = Field([], description="every run of the point, in order")
    runs_cpu_s: list[float] = Field([], description="the CPU each run's own processes used (a run far above the "
                                    "point's cheapest took the slow copy path and does not count)")
    contended: bool = False
    features: dict[str, float] = Field(description="the model's inputs (lab.measure.expectation.TERMS) "
                                       "from exact counts")
    fitted_s: float | None = Field(None, description="what the fitted coefficients give for this point")


class ControlReference(_Open):
    """The calibration's control (its steady point at small size) as the calibration measured it."""

    geometry: list[str | int] = Field([], description="size, pattern, maxdata, delay-write ms, delay-zero ms")
    runs_s: list[float] = Field([], description="every run, at the start and at the end")
    clean_s: list[float] = Field([], description="the runs nobody disturbed (all, when every one was)")
    reference_s: float | None = Field(None, description="their median: what later controls compare with")
    spread: float | None = Field(None, description="their relative standard deviation")


class FitOut(_Open):
    key: str
    coef: dict[str, float]
    cpu_coef: dict[str, float] = Field({}, description="the same terms fitted to the runs' own CPU seconds")
    points: list[CalibrationPoint] = []
    worst: float | None = None
    spread: dict[str, float] = Field({}, description="per regime, the variable part's relative standard deviation, "
                                     "and abs_s: what every copy varies by (lab.measure.fitting.spread)")
    control: ControlReference = Field(default_factory=lambda: ControlReference(),
                                      description="the control's reference, measured at the calibration's start "
                                                  "and end")
    blind_spots: list[str] = Field([], description="the blind-spot terms this kind's points needed")


class ControlOut(_Open):
    """A control measurement: the calibration's steady point at small size, run again (lab.measure.drift)."""

    kind: str
    at: float
    runs_s: list[float]
    clean_s: list[float] = Field(description="the runs nobody disturbed (not contended, off the slow copy path)")
    reference_s: float
    factor: float | None = Field(None, description="now / at calibration (null: every run disturbed)")
    stale: bool


class CalibrationOut(_Open):
    fingerprint: str
    machine: dict[str, Scalar]
    fits: dict[str, FitOut]
    created_at: float | None = None
    took_s: float | None = None
    load_before: float | None = None
    version: int | None = None


class CalibrationState(_Open):
    status: str = Field(description="none, queued (its first point waits for the machine), running, done or failed")
    step: int = Field(0, description="points measured so far (each a job of the scheduler)")
    steps: int = Field(0, description="points in all (0: none asked for since the service started)")
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    calibration: CalibrationOut | None = Field(None, description="the coefficients in use (null when none)")
    stale: bool = Field(False, description="a kind's newest control drifted beyond what the intervals allow for")
    stale_kinds: dict[str, float] = Field({}, description="kind -> its control's factor, for the stale kinds")
    controls: list[ControlOut] = Field([], description="the newest controls against this calibration")
    machine_drift: float = Field(0.05, description="how far this machine's byte rate moves from the calibration "
                                 "(relative sd), as its controls showed; 0.05 until a few were measured")
    control_noise: float = Field(0.0, description="what a control misses the machine's rate by beyond its own runs' "
                                 "scatter (relative sd), as controls of one kind minutes apart showed; 0 until a "
                                 "few pairs were measured")


class ReferenceNote(_Open):
    """Where this lab's nbdkit (1.32) differs from 2019's for a reference row, and why."""

    build: str | None = None
    fast_seen: str | None = None
    why: str | None = None
    reproduced_by: str | None = None


class Reference(_Open):
    """The 2019 figures a row is compared with."""

    time_s: float
    write_ops: int
    zero_ops: int | None = None
    fast_seen: str | None = Field(None, description="the fast-zero requests the 2019 log showed")
    source: str | None = None
    row: str | None = Field(None, description="the reference row an act's row re-enacts")
    nbdkit_1_32: ReferenceNote | None = None


ServerPartial = partial_model(
    "ServerPartial", _Open, "Some server fields (those a scenario row, a sweep's overrides or a filter sets).")


class LatencyFigures(_Open):
    """One operation's latencies (lab.domain.latency.percentiles), nearest-rank, in milliseconds."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class SizeBucket(_Open):
    le: int = Field(description="requests of at most this many bytes (a power of two)")
    count: int


class RequestStats(_Open):
    """lab.domain.latency.by_operation: per log-filter operation, and the zero requests' sizes."""

    latency: dict[str, LatencyFigures | None] = Field(description="operation (Write, Zero, ...) -> its latencies")
    zero_sizes: list[SizeBucket] = Field(description="zero requests per power-of-two size bucket")


class RunOut(Run):
    """lab.domain.run.Run: the same object `lab run --json` prints (typed reference figures)."""

    request_stats: RequestStats | None = Field(  # type: ignore[assignment]
        None, description="per-operation latency percentiles (ms) as the log filter timed each request, and the "
                          "zero requests' size histogram (power-of-two buckets)")
    status: RunStatus = Field(RunStatus("queued"))  # type: ignore[assignment]  # the one status enum
    reference: Reference | None = None  # type: ignore[assignment]
    contention: Contention | None = Field(  # type: ignore[assignment]
        None, description="machine_cores, own_cores, others_cores, limit_cores during the copy")
    queue_position: int | None = Field(None, description="a queued run's place in the order runs will start (1: next)")
    estimated_start_s: float | None = Field(
        None, description="a queued run: seconds from now until it may start, from the estimates of the runs running "
                          "and ahead of it (a snapshot: the teacher's runs and newcomers' turns may move it)")


class RunList(BaseModel):
    runs: list[RunOut]
    total: int = Field(description="runs matching the filters, on all pages")
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")
    last_event_id: int = Field(description="subscribe to /api/events?last_event_id=this to miss nothing after")


class ManagedServerOut(_Open):
    id: str
    uri: str | None = Field(description="nbd+unix:// URI any NBD client (nbdinfo, qemu-img) can open")
    running: bool
    server: ServerOut
    flags: FlagsOut | None
    started_at: float | None = None
    created_at: float | None = None
    busy: bool = False
    runs: int = 0
    backend: dict[str, int] | None = Field(None, description="backend requests so far, since the server started")
    ttl_s: float | None = Field(None, description="its time to live (null: no limit)")
    expires_at: float | None = Field(None, description="when it is stopped (epoch s; null: never)")


class ServerList(BaseModel):
    servers: list[ManagedServerOut]


class SweepOut(_Open):
    id: str
    name: str
    status: RunStatus
    total: int
    finished: int
    counts: dict[str, int]
    run_ids: list[str]
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    only: list[str] | None = None
    overrides: ServerPartial | None = None
    kind: str | None = Field(None, description="scenario (a scenario's rows) or custom (POST /api/v1/sweeps)")
    definition: SweepDefinition | None = Field(None, description="a custom sweep's definition, normalised "
                                               "(POST it again, or /rerun, to repeat it)")
    repeats: int | None = Field(None, description="runs per row")
    parallelism: int | None = Field(None, description="at most this many of its runs at once (null: no cap)")
    priority: int | None = Field(None, description="higher starts first")
    student: str | None = None
    skipped: list[SkippedRow] | None = Field(None, description="the scenario's rows this machine cannot run, "
                                             "left out with the reason")
    runs: list[RunOut] | None = Field(None, description="the sweep's runs, in scenario order (detail views)")


class SweepList(BaseModel):
    sweeps: list[SweepOut]
    total: int = Field(description="sweeps matching the filters, on all pages")
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")
    last_event_id: int


class ResultsOut(BaseModel):
    rows: list[RunOut]
    count: int
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")
    columns: list[str] = Field(description="the CSV columns (dotted paths into each row)")


class ManagerStats(_Open):
    workers: int
    queued: int
    running: int
    queue_size: int
    servers: int
    max_servers: int
    subscribers: int
    last_event_id: int
    stopping: bool


class Calibrating(BaseModel):
    step: int = Field(description="calibration points measured")
    steps: int = Field(description="calibration points in all")


class HealthOut(BaseModel):
    status: Literal["ok", "starting"] = Field(description="starting: the first start's calibration runs in the "
                                                         "background (the service answers; runs queue behind it)")
    version: str
    versions: dict[str, str]
    manager: ManagerStats
    calibrating: Calibrating | None = None


class ClientOut(_Open):
    id: str
    label: str
    era: str
    description: str
    parallel: bool
    real_binary: bool


# -- kinds and probes -----------------------------------------------------------------------


class Availability(_Open):
    available: bool
    reason: str | None = None


class KindsOut(BaseModel):
    kinds: dict[str, Availability]
    storages: dict[str, Availability]
    disk_formats: list[str]
    external_targets: list[str] = Field(description="what LAB_EXTERNAL_TARGETS lists (off when empty)")


class ProbeCreate(_Strict):
    server: ServerFields | None = Field(None, description="the server to probe (probe defaults: zeromode plugin, "
                                                          "no delays, maxdata 32M)")
    length: SizeIn | None = Field(None, description="bytes per probed range, 1M..256M (default 64M; 4 ranges)")


class ProbeVerdict(StrEnum):
    unsafe = "unsafe"
    fast = "fast"
    advertised_but_slow = "advertised-but-slow"
    refused_but_cheap = "refused-but-cheap"
    refused_quickly = "refused-quickly"
    not_advertised_cheap = "not-advertised-cheap"
    not_advertised_dear = "not-advertised-dear"
    no_zero = "no-zero"


class StorageOut(_Open):
    """A provisioned storage (lab.host.storage.Provisioned.info)."""

    storage: str
    dir: str
    disk: str | None = None
    filesystem: str = ""
    loop_devices: list[str] = []
    mounts: list[str] = []


class RealServerOut(_Open):
    """What serves the disk under the filter stack (lab.nbd.backends.Backend.info)."""

    kind: str
    direct_uri: str | None = Field(None, description="the real server without the nbdkit proxy, when it has one")
    storage: StorageOut | None = None
    disk: str | None = None
    backend_pid: int | None = None
    notes: list[str] = []


class ProxyCostOut(_Open):
    """What the nbdkit nbd proxy adds per request (4 KiB reads, direct vs proxied, fastest round)."""

    reads: int
    direct_us: float
    proxied_us: float
    added_us_per_request: float


class ProbeServer(ServerOut):
    real_server: RealServerOut | None = None
    proxy_cost: ProxyCostOut | None = None


class ProbeFlags(_Open):
    size: int | None = None
    can_zero: bool | None = None
    can_fast_zero: bool | None = None
    can_trim: bool | None = None
    can_flush: bool | None = None
    block_size_max: int | None = None


class ProbeStep(_Open):
    range: str = Field(description="fresh or written")
    op: str = Field(description="write, zero, fast-zero or trim")
    offset: int
    length: int
    outcome: str = Field(description="ok, refused, not-advertised or error")
    seconds: float | None = None
    requests: int = 0
    error: str | None = None
    reads_zero: bool | None = None
    tries_ms: list[float] = []
    first_nonzero: int | None = None
    ms: float | None = None
    mib_per_s: float | None = None


class ProbeOut(_Open):
    """What `lab probe --json` prints."""

    server: ProbeServer
    flags: ProbeFlags
    results: list[ProbeStep]
    verdict: ProbeVerdict
    why: str
    figures: dict[str, float | int | str | bool | None]


# -- custom sweeps (POST /api/v1/sweeps: app/schemas/sweeps.py; saved in SweepOut.definition) ------

MAX_AXIS = 50


def _inner(annotation: Any) -> Any:
    """X from `X | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


Axis = dict[str, Any]
_axes: dict[str, Any] = {
    "client": (list[ClientId] | None, Field(None, min_length=1, max_length=MAX_AXIS, description="copy clients")),
    "queue_depth": (list[QueueDepth] | None,
                    Field(None, min_length=1, max_length=MAX_AXIS, description="requests in flight")),
}
for _name, _field in ServerFields.model_fields.items():
    _axes[_name] = (list[_inner(_field.annotation)] | None,  # type: ignore[valid-type]
                    Field(None, min_length=1, max_length=MAX_AXIS, description=_field.description))

SweepGrid = create_model(  # type: ignore[call-overload]
    "SweepGrid", __config__=ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1}),
    __doc__="Axes of a grid: each a list of values; the rows are their product, in the order given.", **_axes)


class SweepRowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, StringConstraints(min_length=1, max_length=80)] | None = Field(
        None, description="the row's name in results (default row-N)")
    client: ClientId = Field(ClientId("qemu-img"), description="copy client")
    server: ServerFields | None = Field(None, description="this row's server fields (over the sweep's `server`)")
    queue_depth: QueueDepth = 1


class SweepDefinition(_Open):
    """A custom sweep's definition as saved (sizes in bytes, delays in ms): POST it to /api/v1/sweeps again."""

    name: str
    rows: list[SweepRowIn] | None = None
    grid: SweepGrid | None = None  # type: ignore[valid-type]
    server: ServerFields | None = None
    repeats: int = 1
    parallelism: int | None = None
    priority: int = 0


# -- scenarios ------------------------------------------------------------------------------


class ScenarioRowOut(_Open):
    key: str
    label: str
    client: str
    server: ServerPartial = Field(description="the fields the row sets (the rest are the defaults)")
    reference: Reference | None = None
    group: str = Field("", description="A or B (the server of the case study), or empty")
    available: bool | None = Field(None, description="whether this machine can run the row (its server kind, its "
                                   "storage, room for its disk)")
    reason: str | None = Field(None, description="why not, when `available` is false")


class SkippedRow(BaseModel):
    key: str
    reason: str


class ActOut(_Open):
    key: str
    title: str
    era: str
    summary: str
    takeaway: str = ""
    heading: str = Field("", description="the heading of the 2019 talk's notes this act follows")
    no_reference: str = Field("", description="why the act has no 2019 time, when it has none")
    beside: str = Field("", description="the act whose results this act's servers are shown beside")
    rows: list[ScenarioRowOut]


class ScenarioOut(_Open):
    name: str
    title: str
    description: str
    rows: list[ScenarioRowOut]
    acts: list[ActOut] = []


class ScenarioList(BaseModel):
    scenarios: list[ScenarioOut]


class RowMatch(_Open):
    client: str
    server: ServerPartial


class ScenarioRowRuns(ScenarioRowOut):
    match: RowMatch = Field(description="a run measures the row when its client and these server fields agree")
    total: int = Field(description="runs that measure the row")
    runs: list[RunOut] = Field(description="the newest of them")


class ScenarioRowsOut(BaseModel):
    name: str
    rows: list[ScenarioRowRuns]
    last_event_id: int
