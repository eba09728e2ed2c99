"""One error shape for every 4xx/5xx: RFC 9457 `application/problem+json`.

    {"type": "tag:fastzero-lab,2026:invalid-request", "code": "invalid-request", "status": 422,
     "title": "Invalid request", "detail": "body.server.size: '0' is not a size ...", "instance": "/api/runs",
     "errors": [{"loc": ["body", "server", "size"], "message": "...", "code": "value_error", "value": "0"}]}

`type` (and its short form `code`) is stable per kind of error: clients branch on it, never
on the wording. `errors[]` names each field (`loc`, as FastAPI spells it) with the value
exactly as the request carried it (read back from the raw body, query or headers, never
the parsed and re-serialised one); a field that was missing has no `value`. Middleware
(app/http/middleware.py, app/http/auth.py) answers with the same shape through `problem_bytes`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.http.jsonbody import escaped
from app.schemas.problem import Problem as ProblemModel
from lab.domain.errors import BadJoinCode, Forbidden, GuessesLocked, NameTaken, RateLimited, StartFailed
from lab.domain.spec import SpecError
from lab.service.manager import Conflict, LimitExceeded, ManagerError, NotFound, NotRunnable, ShuttingDown

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "tag:fastzero-lab,2026:"
RETRY_AFTER_S = 5
RAW_BODY = "fastzero.raw_body"  # scope key: the request body as received (app/http/middleware.py)

# code -> (status, title, what it means: for the OpenAPI document and docs/api.md)
CODES: dict[str, tuple[int, str, str]] = {
    "bad-request": (400, "Bad request", "the body is not UTF-8 JSON text"),
    "unknown-parameter": (400, "Unknown query parameter", "the query names a parameter this operation does not "
                                                          "take (a misspelt filter): errors[].loc names it"),
    "unknown-host": (400, "Unknown host", "the Host header names a host this service does not answer to "
                                          "(LAB_ALLOWED_HOSTS: the guard against DNS rebinding)"),
    "missing-token": (401, "Token required", "LAB_TOKEN is set and the request has no bearer token"),
    "invalid-token": (401, "Invalid token", "LAB_TOKEN is set and the bearer token is not it"),
    "cross-origin": (403, "Cross-origin request refused",
                     "a browser sent this POST/DELETE from another origin (the Origin header)"),
    "not-found": (404, "Not found", "no such id, scenario, scenario row, page (cursor) or path; errors[].loc "
                                    "names it when it came in the body or the query"),
    "method-not-allowed": (405, "Method not allowed", "the path exists; `Allow` lists its methods"),
    "already-finished": (409, "Already finished", "the run or sweep has already finished"),
    "not-runnable": (409, "Not runnable here", "a scenario's own rows exceed this service's limits (LAB_MAX_SIZE, "
                     "LAB_MAX_DELAY_MS) or need what this machine lacks: give a smaller geometry in `server`"),
    "idempotency-conflict": (409, "Idempotency-Key in use",
                             "the first request with this Idempotency-Key is still being processed"),
    "body-too-large": (413, "Request body too large", "the body is larger than LAB_MAX_BODY_BYTES"),
    "unsupported-media-type": (415, "Unsupported media type", "a request body must be application/json"),
    "invalid-request": (422, "Invalid request", "a field is invalid: errors[].loc names it"),
    "idempotency-key-reused": (409, "Idempotency-Key reused",
                               "this Idempotency-Key was used with a different request body"),
    "never-fits": (422, "Never fits", "the request needs more than a limit can ever hold (a sweep with more runs "
                                      "than the queue has places, or than one student may queue): waiting will not "
                                      "help, make it smaller; `limit` names the limit"),
    "forbidden": (403, "Not yours to do", "another student's run, or the teacher's controls: they need the "
                  "teacher's token (LAB_TOKEN)"),
    "bad-join-code": (403, "Wrong join code", "the code is not this class session's: the teacher shows it on /class"),
    "name-taken": (409, "Name taken", "a student of this class has this name, or one that looks like it"),
    "guesses-locked": (409, "Guesses closed", "the act has started: its guesses are closed until the teacher "
                       "reopens them"),
    "rate-limited": (429, "Too many requests", "too many joins or guesses from one student or address; retry "
                     "after Retry-After"),
    "limit-reached": (429, "Limit reached", "the run queue, a per-student budget or the server limit is full now; "
                                            "retry after Retry-After; `limit` names the limit"),
    "shutting-down": (503, "Shutting down", "the service is stopping; retry after Retry-After"),
    "too-many-streams": (503, "Too many event streams", "LAB_MAX_STREAMS event streams are open; retry after "
                                                        "Retry-After (or share /api/v1/events)"),
    "server-failed": (502, "Server did not start", "the long-lived server (or what serves its disk) did not start "
                                                   "on this machine: `detail` says why; nothing was left running"),
    "probe-failed": (502, "Probe failed", "the probed server could not be started or answered with an error"),
}


def problem(code: str, detail: str, *, instance: str | None = None,
            errors: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    status, title, _ = CODES[code]
    body: dict[str, Any] = {"type": TYPE_PREFIX + code, "code": code, "status": status, "title": title,
                            "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body["errors"] = errors or []
    body.update(extra)
    return body


def problem_bytes(code: str, detail: str, instance: str | None = None,
                  errors: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps(_json_safe(problem(code, detail, instance=instance, errors=errors)),
                      ensure_ascii=False).encode()


def problem_response(code: str, detail: str, request: Request | None = None, *,
                     errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    status = CODES[code][0]
    if status in (429, 503):
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    instance = request.url.path if request is not None else None
    return JSONResponse(_json_safe(problem(code, detail, instance=instance, errors=errors, **extra)),
                        status_code=status, headers=headers, media_type=PROBLEM_JSON)


class Problem(Exception):
    """Raised by a route for an answer in the common shape (codes: CODES)."""

    def __init__(self, code: str, detail: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.errors, self.headers = code, detail, errors, headers


def field_error(loc: Sequence[str | int], message: str, code: str = "value_error") -> RequestValidationError:
    """A 422 naming a field; the value as sent is filled in from the request by the handler."""
    return RequestValidationError([{"loc": list(loc), "msg": message, "type": code}])


def spec_error(e: SpecError, prefix: Sequence[str] = ("body",)) -> RequestValidationError:
    """lab.domain.spec's SpecError (limits, cross-field checks) as a 422 naming the same field, and every
    other wrong field when the one validator (lab.domain.spec.check_fields) found several."""
    return RequestValidationError([{"loc": [*prefix, p.field], "msg": p.message,
                                    "type": getattr(p, "code", "value_error")} for p in e.problems or (e,)])


_STATUS: tuple[tuple[type[ManagerError], str], ...] = (
    (BadJoinCode, "bad-join-code"),
    (Forbidden, "forbidden"),
    (NameTaken, "name-taken"),
    (GuessesLocked, "guesses-locked"),
    (RateLimited, "rate-limited"),
    (NotFound, "not-found"),
    (Conflict, "already-finished"),
    (NotRunnable, "not-runnable"),
    (LimitExceeded, "limit-reached"),
    (ShuttingDown, "shutting-down"),
    (StartFailed, "server-failed"),
)


async def _manager_error(request: Request, exc: Exception) -> JSONResponse:
    code = next((c for cls, c in _STATUS if isinstance(exc, cls)), "bad-request")
    if isinstance(exc, RateLimited):
        return problem_response(code, str(exc), request,
                                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
    if isinstance(exc, LimitExceeded):  # which limit, and whether waiting can help (429) or never (422)
        return problem_response(code if exc.can_wait else "never-fits", str(exc), request, limit=exc.limit)
    errors = None
    if isinstance(exc, Forbidden | NameTaken | GuessesLocked) and getattr(exc, "field", None):
        errors = [{"loc": ["body", exc.field], "message": str(exc), "code": code}]
    return problem_response(code, str(exc), request, errors=errors)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc.code, exc.detail, request, errors=exc.errors, headers=exc.headers)


_HTTP_CODES = {400: "bad-request", 401: "missing-token", 403: "cross-origin", 404: "not-found",
               405: "method-not-allowed", 409: "already-finished", 413: "body-too-large",
               415: "unsupported-media-type", 422: "invalid-request", 429: "limit-reached", 503: "shutting-down"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad-request")
    detail = exc.detail if isinstance(exc.detail, str) else CODES[code][1]
    headers = dict(exc.headers or {})
    if code == "not-found" and detail == "Not Found":
        detail = f"nothing at {request.url.path}"
    elif code == "method-not-allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
        allowed = getattr(request.app.state, "allowed", None)
        methods = allowed(request.url.path) if allowed is not None else None
        if methods:  # every method of the path (app/http/allow.py), not just the first route's
            headers["Allow"] = methods
    resp = problem_response(code, detail, request, headers=headers)
    resp.status_code = exc.status_code
    return resp


def _json_safe(value: Any) -> Any:
    """What a problem echoes, made encodable: NaN and infinities (Python's json accepts them in a
    body) as text, lone surrogates escaped (app/http/jsonbody.py), never a 500 for the echo."""
    if isinstance(value, str):
        return escaped(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {escaped(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


_MISSING = object()


def _raw_json(request: Request) -> Any:
    raw = request.scope.get(RAW_BODY)
    if not raw:
        return _MISSING
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _MISSING


def raw_json(request: Request) -> Any:
    """The request's JSON body exactly as sent (None when it has none or it is not JSON)."""
    body = _raw_json(request)
    return None if body is _MISSING else body


def _sent_value(request: Request, loc: Sequence[Any], body: Any) -> Any:
    """What the request carried at `loc`, untouched; _MISSING when it carried nothing there."""
    if not loc:
        return _MISSING
    where, rest = loc[0], list(loc[1:])
    if where == "body":
        return _in_body(body, rest)
    return _in_request(request, where, str(rest[0])) if rest else _MISSING


def _in_body(node: Any, path: Sequence[Any]) -> Any:
    for key in path:
        in_dict = isinstance(node, dict) and isinstance(key, str) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (in_dict or in_list):
            return _MISSING
        node = node[key]
    return node


def _in_request(request: Request, where: str, name: str) -> Any:
    if where == "query":
        values = request.query_params.getlist(name)
        return _MISSING if not values else values[0] if len(values) == 1 else values
    if where == "header":
        value = request.headers.get(name)
        return _MISSING if value is None else value
    if where == "path":
        return request.path_params.get(name, _MISSING)
    return _MISSING


_PREFIXES = ("Value error, ", "Assertion failed, ")


def _message(text: str) -> str:
    for p in _PREFIXES:
        if text.startswith(p):
            return text[len(p):]
    return text


def field_items(request: Request, raw_errors: Sequence[Any]) -> list[dict[str, Any]]:
    body = _raw_json(request)
    items = []
    for err in raw_errors:
        loc = list(err.get("loc", ()))
        item: dict[str, Any] = {"loc": loc, "message": _message(str(err.get("msg", "invalid"))),
                                "code": str(err.get("type", "value_error"))}
        if err.get("type") == "json_invalid":
            loc[1:] = []  # FastAPI gives the character position, not a field
            item["loc"] = loc
        value = _sent_value(request, loc, body) if err.get("type") != "missing" else _MISSING
        if value is not _MISSING:
            item["value"] = value
        items.append(item)
    return items


def _where(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if exc.errors() and all(e.get("type") == "json_invalid" for e in exc.errors()):
        # the guard (app/http/jsonbody.py) answers these first; a route reading a body itself lands here
        return problem_response("bad-request", "the body is not JSON", request)
    items = field_items(request, exc.errors())
    first = items[0] if items else None
    detail = f"{_where(first['loc'])}: {first['message']}" if first else "the request is invalid"
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more in errors[])"
    return problem_response("invalid-request", detail, request, errors=items)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ManagerError, _manager_error)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


# For OpenAPI: which problems an operation may answer (the content type and the rest are
# filled in by app/openapi.py).
def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status in codes:
        kinds = [f"`{c}`: {text}" for c, (s, _, text) in CODES.items() if s == status]
        out[status] = {"model": ProblemModel, "description": "; ".join(kinds) or "error"}
    return out
