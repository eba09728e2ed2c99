"""The filters of every list and export of runs (/runs, /results.json, /results.csv): one
dependency, so they cannot drift apart. Server fields filter as runs echo them, and take the
same spellings as a request body: `?size=8M` or `?size=8388608`, `?delay_write=20ms` or `20`.
"""

from __future__ import annotations

import inspect
import math
import re
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import PlainValidator, WithJsonSchema

from app.schemas.runs import ClientId, RunStatus
from app.schemas.unitregex import SIZE_UNITS, with_units
from lab.domain import spec
from lab.domain.spec import API_DELAY_PATTERN, MAX_JSON_INT, ServerField
from lab.domain.units import parse_delay, parse_size

_SIZE_WITH_UNIT = r"^(0|[1-9][0-9]{0,14})[kKmMgG]$"  # as a body's API_SIZE_PATTERN, 0K too (a filter matches it)
_NUMBER = re.compile(r"^-?[0-9]{1,16}(\.[0-9]*)?([eE][-+]?[0-9]{1,3})?$")  # JSON's numbers


def _size(v: Any) -> int:
    text = str(v).strip()
    if text.isdigit() and len(text) <= 16:
        n = int(text)
    elif re.match(_SIZE_WITH_UNIT, text):
        n = parse_size(text)
    else:
        raise ValueError(f"{text[:40]!r} is not a size: bytes, or a whole number with k, M or G (such as 16M)")
    if n > MAX_JSON_INT:
        raise ValueError(f"a size must be between 0 and {MAX_JSON_INT} bytes")
    return n


def _delay(v: Any) -> float:
    """Milliseconds as any JSON number (5, 5.0, 5e0) or a whole number with a unit; a filter value that
    no run has (5.5) simply matches nothing."""
    text = str(v).strip()
    if re.match(API_DELAY_PATTERN, text):
        ms = parse_delay(text)
    else:
        try:
            ms = float(text) if _NUMBER.match(text) else math.nan
        except ValueError:
            ms = math.nan
        if math.isnan(ms):
            raise ValueError(f"{text[:40]!r} is not a delay: milliseconds, or a whole number with ms or s "
                             "(such as 20ms)")
    if not 0 <= ms <= MAX_JSON_INT:
        raise ValueError(f"a delay must be between 0 and {MAX_JSON_INT} milliseconds")
    return ms


# The document's size pattern says the bound too (a size above 2^53 bytes is refused, as the number is);
# a delay's pattern is bounded already (12 digits of seconds).
SizeQ = Annotated[int, PlainValidator(_size), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_JSON_INT},
              {"type": "string", "pattern": with_units(0, MAX_JSON_INT, SIZE_UNITS)}]})]
DelayQ = Annotated[float, PlainValidator(_delay), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0, "maximum": MAX_JSON_INT},
              {"type": "string", "pattern": API_DELAY_PATTERN}]})]


def _server_param(name: str, meta: ServerField) -> inspect.Parameter:
    annotation: Any
    if meta.kind == "choice":
        annotation = spec.enum_of(name) | None
    elif meta.kind == "bool":
        annotation = bool | None
    elif meta.kind == "size":
        annotation = Annotated[SizeQ | None, Query(description="bytes, or with a unit: 16M")]
    elif meta.kind == "delay":
        annotation = Annotated[DelayQ | None, Query(description="milliseconds, or with a unit: 20ms")]
    else:
        annotation = Annotated[str | None, Query(max_length=int(meta.high or 64))]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def _value(v: Any) -> Any:
    return v.value if isinstance(v, StrEnum) else v


IdQ = Annotated[str | None, Query(max_length=64)]
# The filters besides the server fields, in the order the OpenAPI document lists them.
_RUN_PARAMS = [
    ("status", RunStatus | None, None),
    ("client", ClientId | None, None),
    ("sweep_id", Annotated[str | None, Query(max_length=64, description="only this sweep's runs")], None),
    ("server_id", Annotated[str | None, Query(max_length=64, description="only runs on this long-lived server")],
     None),
    ("label", Annotated[str | None, Query(max_length=80, description="only runs with this label")], None),
    ("student", Annotated[str | None, Query(min_length=1, max_length=80,
                                            description="only this student's runs (the name as they typed it)")],
     None),
    ("contended", Annotated[bool | None, Query(
        description="true: only runs marked contended (others' CPU use during the copy); false: only the rest")],
     None),
]


def run_filters(**values: Any) -> dict[str, Any]:
    """The filters as lab.service.store.Store.page takes them (None: any)."""
    out = {}
    for name, value in values.items():
        if name == "student" and value is not None:
            value = " ".join(value.split()) or None
        out[name if name not in spec.SERVER_FIELDS else f"server.{name}"] = _value(value)
    return out


run_filters.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in _RUN_PARAMS]
    + [_server_param(name, meta) for name, meta in spec.SERVER_FIELDS.items()])

RunFiltersDep = Annotated[dict[str, Any], Depends(run_filters)]
