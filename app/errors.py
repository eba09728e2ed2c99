"""Errors as HTTP answers: 422 naming the field, 404, 409, 429, 503; never a 500 for bad input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lab.manager import Conflict, LimitExceeded, ManagerError, NotFound, ShuttingDown
from lab.spec import SpecError

RETRY_AFTER_S = 5


def field_error(loc: Sequence[str | int], message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's own shape: {"detail": [{"loc": [...], "msg": ..., "type": ...}]}."""
    item: dict[str, Any] = {"loc": list(loc), "msg": message, "type": "value_error"}
    if value is not None:
        item["input"] = value
    return RequestValidationError([item])


def spec_error(e: SpecError, prefix: Sequence[str] = ("body",),
               raw: dict[str, Any] | None = None) -> RequestValidationError:
    """lab.spec's SpecError (limits, cross-field checks) as a 422 naming the same field."""
    value = (raw or {}).get(e.field)
    return field_error([*prefix, e.field], e.message, value)


_STATUS: tuple[tuple[type[ManagerError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (LimitExceeded, 429),
    (ShuttingDown, 503),
)


async def _manager_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 400)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def _json_safe(value: Any) -> Any:
    """NaN and infinities (Python's json accepts them in a body) echoed back as text, not a 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ManagerError, _manager_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


# For OpenAPI: what each error looks like.
def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "the body could not be read (not UTF-8 text)",
        401: "missing or wrong bearer token (only when LAB_TOKEN is set)",
        404: "unknown id",
        409: "the run or sweep has already finished",
        413: "request body too large",
        422: "a field is invalid: detail[].loc names it",
        429: "queue or server limit reached; retry later",
        503: "the service is shutting down",
    }
    from app.schemas import ErrorOut

    return {c: {"model": ErrorOut, "description": text[c]} for c in codes}
