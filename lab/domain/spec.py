"""What a server (and its source image) is made of: the 'server fields' of the contract, declared once.

`ServerSpec` is the one definition. Each field says, in one place, its type and default
and, in its `ServerField` annotation, its unit kind, bounds (numbers, or names of
`lab.domain.limits.Limits` attributes so the settings can tighten them), choices, help text and
where the dashboard shows it. Everything else is derived from it:

- `check_fields`: THE validator, a whole form at once (every wrong field, one problem each, a sentence
  a person reads); `build_spec` / `check_spec` raise its first problem for the CLI and the core;
  POST /api/validate and the dashboard's form are thin over it;
- `request_model`: the API's request models (app/schemas/runs.py) and so the OpenAPI schema;
- `add_cli_options` / `cli_fields`: the `lab run` options and their help (lab/cli/commands.py);
- `field_table`, `PRESETS`, `spec_text`: the dashboard form and `GET /api/config` (each field's `layer`:
  the page's probes send the "backend" ones, what sits under the filter stack);
- the CSV columns (lab/service/export.py), through `Run.to_dict()`.

Adding a server field is one annotated line in `ServerSpec` (plus its use in lab/nbd/servers.py).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_serializer,
    field_validator,
)

from lab.domain.layout import check_pattern
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.targets import ExternalError, check_target
from lab.domain.units import (
    DELAY_PATTERN,
    SIZE_PATTERN,
    SIZE_SPELLING,
    format_delay,
    format_size,
    parse_delay,
    parse_size,
)

ZEROMODES = ("none", "emulate", "notrim", "plugin")
FASTZEROMODES = ("default", "none", "slow", "ignore")
PLUGINS = ("memory", "file")
SOURCE_FORMATS = ("qcow2", "raw")
KINDS = ("nbdkit", "qemu-nbd", "nbd-server", "external")
STORAGES = ("tmpfs", "shm", "datadir", "ext4", "xfs", "btrfs", "blockdev", "ramfs", "ext2", "vfat")
DISK_FORMATS = ("raw", "qcow2")
DISK_INITS = ("sparse", "data")  # what a file-backed disk holds before the copy
FILE_KINDS = ("qemu-nbd", "nbd-server")  # kinds whose disk is a file (or device) the lab provisions

MiB = 1 << 20
MAX_JSON_INT = 1 << 53  # integers above this do not survive a JavaScript client

__all__ = ["ServerSpec", "SpecError", "build_spec", "check_spec"]

Kind = Literal["choice", "size", "delay", "bool", "layout", "text"]
Layer = Literal["source", "filters", "backend"]


@dataclass(frozen=True)
class ServerField:
    """How one server field is entered, checked, explained and shown (its type and default are on the model).

    `low`/`high` are numbers or names of `Limits` attributes (resolved per settings), or for
    "text" the length; `group` "geometry" fields are what a sweep may override in every row,
    "mode" ones are set per server only (a scenario row fixes them);
    `form` "main" fields are on the dashboard form, "more" ones folded under it;
    `layer` says where the field acts on the way from the source image to the disk: "source" (the
    image copied and its size), "filters" (a parameter of the nbdkit filter stack) or "backend"
    (what sits under the filter stack: the server kind, its plugin and disk; the rules between
    fields, check_kind, are rules between these; the dashboard's probes follow them);
    `noun` names the field at the start of a sentence ("Size must be ...", default its label).
    """

    kind: Kind
    help: str
    choices: tuple[str, ...] = ()
    low: float | str | None = None
    high: float | str | None = None
    multiple: int = 1
    group: Literal["mode", "geometry"] = "geometry"
    form: Literal["main", "more"] = "main"
    examples: tuple[Any, ...] = field(default=())
    enum_name: str | None = None  # a choice field's OpenAPI enum (default: the field's name in CamelCase)
    layer: Layer = "filters"
    noun: str = ""


class SpecError(ValueError):
    """A bad server field; `field` names it for CLI and API error messages. From build_spec,
    `problems` holds every problem check_fields found (this one first): the API names them all."""

    def __init__(self, field_name: str, message: str, problems: tuple[FieldProblem, ...] = ()) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.problems = problems


def _describe(schema: dict[str, Any]) -> None:
    for name, prop in schema.get("properties", {}).items():
        if name in SERVER_FIELDS:
            prop.setdefault("description", SERVER_FIELDS[name].help)


class ServerSpec(BaseModel):
    """A server's knobs plus the source geometry it is paired with (defaults = the talk's)."""

    # Unknown stored fields (from another version) are dropped; requests are checked by build_spec.
    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_extra=_describe)

    zeromode: Annotated[str, ServerField(
        "choice", "nozero filter zeromode: how the server answers zero requests", choices=ZEROMODES,
        group="mode", enum_name="ZeroMode")] = "none"
    fastzeromode: Annotated[str, ServerField(
        "choice", "nozero filter fastzeromode: how it answers fast-zero requests", choices=FASTZEROMODES,
        group="mode", enum_name="FastZeroMode")] = "default"
    size: Annotated[int, ServerField(
        "size", "image size", low=MiB, high="max_size", multiple=512, examples=("16M", 262144 * 64),
        layer="source", noun="Size")] = 100 * MiB
    pattern: Annotated[str, ServerField(
        "layout", "source layout: alternate:DATA[:HOLE], full or empty", examples=("alternate:1M", "full"),
        layer="source", noun="Pattern")] = \
        "alternate:1M"
    maxdata: Annotated[int, ServerField(
        "size", "largest backend write (blocksize filter)", low="min_maxdata", high="max_maxdata", multiple=512,
        examples=("256k", 65536))] = 256 * 1024
    delay_write: Annotated[float, ServerField(
        "delay", "delay per backend write", low=0, high="max_delay_ms", examples=("20ms", 5),
        noun="Delay per write")] = 20.0
    delay_zero: Annotated[float, ServerField(
        "delay", "delay per backend zero", low=0, high="max_delay_ms", examples=("5ms", 0),
        noun="Delay per zero")] = 5.0
    plugin: Annotated[str, ServerField("choice", "nbdkit plugin", choices=PLUGINS, layer="backend")] = "memory"
    noextents: Annotated[bool, ServerField(
        "bool", "hide block status (extents) from clients", form="more")] = True
    source_format: Annotated[str, ServerField(
        "choice", "format of the source image", choices=SOURCE_FORMATS, form="more", layer="source")] = "qcow2"
    kind: Annotated[str, ServerField(
        "choice", "server kind under the filter stack; see GET /api/kinds for what this machine has",
        choices=KINDS, group="mode", layer="backend")] = "nbdkit"
    storage: Annotated[str | None, ServerField(
        "choice", "where a file-backed server's disk lives (plugin file, qemu-nbd, nbd-server); none: its private "
        "dir", choices=STORAGES, group="mode", layer="backend")] = None
    disk_format: Annotated[str, ServerField(
        "choice", "qemu-nbd's disk format", choices=DISK_FORMATS, group="mode", layer="backend")] = "raw"
    target: Annotated[str | None, ServerField(
        "text", "kind external: a Unix socket path or host:port listed in LAB_EXTERNAL_TARGETS", low=1, high=300,
        group="mode", form="more", layer="backend")] = None
    destructive: Annotated[bool, ServerField(
        "bool", "kind external: allow overwriting the target", group="mode", form="more",
        layer="backend")] = False
    disk_init: Annotated[str, ServerField(
        "choice", "what a file-backed disk holds before the copy: sparse, or data (every byte written, like a "
        "reused destination)", choices=DISK_INITS, group="mode", form="more", layer="backend")] = "sparse"

    @field_validator("plugin", mode="before")
    @classmethod
    def _no_plugin_is_the_default(cls, v: Any) -> Any:
        return "memory" if v is None else v  # as written out for kinds without a plugin (below)

    @field_serializer("plugin")
    def _plugin_only_where_it_applies(self, v: str) -> str | None:
        """qemu-nbd, nbd-server and external targets have no nbdkit plugin: their JSON says null, not memory."""
        return v if self.kind == "nbdkit" else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def describe(self) -> str:
        t = spec_text(self)
        plugin = f"plugin={self.plugin} " if self.kind == "nbdkit" else ""
        where = "" if self.kind == "nbdkit" and self.plugin == "memory" else \
            f"kind={self.kind} {plugin}storage={self.storage or 'private'} "
        return where + (f"zeromode={t['zeromode']} fastzeromode={t['fastzeromode']} size={t['size']} "
                        f"pattern={t['pattern']} maxdata={t['maxdata']} delay-write={t['delay_write']} "
                        f"delay-zero={t['delay_zero']}")

    def with_(self, **changes: Any) -> ServerSpec:
        """A copy with `changes`, unchecked (tests use it to build what build_spec would refuse)."""
        return self.model_copy(update=changes)


def _field_meta() -> dict[str, ServerField]:
    out = {}
    for name, info in ServerSpec.model_fields.items():
        metas = [m for m in info.metadata if isinstance(m, ServerField)]
        if len(metas) != 1:
            raise TypeError(f"ServerSpec.{name} needs exactly one ServerField annotation")
        out[name] = metas[0]
    return out


SERVER_FIELDS: dict[str, ServerField] = _field_meta()
DEFAULTS = ServerSpec()


def fields_on(layer: Layer) -> tuple[str, ...]:
    """The fields of one layer, in the model's order (fields_on("backend"): what sits under the filter stack)."""
    return tuple(name for name, meta in SERVER_FIELDS.items() if meta.layer == layer)


# -- values as text (CLI defaults, error messages, the dashboard) ---------------------------------


def text(name: str, value: Any) -> str:
    """A field's value as a person types it: 100M, 20ms, true ("" for none)."""
    kind = SERVER_FIELDS[name].kind
    if value is None:
        return ""
    if kind == "size":
        return format_size(int(value))
    if kind == "delay":
        return format_delay(value)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


def spec_text(spec: ServerSpec) -> dict[str, str]:
    return {name: text(name, getattr(spec, name)) for name in SERVER_FIELDS}


def bounds(name: str, limits: Limits = DEFAULT_LIMITS) -> tuple[float, float, int] | None:
    """(low, high, multiple) of a numeric field under these limits; None when it has none."""
    meta = SERVER_FIELDS[name]
    if meta.low is None or meta.high is None or meta.kind == "text":
        return None

    def resolve(v: float | str) -> float:
        return getattr(limits, v) if isinstance(v, str) else v

    return resolve(meta.low), resolve(meta.high), meta.multiple


# -- input: what a request or a command line may say ----------------------------------------------


def _size_in(api: bool) -> Any:
    pattern = API_SIZE_PATTERN if api else SIZE_PATTERN
    spelling = "a whole number with k, M or G" if api else "a number with k, M, G or T"

    def check(v: Any) -> int:
        if isinstance(v, float) and not isinstance(v, bool):  # JSON Schema's integer: 16777216.0 is 16777216
            if not v.is_integer():
                raise ValueError(f"a size is a whole number of bytes (got {v!r})")
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError("a size is an integer number of bytes or a string with a unit such as '16M'")
        if isinstance(v, int) and not 0 <= v <= MAX_JSON_INT:
            raise ValueError(f"a size must be between 0 and {MAX_JSON_INT} bytes")
        if isinstance(v, str) and (len(v) > 64 or not _match(pattern, v)):
            raise ValueError(f"{v[:40]!r} is not a size: use an integer of bytes, or {spelling} (such as 16M)")
        return parse_size(v)

    return check


def _delay_in(api: bool) -> Any:
    pattern = API_DELAY_PATTERN if api else DELAY_PATTERN
    spelling = "a whole number" if api else "a number"

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError("a delay is a number of milliseconds or a string with a unit such as '20ms'")
        if isinstance(v, int) and not 0 <= v <= MAX_JSON_INT:
            raise ValueError(f"a delay must be between 0 and {MAX_JSON_INT} milliseconds")
        if isinstance(v, str) and (len(v) > 64 or not _match(pattern, v)):
            raise ValueError(f"{v[:40]!r} is not a delay: use a number of milliseconds, or {spelling} with ms "
                             "or s (such as 20ms)")
        return parse_delay(v)

    return check


# The grammar of a source layout; lab.domain.layout.check_pattern then checks alignment and extents.
LAYOUT_PATTERN = rf"^\s*(full|empty|alternate:{SIZE_SPELLING}(:{SIZE_SPELLING})?)\s*$"

# The API's spellings: a subset of the above (a whole number with a unit, no spaces), narrow enough
# that the OpenAPI document says exactly which strings are accepted (app/openapi.py narrows them
# further to an instance's bounds). The CLI and the core take every spelling of lab.domain.units.
API_SIZE_PATTERN = r"^[1-9][0-9]{0,14}[kKmMgG]$"
API_DELAY_PATTERN = r"^(0|[1-9][0-9]{0,11})(ms|s)$"
# A pattern's lengths: M or G, or k in multiples of 4 (4k-aligned), as lab.domain.layout.check_pattern needs.
_LENGTH = r"([1-9][0-9]{0,5}[mMgG]|([48]|[2468][048]|[13579][26]|[1-9][0-9]{0,3}([02468][048]|[13579][26]))[kK])"
API_LAYOUT_PATTERN = rf"^(full|empty|alternate:{_LENGTH}(:{_LENGTH})?)$"


def _layout_in(api: bool) -> Any:
    pattern = API_LAYOUT_PATTERN if api else LAYOUT_PATTERN
    lengths = "; lengths in M, G or multiples of 4k" if api else ""

    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError("a pattern is a string such as 'alternate:1M', 'full' or 'empty'")
        if len(v) > 64 or not _match(pattern, v):
            raise ValueError(f"{v[:40]!r} is not a pattern: use alternate:DATA[:HOLE] (such as alternate:1M"
                             f"{lengths}), full or empty")
        return v.strip()

    return check


def _match(pattern: str, value: str) -> bool:
    return re.match(pattern, value) is not None


_ENUMS: dict[str, type[StrEnum]] = {}


def _enum(name: str, choices: tuple[str, ...]) -> type[StrEnum]:
    """One enum per choice field (an OpenAPI component named after the field: Plugin, SourceFormat)."""
    if name not in _ENUMS:
        title = SERVER_FIELDS[name].enum_name if name in SERVER_FIELDS else None
        title = title or "".join(p.title() for p in name.split("_"))
        _ENUMS[name] = StrEnum(title, {c: c for c in choices})  # type: ignore[misc]
    return _ENUMS[name]


def enum_of(name: str) -> type[StrEnum]:
    """The enum of a choice field (shared by every model and parameter that takes it)."""
    return _enum(name, SERVER_FIELDS[name].choices)


def _input_type(name: str, meta: ServerField, api: bool = True) -> Any:
    examples = list(meta.examples)
    if meta.kind == "choice":
        return _enum(name, meta.choices)
    if meta.kind == "text":
        return Annotated[str, StringConstraints(strip_whitespace=True, min_length=int(meta.low or 0),
                                                max_length=int(meta.high or 300))]
    if meta.kind == "bool":
        return StrictBool
    if meta.kind == "layout":
        return Annotated[str, PlainValidator(_layout_in(api)), WithJsonSchema(
            {"type": "string", "pattern": API_LAYOUT_PATTERN if api else LAYOUT_PATTERN, "maxLength": 64,
             "examples": examples})]
    if meta.kind == "size":
        return Annotated[int, PlainValidator(_size_in(api)), WithJsonSchema({
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_JSON_INT},
                      {"type": "string", "pattern": API_SIZE_PATTERN if api else SIZE_PATTERN}],
            "description": "bytes, or a whole number with a binary unit: 512k, 16M, 1G", "examples": examples})]
    return Annotated[float, PlainValidator(_delay_in(api)), WithJsonSchema({
        "anyOf": [{"type": "number", "minimum": 0},
                  {"type": "string", "pattern": API_DELAY_PATTERN if api else DELAY_PATTERN}],
        "description": "milliseconds (a whole number), or a whole number with a unit: 20ms, 1s",
        "examples": examples})]


# A size as a request may give it ("64M" or bytes), for request fields that are not server fields.
SizeIn = _input_type("size", ServerField("size", "bytes", examples=("64M",)))


class FieldsIn(BaseModel):
    """Base of the request models: every server field optional (absent = the default), nothing else allowed."""

    model_config = ConfigDict(extra="forbid")

    def raw(self) -> dict[str, Any]:
        """The fields that were given, as plain values for build_spec."""
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in self.model_dump(exclude_none=True).items()}


def request_model(model_name: str, groups: tuple[str, ...] = ("mode", "geometry"), doc: str = "",
                  api: bool = True) -> type[FieldsIn]:
    """A request model with the server fields of these groups, each optional, parsed (units) and typed.
    `api`: the API's narrow unit spellings; else every spelling lab.domain.units takes (the CLI, scenario rows)."""
    fields: dict[str, Any] = {}
    for name, meta in SERVER_FIELDS.items():
        if meta.group in groups:
            desc = f"{meta.help} (default {text(name, getattr(DEFAULTS, name))})"
            fields[name] = (_input_type(name, meta, api) | None, Field(None, description=desc))
    return create_model(model_name, __base__=FieldsIn, __doc__=doc or FieldsIn.__doc__, **fields)


_ALL_IN = request_model("ServerFieldsIn", api=False)


def partial_model(model_name: str, base: type[BaseModel], doc: str) -> type[BaseModel]:
    """A response model with every server field optional, normalised (a row's or a filter's fields)."""
    fields = {name: (info.annotation | None, Field(None, description=SERVER_FIELDS[name].help))
              for name, info in ServerSpec.model_fields.items()}
    return create_model(model_name, __base__=base, __doc__=doc, **fields)


# -- the one validator: every field of a form, each problem named -----------------------------------


@dataclass(frozen=True)
class FieldProblem:
    """One server field's problem. `message` is worded after the field's name (the CLI prints
    "--size: must be ..."); `sentence` is the whole sentence a person reads under the field."""

    field: str
    message: str
    code: str = "value_error"  # pydantic's error type for a value that did not parse (enum, bool_type, ...)

    @property
    def sentence(self) -> str:
        meta = SERVER_FIELDS.get(self.field)
        noun = (meta.noun if meta else "") or self.field.replace("_", "-")
        words = self.message
        first = words.split(" ", 1)[0]
        if words.startswith(("must ", "is ")):
            words = f"{noun} {words}"
        elif first.isalpha() and first not in _CHOICE_WORDS:  # "qcow2 is ...", "xfs is ...": values keep their case
            words = words[:1].upper() + words[1:]
        return words if words.endswith((".", ")")) else words + "."

    def error(self, problems: tuple[FieldProblem, ...] = ()) -> SpecError:
        return SpecError(self.field, self.message, problems)


@dataclass(frozen=True)
class FormCheck:
    """What check_fields found: the spec when every field is good, else every problem (one per field,
    in order: values that do not parse, then bounds, then the rules between fields)."""

    spec: ServerSpec | None
    problems: tuple[FieldProblem, ...]


_CHOICE_WORDS = frozenset(c for meta in SERVER_FIELDS.values() for c in meta.choices)
_TYPED = ("size", "delay", "layout")  # typed as text on a form: an empty one is a mistake, not "the default"
_API_IN = request_model("ServerFieldsApi", api=True)


def _message(name: str, err: dict[str, Any]) -> str:
    kind = err.get("type")
    meta = SERVER_FIELDS.get(name)
    if kind == "extra_forbidden" or meta is None:
        return "is not a server field"
    if kind == "enum":
        return f"must be one of {', '.join(meta.choices)} (got {err.get('input')!r})"
    if meta.kind == "bool":
        return f"must be true or false (got {err.get('input')!r})"
    if meta.kind == "text":
        return f"must be text of {int(meta.low or 0)} to {int(meta.high or 300)} characters"
    cause = (err.get("ctx") or {}).get("error")
    return str(cause) if isinstance(cause, ValueError) else str(err.get("msg"))


def _empty(name: str, value: Any) -> bool:
    return name in SERVER_FIELDS and SERVER_FIELDS[name].kind in _TYPED and isinstance(value, str) \
        and not value.strip()


def _parse(given: dict[str, Any], api: bool) -> tuple[dict[str, Any], list[FieldProblem]]:
    """Each field on its own: the values that parse, and a problem (in the model's order) for each one that does not."""
    problems = [FieldProblem(name, f"is empty: type one, such as {text(name, getattr(DEFAULTS, name))}")
                for name, v in given.items() if _empty(name, v)]
    model = _API_IN if api else _ALL_IN
    try:
        model.model_validate({k: v for k, v in given.items() if k not in {p.field for p in problems}})
    except ValidationError as e:
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else "server"
            problems.append(FieldProblem(name, _message(name, err), str(err.get("type", "value_error"))))
    order = list(SERVER_FIELDS)
    problems.sort(key=lambda p: order.index(p.field) if p.field in order else len(order))
    bad = {p.field for p in problems}
    return model.model_validate({k: v for k, v in given.items() if k not in bad}).raw(), problems


def normal_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The given fields, each parsed on its own (every spelling; no limits, no rules between fields),
    as runs echo them: {"size": "16M"} -> {"size": 16777216}. A field that does not parse is kept as
    given (build_spec names it)."""
    values, _ = _parse(dict(raw), api=False)
    return {k: values.get(k, v) for k, v in raw.items()}


def _bound_problems(spec: ServerSpec, limits: Limits) -> Iterator[FieldProblem]:
    for name in SERVER_FIELDS:
        b = bounds(name, limits)
        if b is None:
            continue
        low, high, multiple = b
        value = getattr(spec, name)
        if not low <= value <= high or value % multiple:
            unit = " bytes" if SERVER_FIELDS[name].kind == "size" and multiple > 1 else ""
            step = f" and a multiple of {multiple}{unit}" if multiple > 1 else ""
            yield FieldProblem(name, f"must be between {text(name, low)} and {text(name, high)}{step} "
                                     f"(got {text(name, value)})")


def _layout_problem(spec: ServerSpec) -> FieldProblem | None:
    try:
        check_pattern(spec.pattern, spec.size)
    except ValueError as e:
        return FieldProblem("pattern", str(e))
    return None


# Whether this machine has a kind or a storage is not a property of the fields: lab.nbd.backends.Machine
# knows it, and whoever accepts fields for work on this machine hands it in (the manager, the CLI). It
# names each field this machine cannot serve; without it only the fields themselves are checked.
MachineCheck = Callable[["ServerSpec"], Iterable["FieldProblem"]]


def check_fields(raw: dict[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS, *,
                 api: bool = False, machine: MachineCheck | None = None) -> FormCheck:
    """THE validator of server fields, for a whole form at once: every field is checked, and each
    wrong one gets one problem. `api`: the API's narrow unit spellings; else every spelling of
    lab.domain.units (the CLI, scenario rows). A field that does not parse is left at its default for
    the later checks; the rules between the backend fields (kind, plugin, storage, ...) run only
    when those all parsed, so a mistyped kind does not blame the storage. `machine`: see MachineCheck."""
    values, found = _parse(dict(raw or {}), api)
    spec = ServerSpec(**values)
    bad = {p.field for p in found}
    found += [p for p in _bound_problems(spec, limits) if p.field not in bad]
    bad = {p.field for p in found}
    if not bad & {"size", "pattern"}:
        found += [p for p in [_layout_problem(spec)] if p is not None]
    if not bad & set(fields_on("backend")):
        for p in kind_problems(spec, limits, machine):
            if p.field not in bad:
                found.append(p)
                bad.add(p.field)
    first: dict[str, FieldProblem] = {}
    for p in found:
        first.setdefault(p.field, p)
    problems = tuple(first.values())
    return FormCheck(None if problems else spec, problems)


def build_spec(raw: dict[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS,
               machine: MachineCheck | None = None) -> ServerSpec:
    """Validate user-supplied server fields (CLI strings or JSON values) into a ServerSpec;
    SpecError names the first wrong field (check_fields lists them all)."""
    check = check_fields(raw, limits, machine=machine)
    if check.spec is None:
        raise check.problems[0].error(check.problems)
    return check.spec


def check_spec(spec: ServerSpec, limits: Limits = DEFAULT_LIMITS, machine: MachineCheck | None = None) -> None:
    """The bounds of every numeric field (from `limits`), the layout fits the size, the kind rules."""
    p = next(_bound_problems(spec, limits), None) or _layout_problem(spec) or \
        next(kind_problems(spec, limits, machine), None)
    if p is not None:
        raise p.error()


def kind_problems(spec: ServerSpec, limits: Limits = DEFAULT_LIMITS,
                  machine: MachineCheck | None = None) -> Iterator[FieldProblem]:
    """Every broken rule between the backend fields, and (given `machine`) what this machine lacks."""
    if spec.kind == "external":
        yield from _external_problems(spec, limits)
    else:
        if spec.target is not None:
            yield FieldProblem("target", "only for kind external")
        if spec.destructive:
            yield FieldProblem("destructive", "only for kind external")
    yield from _disk_problems(spec)
    if machine is not None:
        yield from machine(spec)


def _external_problems(spec: ServerSpec, limits: Limits) -> Iterator[FieldProblem]:
    if spec.storage:
        yield FieldProblem("storage", "an external server has its own storage")
    try:
        check_target(spec.target, limits)
    except ExternalError as e:
        yield FieldProblem(e.field, e.message)
    if not spec.destructive:
        yield FieldProblem("destructive", "a run overwrites the external target: say destructive: true to allow it")


def _disk_problems(spec: ServerSpec) -> Iterator[FieldProblem]:
    file_backed = spec.plugin == "file" or spec.kind in FILE_KINDS
    if spec.storage and spec.kind == "nbdkit" and spec.plugin == "memory":
        yield FieldProblem("storage", "the memory plugin keeps its disk in RAM: use plugin file, or kind qemu-nbd "
                                      "or nbd-server")
    if spec.disk_format == "qcow2" and spec.kind != "qemu-nbd":
        yield FieldProblem("disk_format", "qcow2 is served by kind qemu-nbd only")
    if spec.disk_format == "qcow2" and spec.storage == "blockdev":
        yield FieldProblem("disk_format", "qcow2 needs a filesystem: storage blockdev holds raw only")
    if spec.disk_init == "data" and (not file_backed or spec.disk_format == "qcow2"):
        yield FieldProblem("disk_init", "data applies to a raw file-backed disk: plugin file, qemu-nbd raw or "
                                        "nbd-server")
    if spec.kind != "nbdkit" and spec.plugin != "memory":
        yield FieldProblem("plugin", "plugin applies to kind nbdkit only")


# -- the command line -----------------------------------------------------------------------------


def option(name: str) -> str:
    """A field's command-line option: delay_write -> --delay-write."""
    return "--" + name.replace("_", "-")


def cli_help(name: str, limits: Limits = DEFAULT_LIMITS) -> str:
    meta = SERVER_FIELDS[name]
    extra = f": {', '.join(meta.choices)}" if meta.choices else ""
    b = bounds(name, limits)
    if b is not None:
        extra = f", {text(name, b[0])} to {text(name, b[1])}"
    return f"{meta.help}{extra} (default {text(name, getattr(DEFAULTS, name))})".replace("%", "%%")


def _flag(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"use true or false (got {text!r})")


def add_cli_options(parser: argparse.ArgumentParser, limits: Limits = DEFAULT_LIMITS) -> None:
    """One option per server field; absent options stay None, so build_spec applies the model's defaults."""
    for name, meta in SERVER_FIELDS.items():
        if meta.kind == "bool":  # --noextents, --noextents true, --noextents false
            parser.add_argument(option(name), dest=name, nargs="?", const=True, default=None, type=_flag,
                                metavar="true|false", help=cli_help(name, limits))
        else:
            parser.add_argument(option(name), dest=name, default=None, metavar=name.upper(),
                                help=cli_help(name, limits))


def cli_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SERVER_FIELDS if getattr(args, name, None) is not None}


# -- the dashboard --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    title: str
    key: str  # keyboard shortcut on the lab page
    fields: dict[str, Any]


PRESETS: dict[str, Preset] = {
    "A": Preset("Server A", "a", {"zeromode": "plugin", "fastzeromode": "default"}),
    "B": Preset("Server B", "b", {"zeromode": "emulate", "fastzeromode": "default"}),
    "baseline": Preset("Baseline", "0", {"zeromode": "none", "fastzeromode": "default"}),
}


def field_table(limits: Limits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """Every server field as the dashboard (and GET /api/config) needs it: default, limits, choices, help."""
    rows = []
    for name, meta in SERVER_FIELDS.items():
        default = getattr(DEFAULTS, name)
        row: dict[str, Any] = {
            "name": name, "label": name.replace("_", "-"), "option": option(name), "kind": meta.kind,
            "help": meta.help, "default": default, "default_text": text(name, default),
            "choices": list(meta.choices), "group": meta.group, "form": meta.form, "layer": meta.layer,
        }
        b = bounds(name, limits)
        if b is not None:
            low, high, multiple = b
            row.update(min=low, max=high, multiple=multiple, min_text=text(name, low), max_text=text(name, high))
        rows.append(row)
    return rows


def presets() -> dict[str, dict[str, Any]]:
    return {k: {"title": p.title, "key": p.key, "fields": dict(p.fields),
                "summary": " ".join(f"{n}={v}" for n, v in p.fields.items())} for k, p in PRESETS.items()}


def normalise(spec: ServerSpec) -> dict[str, Any]:
    """For POST /api/validate: a checked spec as numbers and as text (the page formats nothing itself)."""
    return {"server": spec.to_dict(), "text": spec_text(spec)}

