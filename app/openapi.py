"""The OpenAPI document, made to say exactly what the service does.

FastAPI's generated schema is adjusted in three ways:
- security is anonymous or bearer, once for the whole document (TokenMiddleware enforces the
  token on POST/DELETE when LAB_TOKEN is set; 401 is documented there);
- error answers are documented as application/json even on event-stream routes;
- server-field bounds (declared in lab.domain.spec) come from this instance's settings, so a
  client or a fuzzer reading the schema knows what will be accepted;
- OpenAPI links say which id a creation answers with and where it leads (run -> get,
  cancel, events; server -> get, delete, a run on it; sweep -> get, cancel, events), so
  generated clients and stateful fuzzers (schemathesis) can follow them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api import API_PREFIX
from app.http.errors import CODES, PROBLEM_JSON
from app.schemas import examples, serverunion
from app.schemas.runs import DISPLAY_NAME, MAX_TTL_S
from app.schemas.unitregex import DELAY_UNITS, SIZE_UNITS, with_units
from app.settings import Settings
from lab.domain import spec
from lab.domain.students import name_pattern
from lab.domain.units import parse_delay, parse_size

_PARSE: dict[str, Callable[[Any], float]] = {"size": parse_size, "delay": parse_delay}


def _each(schema: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    """Apply fn to every sub-schema that has a `type`."""
    if isinstance(schema, dict):
        if "type" in schema:
            fn(schema)
        for v in schema.values():
            _each(v, fn)
    elif isinstance(schema, list):
        for v in schema:
            _each(v, fn)


_UNITS = {"size": SIZE_UNITS, "delay": DELAY_UNITS}


def _bounds(prop: dict[str, Any], low: float, high: float, multiple: int, parse: Callable[[Any], float],
            units: dict[str, float]) -> None:
    """Bound a size or delay field to this instance's limits: the number form by minimum, maximum
    and multipleOf, the string form by a pattern that matches exactly the values in bounds."""
    pattern = with_units(low, high, units)

    def fix(s: dict[str, Any]) -> None:
        if s["type"] in ("integer", "number"):
            s.update(minimum=low, maximum=high, multipleOf=multiple)
        elif s["type"] == "string" and "pattern" in s:
            s["pattern"] = pattern

    def within(example: Any) -> bool:
        if isinstance(example, str) and not re.match(pattern, example):
            return False
        try:
            v = parse(example)
        except ValueError:
            return False
        return low <= v <= high and v % multiple == 0

    _each(prop, fix)
    stack = [prop]
    while stack:  # examples must be values this instance accepts
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("examples"), list):
                node["examples"] = [e for e in node["examples"] if within(e)] or [low]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node


# Request models with server fields (SweepGrid: lists of them), bounded by this instance's limits.
BOUNDED = ("GeometryFields", "ServerFields", "ServerCreate", "SweepGrid")


RETRY_AFTER_HEADER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
WWW_AUTHENTICATE_HEADER = {"description": "the bearer challenge (RFC 6750), error=\"invalid_token\" for a wrong token",
                           "schema": {"type": "string"}}
ALLOW_HEADER = {"description": "the methods this path supports", "schema": {"type": "string"}}


def _describe(status: int) -> str:
    kinds = [f"`{code}`: {text}" for code, (s, _, text) in CODES.items() if s == status]
    return "; ".join(kinds) or "error"


def install(app: FastAPI, settings: Settings) -> None:
    original = app.openapi
    limits = settings.limits

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer",
            "description": "the teacher's token (LAB_TOKEN) or a joined student's key; needed by POST and DELETE "
                           "only when the service runs with LAB_TOKEN set (401 otherwise); reads never need it",
        }
        # Anonymous or bearer, for the whole API, once: a per-operation requirement makes generated
        # clients (openapi-python-client) demand an AuthenticatedClient, and an empty token then
        # cannot be sent at all (httpx refuses "Bearer " as a header), so a tokenless service could
        # not be used without inventing a token.
        schema["security"] = [{}, {"bearer": []}]
        components = schema["components"].setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape: ours is a Problem
            components.pop(name, None)
        for path in schema.get("paths", {}).values():
            for method, op in path.items():
                responses = op.setdefault("responses", {})
                if method in ("post", "delete", "put", "patch"):
                    for status in (401, 403, 415, 413):
                        responses.setdefault(str(status), {"description": _describe(status)})
                if op.get("parameters") or op.get("requestBody"):
                    responses.setdefault("422", {"description": _describe(422)})
                # every operation refuses a query parameter it does not take (app/http/query.py);
                # a body that is not JSON is a 400 too
                responses.setdefault("400", {"description": _describe(400)})
                for code, resp in responses.items():
                    if code[:1] in ("4", "5"):  # every error is a problem (app/http/errors.py)
                        resp["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                        resp["description"] = _describe(int(code))
                        if code in ("429", "503"):
                            resp["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
                        if code == "401":
                            resp["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE_HEADER}
                        if code == "405":
                            resp["headers"] = {"Allow": ALLOW_HEADER}
                    stream = resp.get("content", {}).get("text/event-stream")
                    if stream and "itemSchema" in stream:
                        # itemSchema is OpenAPI 3.2; in this 3.1 document it lives under an extension key
                        stream["x-itemSchema"] = stream.pop("itemSchema")
                        stream.pop("schema", None)  # FastAPI's "string": the events are described per item
        for name in BOUNDED:
            props = schema["components"]["schemas"].get(name, {}).get("properties", {})
            for field, prop in props.items():
                b = spec.bounds(field, limits) if field in spec.SERVER_FIELDS else None
                if b is not None:
                    kind = spec.SERVER_FIELDS[field].kind
                    _bounds(prop, *b, _PARSE[kind], _UNITS[kind])
        ttl = schema["components"]["schemas"].get("ServerCreate", {}).get("properties", {}).get("ttl_s")
        if ttl is not None:  # the longest a request may ask: LAB_SERVER_TTL_S (app/api/servers.py checks it)
            _each(ttl, lambda s: s.update(maximum=settings.server_ttl_s or MAX_TTL_S) if s["type"] == "number"
                  else None)
        for name, fields in ALWAYS_PRESENT.items():
            out = schema["components"]["schemas"].get(name)
            if out is not None:
                out["required"] = [*out.get("required", []), *(f for f in fields if f not in out.get("required", []))]
        _server_union(app, schema, settings)
        for name, variants in ONE_OF.items():
            _split_one_of(schema["components"]["schemas"], name, variants)
        _name_patterns(schema)
        examples.install(schema)
        _add_links(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# Request bodies whose fields exclude each other: each is validated as one model (so errors name
# the field), and documented as a oneOf of its variants: name -> {variant: (fields it lacks, fields it needs)}.
ONE_OF: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "RunCreate": {"RunOnNewServer": (("server_id",), ()), "RunOnServer": (("server",), ("server_id",))},
    "CustomSweepCreate": {"SweepOfRows": (("grid",), ("rows",)), "SweepOfGrid": (("rows",), ("grid",))},
}


def _split_one_of(components: dict[str, Any], name: str,
                  variants: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
    whole = components.get(name)
    if whole is None or "properties" not in whole:
        return
    refs = []
    for variant, (lacks, needs) in variants.items():
        v = copy.deepcopy(whole)
        v["title"] = variant
        for field in lacks:
            v["properties"].pop(field, None)
        required = [f for f in v.get("required", []) if f not in lacks] + list(needs)
        if required:
            v["required"] = required
        v["additionalProperties"] = False
        components[variant] = v
        refs.append({"$ref": f"#/components/schemas/{variant}"})
    components[name] = {"oneOf": refs, "title": name, "description": whole.get("description", "")}


# (path, method, status) of a creating operation -> {link name: (path, method, parameters, request body)}
_P = API_PREFIX
_RUN = {"run_id": "$response.body#/id"}
_SWEEP = {"sweep_id": "$response.body#/id"}
_SERVER = {"server_id": "$response.body#/id"}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str], dict[str, Any] | None]]] = {
    (_P + "/runs", "post", "202"): {
        "GetRun": (_P + "/runs/{run_id}", "get", _RUN, None),
        "CancelRun": (_P + "/runs/{run_id}/cancel", "post", _RUN, None),
        "RunEvents": (_P + "/runs/{run_id}/events", "get", _RUN, None),
    },
    (_P + "/servers", "post", "201"): {
        "GetServer": (_P + "/servers/{server_id}", "get", _SERVER, None),
        "DeleteServer": (_P + "/servers/{server_id}", "delete", _SERVER, None),
        "RunOnServer": (_P + "/runs", "post", {}, {"server_id": "$response.body#/id"}),
    },
    (_P + "/scenarios/{name}/runs", "post", "202"): {
        "GetSweep": (_P + "/sweeps/{sweep_id}", "get", _SWEEP, None),
        "CancelSweep": (_P + "/sweeps/{sweep_id}/cancel", "post", _SWEEP, None),
        "SweepEvents": (_P + "/sweeps/{sweep_id}/events", "get", _SWEEP, None),
    },
    (_P + "/scenarios", "get", "200"): {
        "GetScenario": (_P + "/scenarios/{name}", "get", {"name": "$response.body#/scenarios/0/name"}, None),
        "StartSweep": (_P + "/scenarios/{name}/runs", "post", {"name": "$response.body#/scenarios/0/name"}, None),
    },
}


# Response fields with a default in the model that every answer carries all the same (a stored
# run has had them from the start): required, so a generated client types them `str`, not `str | Unset`.
ALWAYS_PRESENT = {"RunOut": ("id", "status", "created_at", "queue_depth")}

# Components whose `server` is a part of a server (merged into each row's): the plain object.
SERVER_PARTS = ("SweepRowIn", "CustomSweepCreate", "SweepDefinition")


def _server_union(app: FastAPI, schema: dict[str, Any], settings: Settings) -> None:
    """ServerFields and ServerCreate as a union keyed on kind (app/schemas/serverunion.py), with the
    kinds and storages this machine has when a running service makes the document."""
    manager = getattr(app.state, "manager", None)
    have = manager.availability() if manager is not None else None

    def usable(field: str) -> list[str]:
        choices = list(spec.SERVER_FIELDS[field].choices)
        return [c for c in choices if have is None or have.get(field, {}).get(c, {}).get("available", True)]

    components = schema["components"]["schemas"]
    serverunion.parts(schema, SERVER_PARTS)
    targets = list(settings.limits.external_targets)
    for name, suffix in (("ServerFields", ""), ("ServerCreate", "Create")):
        serverunion.split(components, name, suffix, usable("storage"), usable("kind"), targets)


def _name_patterns(schema: dict[str, Any]) -> None:
    """Every display name (app.schemas.runs.DISPLAY_NAME) gets the pattern clean_name's rule makes."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.pop(DISPLAY_NAME, None):
                node["pattern"] = name_pattern()
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (path, method, status), links in LINKS.items():
        resp = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if resp is None:
            continue
        out = resp.setdefault("links", {})
        for name, (target, target_method, params, body) in links.items():
            op_id = paths.get(target, {}).get(target_method, {}).get("operationId")
            if op_id is None:
                continue
            link: dict[str, Any] = {"operationId": op_id}
            if params:
                link["parameters"] = dict(params)
            if body is not None:
                link["requestBody"] = dict(body)
            out[name] = link
