"""The zero audit's request and answers (POST /api/v1/audits: lab.nbd.audit as a job of the scheduler)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

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


class AuditOut(AuditSummary):
    """The whole audit as `lab audit --json` prints it (cells, safety, speed, reproducers, upstream_report)
    once done; a summary with its progress while queued or running."""

    safety: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None
    cells: list[dict[str, Any]] | None = None
    reproducers: list[dict[str, Any]] | None = None
    upstream_report: str | None = None
