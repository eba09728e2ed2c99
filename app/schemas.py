"""Request and response shapes, split by role: what a client may send vs what we answer.

Requests are strict: unknown fields are refused, a boolean is not a size, enumerations
name the modes and clients. Sizes are an integer of bytes or a string with a unit
("16M"), delays a string with a unit ("20ms", "0.5s") or a number of milliseconds;
both are parsed here (so a bad one is a 422 naming its field) and checked against the
configured limits by lab.spec.build_spec. Responses echo them normalised: bytes and ms.

Response models allow extra fields, so what the core adds to Run.to_dict() reaches
API clients without a schema change here first.
"""

from __future__ import annotations

import re
import typing
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    create_model,
)

from lab.clients import client_ids
from lab.runs import STATUSES
from lab.spec import DISK_FORMATS, DISK_INITS, FASTZEROMODES, KINDS, PLUGINS, SOURCE_FORMATS, STORAGES, ZEROMODES
from lab.students import MAX_DURATION_S, MAX_NAME, MAX_OPS, clean_name, clean_prediction
from lab.units import parse_delay, parse_size

ZeroMode = StrEnum("ZeroMode", {m: m for m in ZEROMODES})
FastZeroMode = StrEnum("FastZeroMode", {m: m for m in FASTZEROMODES})
Plugin = StrEnum("Plugin", {m: m for m in PLUGINS})
SourceFormat = StrEnum("SourceFormat", {m: m for m in SOURCE_FORMATS})
Kind = StrEnum("Kind", {m: m for m in KINDS})
Storage = StrEnum("Storage", {m: m for m in STORAGES})
DiskFormat = StrEnum("DiskFormat", {m: m for m in DISK_FORMATS})
DiskInit = StrEnum("DiskInit", {m: m for m in DISK_INITS})
ClientId = StrEnum("ClientId", {c: c for c in client_ids()})
RunStatus = StrEnum("RunStatus", {s: s for s in STATUSES})

MAX_JSON_INT = 1 << 53
# Unit spellings lab.units accepts, as case-insensitive character classes (JSON Schema has no flags).
# The API's unit grammar: a whole number with a unit, no spaces (the CLI takes more spellings).
# Kept this narrow so the OpenAPI document can say exactly which strings are accepted: app/openapi.py
# narrows these patterns further to this instance's bounds (app/unitregex.py).
SIZE_PATTERN = r"^[1-9][0-9]{0,14}[kKmMgG]$"
DELAY_PATTERN = r"^(0|[1-9][0-9]{0,11})(ms|s)$"
# A pattern's lengths: M or G, or k in multiples of 4 (4k-aligned), as lab.images.parse_pattern needs.
_LENGTH = r"([1-9][0-9]{0,5}[mMgG]|([48]|[2468][048]|[13579][26]|[1-9][0-9]{0,3}([02468][048]|[13579][26]))[kK])"
PATTERN_PATTERN = rf"^(full|empty|alternate:{_LENGTH}(:{_LENGTH})?)$"
_SIZE_RE = re.compile(SIZE_PATTERN)
_PATTERN_RE = re.compile(PATTERN_PATTERN)
_DELAY_RE = re.compile(DELAY_PATTERN)


def _size(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError("a size is an integer number of bytes or a string with a unit such as '16M'")
    if isinstance(v, int) and not 0 <= v <= MAX_JSON_INT:
        raise ValueError(f"a size must be between 0 and {MAX_JSON_INT} bytes")
    if isinstance(v, str) and not _SIZE_RE.match(v):
        raise ValueError(f"{v[:40]!r} is not a size: use an integer of bytes, or a whole number with k, M or G "
                         "(such as 16M)")
    return parse_size(v)


def _delay(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("a delay is a number of milliseconds or a string with a unit such as '20ms'")
    if isinstance(v, int) and not 0 <= v <= MAX_JSON_INT:
        raise ValueError(f"a delay must be between 0 and {MAX_JSON_INT} milliseconds")
    if isinstance(v, str) and not _DELAY_RE.match(v):
        raise ValueError(f"{v[:40]!r} is not a delay: use a number of milliseconds, or a whole number with ms or s "
                         "(such as 20ms)")
    return parse_delay(v)


def _layout(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("a pattern is a string such as 'alternate:1M', 'full' or 'empty'")
    if len(v) > 64 or not _PATTERN_RE.match(v):
        raise ValueError(f"{v[:40]!r} is not a pattern: use alternate:DATA[:HOLE] (such as alternate:1M; lengths "
                         "in M, G or multiples of 4k), full or empty")
    return v.strip()


Size = Annotated[
    int,
    PlainValidator(_size),
    WithJsonSchema({
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_JSON_INT},
            {"type": "string", "pattern": SIZE_PATTERN},
        ],
        "description": "bytes, or a whole number with a binary unit: 512k, 16M, 1G",
        "examples": ["16M", 262144],
    }),
]
Delay = Annotated[
    float,
    PlainValidator(_delay),
    WithJsonSchema({
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DELAY_PATTERN},
        ],
        "description": "milliseconds (a whole number), or a whole number with a unit: 20ms, 1s",
        "examples": ["20ms", 5],
    }),
]
Pattern = Annotated[
    str,
    PlainValidator(_layout),
    WithJsonSchema({"type": "string", "pattern": PATTERN_PATTERN, "maxLength": 64,
                    "examples": ["alternate:1M", "full"]}),
]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Label = Annotated[str, StringConstraints(max_length=80)]
RowKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# A display name, typed once by a student (no password); stored trimmed, spaces collapsed.
Student = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME * 2), AfterValidator(clean_name),
                    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME,
                                    "examples": ["Ana", "Group 3"]})]
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


class GeometryFields(_Strict):
    """Server fields that do not choose a mode: what a sweep may override for every row."""

    size: Size | None = Field(None, description="image size (default 100M)")
    pattern: Pattern | None = Field(None, description="source layout: alternate:DATA[:HOLE], full or empty")
    maxdata: Size | None = Field(None, description="largest backend write, blocksize filter (default 256k)")
    delay_write: Delay | None = Field(None, description="delay per backend write (default 20ms)")
    delay_zero: Delay | None = Field(None, description="delay per backend zero (default 5ms)")
    plugin: Plugin | None = Field(None, description="nbdkit plugin (default memory)")
    noextents: StrictBool | None = Field(None, description="hide block status from clients (default true)")
    source_format: SourceFormat | None = Field(None, description="format of the source image (default qcow2)")

    def raw(self) -> dict[str, Any]:
        """The fields that were given, as plain values for lab.spec.build_spec."""
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in self.model_dump(exclude_none=True).items()}


class ServerFields(GeometryFields):
    """A server's knobs (all optional; defaults = the talk's baseline)."""

    zeromode: ZeroMode | None = Field(None, description="nozero filter zeromode (default none)")
    fastzeromode: FastZeroMode | None = Field(None, description="nozero filter fastzeromode (default: default)")
    kind: Kind | None = Field(None, description="server kind under the filter stack (default nbdkit); "
                                                "see GET /api/kinds for what this machine has")
    storage: Storage | None = Field(None, description="where a file-backed server's disk lives (plugin file, "
                                                      "qemu-nbd, nbd-server); default: its private dir")
    disk_format: DiskFormat | None = Field(None, description="qemu-nbd's disk format (default raw)")
    target: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = Field(
        None, description="kind external: a Unix socket path or host:port listed in LAB_EXTERNAL_TARGETS")
    destructive: StrictBool | None = Field(None, description="kind external: allow overwriting the target")
    disk_init: DiskInit | None = Field(None, description="what a file-backed disk holds before the copy: sparse "
                                                         "(default) or data (every byte written: a reused disk)")


class ServerCreate(ServerFields):
    """A long-lived server: its fields, and how long it may live."""

    ttl_s: Annotated[float, Field(gt=0, le=30 * 86_400)] | None = Field(
        None, description="stop it this many seconds after it starts (default LAB_SERVER_TTL_S)")

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
    duration_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)] = Field(  # type: ignore[assignment]
        None, json_schema_extra=no_default, description="the copy's wall time in seconds")
    write_ops: Ops = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                           description="write requests that reach the backend")
    zero_ops: Ops = Field(None, json_schema_extra=no_default,  # type: ignore[assignment]
                          description="zero requests that reach the backend")

    def raw(self) -> dict[str, float]:
        """Normalised by lab.students (one definition of a valid guess); at least one field."""
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


class ServerOut(_Open):
    zeromode: str
    fastzeromode: str
    size: int
    pattern: str
    maxdata: int
    delay_write: float
    delay_zero: float
    plugin: str | None = None
    noextents: bool | None = None
    source_format: str | None = None
    kind: str | None = None
    storage: str | None = None
    disk_format: str | None = None
    target: str | None = None
    destructive: bool | None = None
    disk_init: str | None = None


class BackendOut(_Open):
    write_ops: int
    write_bytes: int
    zero_ops: int
    zero_bytes: int
    trim_ops: int
    flush_ops: int


class WireOut(_Open):
    write: int
    zero: int
    fast_zero: int
    fast_zero_failed: int
    flush: int


class FlagsOut(_Open):
    size: int
    can_zero: bool
    can_fast_zero: bool
    can_trim: bool
    can_flush: bool


class Contention(_Open):
    """Others' CPU use while the copy ran (lab.contention)."""

    machine_cores: float | None = None
    own_cores: float | None = None
    others_cores: float | None = None
    limit_cores: float | None = None


Scalar = float | int | str | bool | None


class FitOut(_Open):
    key: str
    coef: dict[str, float]
    points: list[dict[str, Scalar | list[Scalar]]] = []
    worst: float | None = None


class CalibrationOut(_Open):
    fingerprint: str
    machine: dict[str, Scalar]
    fits: dict[str, FitOut]
    created_at: float | None = None
    took_s: float | None = None
    load_before: float | None = None
    version: int | None = None


class CalibrationState(_Open):
    status: str = Field(description="none, running, done or failed")
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    calibration: CalibrationOut | None = Field(None, description="the coefficients in use (null when none)")


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


class StatsCheck(_Open):
    """nbdkit's stats filter against the lab's own count of backend requests (they must agree)."""

    stats_write_ops: int
    stats_zero_ops: int
    agree: bool


class ServerPartial(_Open):
    """Some server fields (those a scenario row, a sweep's overrides or a filter set), normalised."""

    zeromode: str | None = None
    fastzeromode: str | None = None
    size: int | None = None
    pattern: str | None = None
    maxdata: int | None = None
    delay_write: float | None = None
    delay_zero: float | None = None
    plugin: str | None = None
    noextents: bool | None = None
    source_format: str | None = None
    kind: str | None = None
    storage: str | None = None
    disk_format: str | None = None
    target: str | None = None
    destructive: bool | None = None


class RunOut(_Open):
    """Run.to_dict(): the same object `lab run --json` prints."""

    id: str
    status: RunStatus
    client: str
    server: ServerOut
    queue_depth: int | None = None
    server_id: str | None = None
    sweep_id: str | None = None
    label: str | None = None
    student: str | None = None
    prediction: dict[str, float] | None = None
    reference: Reference | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    setup_s: float | None = None
    duration_s: float | None = None
    verify_s: float | None = None
    predicted_s: float | None = None
    expected_s: float | None = Field(None, description="calibrated expectation on this machine (lab calibrate)")
    breakdown: dict[str, float] | None = Field(
        None, description="expected_s split: delays_s (the floor), per_request_s, per_byte_s, fixed_s")
    calibration: str | None = Field(None, description="coefficient set used, e.g. era-q1/single")
    contended: bool | None = Field(None, description="others used more CPU during the copy than a clean "
                                   "measurement allows (contention.others_cores > limit_cores)")
    contention: Contention | None = Field(
        None, description="machine_cores, own_cores, others_cores, limit_cores during the copy")
    model: str | None = None
    verified: bool | None = None
    verify_detail: str | None = None
    backend: BackendOut | None = None
    wire: WireOut | None = None
    server_log: WireOut | None = None
    stats_check: StatsCheck | None = None
    flags: FlagsOut | None = None
    notes: list[str] = []
    error: str | None = None
    ratio: float | None = None
    queue_position: int | None = Field(None, description="a queued run's place in the queue (1: starts next)")


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


class HealthOut(BaseModel):
    status: str
    version: str
    versions: dict[str, str]
    manager: ManagerStats


class ClientOut(_Open):
    id: str
    label: str
    era: str
    description: str
    parallel: bool
    real_binary: bool


class ProblemItem(BaseModel):
    """One invalid field."""

    loc: list[str | int] = Field(description="where: body/query/header/path, then the field names and indexes")
    message: str
    code: str = Field(description="what kind of error (pydantic's type: missing, extra_forbidden, value_error...)")
    value: Any = Field(None, description="the value exactly as the request sent it (any JSON); absent when missing")


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json), the shape of every error."""

    type: str = Field(description="stable URI of the kind of error: tag:fastzero-lab,2026:CODE")
    code: str = Field(description="the last part of `type`: not-found, invalid-request, limit-reached...")
    status: int
    title: str
    detail: str = Field(description="what went wrong, for people")
    instance: str | None = Field(None, description="the request path")
    errors: list[ProblemItem] = Field(default_factory=list, description="the invalid fields (422)")
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
    length: Size | None = Field(None, description="bytes per probed range, 1M..256M (default 64M; 4 ranges)")


class ProbeVerdict(StrEnum):
    fast = "fast"
    advertised_but_slow = "advertised-but-slow"
    refused_but_cheap = "refused-but-cheap"
    refused_quickly = "refused-quickly"
    not_advertised = "not-advertised"


class StorageOut(_Open):
    """A provisioned storage (lab.storage.Provisioned.info)."""

    storage: str
    dir: str
    disk: str | None = None
    filesystem: str = ""
    loop_devices: list[str] = []
    mounts: list[str] = []


class RealServerOut(_Open):
    """What serves the disk under the filter stack (lab.kinds.Backend.info)."""

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


# -- custom sweeps (POST /api/v1/sweeps: app/schemas_sweeps.py; saved in SweepOut.definition) ------

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


class ActOut(_Open):
    key: str
    title: str
    era: str
    summary: str
    takeaway: str = ""
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
