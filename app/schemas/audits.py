"""The zero audit's request and answers (POST /api/v1/audits: lab.nbd.audit as a job of the scheduler)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    model_serializer,
)

from app.schemas.runs import whole
from lab.domain.spec import STORAGES, SizeIn

# A storage the lab makes, path:/DIR (below a directory in LAB_AUDIT_PATHS) or dev:/dev/X (LAB_AUDIT_DEVICES).
PLACE_PATTERN = rf"^({'|'.join(STORAGES)}|path:/[^\x00]{{0,299}}|dev:/dev/[A-Za-z0-9/_.-]{{1,100}})$"
# A request size as the matrix names them: 64M, 64M+4K, 64M-4K, 64K+1@1 (1 byte into a 4 KiB block).
SIZE_ITEM = r"^[0-9]{1,10}[kKmMgG]?([+-][0-9]{1,10}[kKmMgG]?)?(@[0-9]{1,4})?$"


class AuditKind(StrEnum):
    nbdkit = "nbdkit"
    qemu_nbd = "qemu-nbd"
    nbd_server = "nbd-server"
    external = "external"


class AuditFlags(StrEnum):
    none = "none"
    no_hole = "no-hole"
    fast_zero = "fast-zero"
    no_hole_fast_zero = "no-hole+fast-zero"


class AuditDisk(StrEnum):
    dirty = "dirty"
    sparse = "sparse"


class AuditServer(BaseModel):
    """The server to audit, started bare (no filter stack, no proxy) on a disk the audit provisions."""

    model_config = ConfigDict(extra="forbid")

    kind: AuditKind = AuditKind.nbdkit
    plugin: Annotated[str, StringConstraints(pattern=r"^(memory|file)$")] | None = Field(
        None, description="nbdkit's plugin: memory, or file (default: file with a storage, else memory)")
    storage: Annotated[str, StringConstraints(pattern=PLACE_PATTERN, max_length=320)] | None = Field(
        None, description="where the disk lives: a storage the lab makes (see GET /api/v1/kinds), path:/DIR "
                          "(below a directory listed in LAB_AUDIT_PATHS) or dev:/dev/X (listed in LAB_AUDIT_DEVICES, "
                          "with destructive); default tmpfs", examples=["tmpfs", "ext2", "ramfs"])
    disk_format: Annotated[str, StringConstraints(pattern=r"^(raw|qcow2)$")] | None = Field(
        None, description="qemu-nbd's disk format (default raw)")
    target: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = Field(
        None, description="kind external: a Unix socket path or host:port listed in LAB_EXTERNAL_TARGETS")
    destructive: StrictBool = Field(False, description="allow overwriting an external target or a device")


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: AuditServer = Field(default_factory=AuditServer)
    sizes: list[Annotated[str, StringConstraints(pattern=SIZE_ITEM)]] | None = Field(
        None, max_length=32, description="request sizes (default 4K to 1G, 64M +- 4K, unaligned ones)",
        examples=[["4K", "64M-4K", "64M+4K", "128M"]])
    quick: StrictBool = Field(False, description="a shorter list of sizes (4K to 128M, the 64 MiB edges)")
    max_size: SizeIn | None = Field(None, description="leave out requests larger than this (at most LAB_MAX_SIZE)")
    flags: list[AuditFlags] | None = Field(None, max_length=4, description="zero flags (default all four)")
    disks: list[AuditDisk] | None = Field(None, max_length=2, description="disk states (default both)")
    inflight: whole(1, 16) | None = Field(  # type: ignore[valid-type]
        None, description="requests at once in the 'several in flight' groups (1: none; default 4)")
    deadline_s: Annotated[float, Field(gt=0, le=14400, strict=True)] = Field(
        1800.0, description="stop after this many seconds")


class AuditProgress(BaseModel):
    done: int | None = None
    total: int | None = None
    current: str | None = None


class AuditSummary(BaseModel):
    """An audit in a list: where it is, and its verdict once done."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: str = Field(description="queued, running, done, incomplete (deadline), cancelled, failed, interrupted")
    label: str | None = None
    verdict: str | None = Field(None, description="unsafe, or the speed verdict (fast, not-advertised-cheap, ...)")
    progress: AuditProgress | None = None


class AuditList(BaseModel):
    audits: list[AuditSummary]


class _Open(BaseModel):
    """What lab.nbd.audit writes: every key it names is declared (a later audit version may add more), and
    the answer holds the keys the record holds, no more (an optional key it lacks is not sent as null)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_serializer(mode="wrap")
    def _as_recorded(self, handler: SerializerFunctionWrapHandler):  # no return type: the schema stays the model's
        out = handler(self)
        unset = {f.alias or n for n, f in type(self).model_fields.items() if n not in self.model_fields_set}
        return {k: v for k, v in out.items() if k not in unset}


class AuditFirstBad(_Open):
    """The first cell that read back wrong (lab.nbd.audit_verdict.safety)."""

    cell: str = Field(description="the cell's id, GROUP.REPEAT")
    request: str = Field(description="the request's key: size, flags, disk state")
    position: str = Field(description="first or repeated on its connection")
    offset: int | None = Field(None, description="the first bad byte's offset on the disk")
    offset_in_request: int | None = Field(None, description="the first bad byte's offset into the request")
    bytes: int | None = Field(None, description="bytes that read back wrong")
    outside_range: bool = Field(description="true: a byte beside the zeroed range changed; false: a stale byte in it")
    ranges: list[list[int]] | None = Field(None, description="[offset, length] of the bad stretches")


class AuditSafety(_Open):
    """Is the zero safe: one cell that read back wrong makes the audit unsafe."""

    unsafe: bool
    cells: int = Field(description="cells (requests) sent")
    bad_cells: int
    bad_keys: list[str] = Field(description="the keys of the requests that read back wrong")
    first_bad: AuditFirstBad | None = None


class AuditSpeed(_Open):
    """The speed verdict and the cheap/dear class of each zero kind (lab.nbd.audit_verdict.speed)."""

    verdict: str = Field(description="fast, advertised-but-slow, refused-but-cheap, refused-quickly, "
                                     "not-advertised-cheap, not-advertised-dear, not-advertised, no-zero or unknown")
    why: str
    zero: str | None = Field(None, description="a plain zero: cheap, dear, unknown or the request's outcome")
    no_hole: str | None = Field(None, description="a NO_HOLE zero: cheap, dear, unknown or the request's outcome")
    fast_zero: str | None = Field(None, description="a fast zero: cheap, dear, unknown or the request's outcome")


class AuditDamage(_Open):
    """What a read-back found wrong in one stretch."""

    bad_bytes: int
    first_bad: int | None = None
    ranges: list[list[int]] = Field(description="[offset, length] of bad stretches (merged, at most 32)")


class AuditPrepared(_Open):
    """How the range was prepared before the zero: written (dirty) or made a hole (sparse)."""

    disk: str = Field(description="dirty or sparse")
    write_s: float | None = Field(None, description="dirty: seconds to write the range (the overwrite compared)")
    sparse_by: str | None = Field(None, description="sparse: how the holes were made")
    unreachable: str | None = Field(None, description="why the range could not be prepared (the cell skipped)")


class AuditSample(_Open):
    """What the storage held and had been sent, read before or after a request (None: not measurable here)."""

    allocated: int | None = None
    device_written: int | None = None
    server_wchar: int | None = None


class AuditEvidence(_Open):
    before: AuditSample
    after: AuditSample


class AuditMechanism(_Open):
    """What nbdkit's file plugin said it did for a zero (its debug)."""

    how: str
    cheap: bool | None = None


class AuditCost(_Open):
    """Was a zero that succeeded cheap or dear, and the evidence that decided it."""

    allocated_delta: int | None = None
    device_written: int | None = None
    server_wrote: int | None = None
    mechanism: AuditMechanism | None = None
    vs_overwrite: float | None = Field(None, description="the zero's seconds over an overwrite's of the range")
    seconds: float
    class_: str = Field(alias="class", description="cheap, dear or unknown")
    basis: str = Field(description="the evidence that decided the class")


class AuditCell(_Open):
    """One zero request (or several in flight) and what it did (lab.nbd.audit_run)."""

    index: int = Field(description="the group (connection) it was sent on")
    key: str
    size: int
    size_text: str
    misalign: int
    flags: str
    disk: str
    inflight: int
    position: str = Field(description="first or repeated on its connection")
    cell: str
    outcome: str = Field(description="ok, refused, partly-refused, invalid, error, skipped, interrupted, "
                                     "not-advertised or not-allowed")
    why: str | None = None
    prepared: AuditPrepared | None = None
    errors: list[str] | None = None
    zero_s: float | None = None
    flush_s: float | None = None
    request_s: list[float] | None = None
    evidence: AuditEvidence | None = None
    debug: list[str] | None = Field(None, description="the server's debug lines during the request")
    stale: AuditDamage | None = Field(None, description="non-zero bytes read back inside the zeroed range")
    outside: AuditDamage | None = Field(None, description="bytes changed beside the zeroed range")
    unsafe: bool | None = None
    warning: str | None = None
    cost: AuditCost | None = None


class AuditReproducer(_Open):
    """A script that shows one bad cell again with nbdsh, outside the lab."""

    cell: str
    request: str
    position: str
    server: str = Field(description="the server's command line, as the script starts it")
    audit_argv: list[str] | None = Field(None, description="the server's command line in the audit")
    nbdsh: str
    check: str
    script: str


class AuditOut(AuditSummary):
    """The whole audit as `lab audit --json` prints it (cells, safety, speed, reproducers, upstream_report)
    once done; a summary with its progress while queued or running."""

    safety: AuditSafety | None = None
    speed: AuditSpeed | None = None
    cells: list[AuditCell] | None = None
    reproducers: list[AuditReproducer] | None = None
    upstream_report: str | None = None
