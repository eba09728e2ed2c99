"""What a server (and its source image) is made of: the 'server fields' of the contract.

One validated value object shared by the CLI, the API and the core. Limits live in
`Limits` so the web service can tighten them from its settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from lab.images import parse_pattern
from lab.units import format_delay, format_size, parse_delay, parse_size

ZEROMODES = ("none", "emulate", "notrim", "plugin")
FASTZEROMODES = ("default", "none", "slow", "ignore")
PLUGINS = ("memory", "file")
SOURCE_FORMATS = ("qcow2", "raw")
KINDS = ("nbdkit", "qemu-nbd", "nbd-server", "external")
STORAGES = ("tmpfs", "datadir", "ext4", "xfs", "btrfs", "blockdev")
DISK_FORMATS = ("raw", "qcow2")
DISK_INITS = ("sparse", "data")  # what a file-backed disk holds before the copy
FILE_KINDS = ("qemu-nbd", "nbd-server")  # kinds whose disk is a file (or device) the lab provisions

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_size: int = 4 << 30
    max_delay_ms: float = 1000.0
    min_maxdata: int = 4096
    max_maxdata: int = 32 * MiB


DEFAULT_LIMITS = Limits()


class SpecError(ValueError):
    """A bad server field; `field` names it for CLI and API error messages."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class ServerSpec:
    """A server's knobs plus the source geometry it is paired with (defaults = the talk's)."""

    zeromode: str = "none"
    fastzeromode: str = "default"
    size: int = 100 * MiB
    pattern: str = "alternate:1M"
    maxdata: int = 256 * 1024
    delay_write: float = 20.0  # milliseconds, per backend write
    delay_zero: float = 5.0  # milliseconds, per backend zero
    plugin: str = "memory"
    noextents: bool = True
    source_format: str = "qcow2"
    kind: str = "nbdkit"  # what sits under the filter stack (lab.kinds)
    storage: str | None = None  # where a file-backed server's disk lives (lab.storage); None: its private dir
    disk_format: str = "raw"  # qcow2: qemu-nbd only
    target: str | None = None  # external only: a socket path or host:port listed in LAB_EXTERNAL_TARGETS
    destructive: bool = False  # external only: the run may overwrite the target
    disk_init: str = "sparse"  # "data": every byte written before the copy, like a reused destination

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = "" if self.kind == "nbdkit" and self.plugin == "memory" else \
            f"kind={self.kind} plugin={self.plugin} storage={self.storage or 'private'} "
        return where + (
            f"zeromode={self.zeromode} fastzeromode={self.fastzeromode} size={format_size(self.size)} "
            f"pattern={self.pattern} maxdata={format_size(self.maxdata)} "
            f"delay-write={format_delay(self.delay_write)} delay-zero={format_delay(self.delay_zero)}"
        )

    def with_(self, **changes: Any) -> ServerSpec:
        return replace(self, **changes)


def build_spec(raw: dict[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS) -> ServerSpec:
    """Validate user-supplied server fields (CLI strings or JSON values) into a ServerSpec."""
    raw = dict(raw or {})
    unknown = set(raw) - set(ServerSpec.__dataclass_fields__)
    if unknown:
        name = sorted(unknown)[0]
        raise SpecError(name, "unknown server field")
    base = ServerSpec()
    values: dict[str, Any] = {}

    def choice(name: str, allowed: tuple[str, ...]) -> None:
        if name in raw and raw[name] is not None:
            v = raw[name]
            if not isinstance(v, str) or v not in allowed:
                raise SpecError(name, f"must be one of {', '.join(allowed)} (got {v!r})")
            values[name] = v

    choice("zeromode", ZEROMODES)
    choice("fastzeromode", FASTZEROMODES)
    choice("plugin", PLUGINS)
    choice("source_format", SOURCE_FORMATS)
    choice("kind", KINDS)
    choice("storage", STORAGES)
    choice("disk_format", DISK_FORMATS)
    choice("disk_init", DISK_INITS)
    if raw.get("target") is not None:
        if not isinstance(raw["target"], str) or not 0 < len(raw["target"].strip()) <= 300:
            raise SpecError("target", "must be a Unix socket path or host:port (at most 300 characters)")
        values["target"] = raw["target"].strip()

    for name in ("size", "maxdata"):
        if name in raw and raw[name] is not None:
            try:
                values[name] = parse_size(raw[name])
            except ValueError as e:
                raise SpecError(name, str(e)) from None
    for name in ("delay_write", "delay_zero"):
        if name in raw and raw[name] is not None:
            try:
                values[name] = parse_delay(raw[name])
            except ValueError as e:
                raise SpecError(name, str(e)) from None
    for name in ("noextents", "destructive"):
        if name in raw and raw[name] is not None:
            if not isinstance(raw[name], bool):
                raise SpecError(name, "must be true or false")
            values[name] = raw[name]
    if "pattern" in raw and raw["pattern"] is not None:
        if not isinstance(raw["pattern"], str):
            raise SpecError("pattern", "must be a string such as 'alternate:1M'")
        values["pattern"] = raw["pattern"].strip()

    spec = replace(base, **values)
    check_spec(spec, limits)
    return spec


def check_spec(spec: ServerSpec, limits: Limits = DEFAULT_LIMITS) -> None:
    if spec.size < 1 * MiB or spec.size % 512:
        raise SpecError("size", f"must be at least 1M and a multiple of 512 bytes (got {spec.size})")
    if spec.size > limits.max_size:
        raise SpecError("size", f"must be at most {format_size(limits.max_size)} (got {format_size(spec.size)})")
    if not limits.min_maxdata <= spec.maxdata <= limits.max_maxdata or spec.maxdata % 512:
        raise SpecError(
            "maxdata",
            f"must be a multiple of 512 between {format_size(limits.min_maxdata)} and "
            f"{format_size(limits.max_maxdata)} (got {spec.maxdata})",
        )
    for name in ("delay_write", "delay_zero"):
        v = getattr(spec, name)
        if v > limits.max_delay_ms:
            raise SpecError(name, f"must be at most {limits.max_delay_ms:.0f}ms (got {v:.0f}ms)")
    try:
        parse_pattern(spec.pattern, spec.size)
    except ValueError as e:
        raise SpecError("pattern", str(e)) from None
    check_kind(spec)


def check_kind(spec: ServerSpec) -> None:
    """The kind/storage fields fit together and this machine has them (no connection is made)."""
    if spec.kind == "external":
        _check_external(spec)
    elif spec.target is not None or spec.destructive:
        raise SpecError("target" if spec.target is not None else "destructive", "only for kind external")
    _check_disk(spec)
    _check_available(spec)


def _check_external(spec: ServerSpec) -> None:
    from lab import external

    if spec.storage:
        raise SpecError("storage", "an external server has its own storage")
    try:
        external.check_target(spec.target)
    except external.ExternalError as e:
        raise SpecError(e.field, e.message) from None
    if not spec.destructive:
        raise SpecError("destructive", "a run overwrites the external target: say destructive: true to allow it")


def _check_disk(spec: ServerSpec) -> None:
    file_backed = spec.plugin == "file" or spec.kind in FILE_KINDS
    if spec.storage and spec.kind == "nbdkit" and spec.plugin == "memory":
        raise SpecError("storage", "the memory plugin keeps its disk in RAM: use plugin file, or kind qemu-nbd "
                                   "or nbd-server")
    if spec.disk_format == "qcow2" and spec.kind != "qemu-nbd":
        raise SpecError("disk_format", "qcow2 is served by kind qemu-nbd only")
    if spec.disk_format == "qcow2" and spec.storage == "blockdev":
        raise SpecError("disk_format", "qcow2 needs a filesystem: storage blockdev holds raw only")
    if spec.disk_init == "data" and (not file_backed or spec.disk_format == "qcow2"):
        raise SpecError("disk_init", "data applies to a raw file-backed disk: plugin file, qemu-nbd raw or nbd-server")
    if spec.kind != "nbdkit" and spec.plugin != "memory":
        raise SpecError("plugin", "plugin applies to kind nbdkit only")


def _check_available(spec: ServerSpec) -> None:
    from lab import kinds, storage

    k = kinds.availability()[spec.kind]
    if not k["available"] and spec.kind != "external":
        raise SpecError("kind", str(k["reason"]))
    if spec.storage:
        st = storage.availability()[spec.storage]
        if not st["available"]:
            raise SpecError("storage", f"{spec.storage} is not available here: {st['reason']}")
