"""What a page (or any client) needs to build a server form, and server-side validation for it.

`GET /api/config` serves the server fields as lab.domain.spec declares them (defaults, limits under
this instance's settings, choices, help, presets) plus the clients; the pages render the same
object into themselves. `POST /api/validate` checks server fields exactly as a run would and
answers them normalised, as numbers and as text, or names every wrong field in plain words:
the browser has no unit grammar, and no validator, of its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, WithJsonSchema

from app.http.deps import ManagerDep
from app.http.errors import responses
from app.schemas.runs import Availability, ClientOut, ServerOut, ServerPartial
from lab.domain import spec
from lab.domain.clients import CATALOG
from lab.domain.vocabulary import vocabulary

router = APIRouter(tags=["config"])


class ServerFieldOut(BaseModel):
    name: str
    label: str
    option: str = Field(description="the `lab run` option")
    kind: str = Field(description="choice, size, delay, bool or layout")
    help: str
    default: bool | int | float | str | None
    default_text: str
    choices: list[str]
    group: str = Field(description="mode: a scenario row fixes it; geometry: a sweep may override it")
    form: str = Field(description="main: on the run form; more: folded under it")
    layer: str = Field(description="source: the image copied; filters: a parameter of the nbdkit filter stack; "
                                   "backend: what sits under the filter stack (server kind, plugin, disk)")
    min: float | None = None
    max: float | None = None
    multiple: int | None = None
    min_text: str | None = None
    max_text: str | None = None


class PresetOut(BaseModel):
    title: str
    key: str = Field(description="its keyboard shortcut on the lab page")
    fields: ServerPartial  # type: ignore[valid-type]
    summary: str


class ConfigOut(BaseModel):
    auth_required: bool
    server_fields: list[ServerFieldOut]
    presets: dict[str, PresetOut]
    spec_defaults: ServerOut = Field(description="the default server, normalised (bytes, milliseconds)")
    spec_defaults_text: dict[str, str]
    clients: list[ClientOut]
    availability: dict[str, dict[str, Availability]] = Field(
        description="per server field, per choice: available, and the reason when not")
    vocabulary: VocabularyOut = Field(description="the words the service defines once (lab/domain/vocabulary.py)")


class VocabularyOut(BaseModel):
    run_statuses: list[str]
    active_statuses: list[str] = Field(description="a run (or sweep) still to finish")
    final_statuses: list[str] = Field(description="a run that will not change any more")
    model_verdicts: dict[str, str] = Field(description="model_verdict -> words")
    model_parts: dict[str, str] = Field(description="a breakdown part (model_term) -> words")
    event_types: list[str]


class ValidateOut(BaseModel):
    server: ServerOut = Field(description="the checked fields, normalised (bytes, milliseconds)")
    text: dict[str, str] = Field(description="the same values as a person types them (100M, 20ms)")


def lab_config(request: Request) -> dict[str, Any]:
    """GET /api/config's answer (the pages render it into themselves)."""
    settings, manager = request.app.state.settings, request.app.state.manager
    return {
        "auth_required": bool(settings.token_value),
        "server_fields": spec.field_table(manager.config.limits),
        "presets": spec.presets(),
        "spec_defaults": spec.DEFAULTS.to_dict(),
        "spec_defaults_text": spec.spec_text(spec.DEFAULTS),
        "clients": [c.to_dict() for c in CATALOG],
        # choices this machine lacks, with the reason (the form disables them and says why)
        "availability": manager.availability(),
        "vocabulary": vocabulary(),
    }


@router.get("/config", response_model=ConfigOut)
def get_config(request: Request) -> dict[str, Any]:
    """Server fields (defaults, limits, choices, help), presets and clients: everything a form needs."""
    return lab_config(request)


# The body is read as a plain object so that every field is checked, together, by the one
# validator (lab.domain.spec.check_fields), instead of FastAPI stopping at the values that do not parse;
# the OpenAPI document still says it is ServerFields.
FieldsBody = Annotated[dict[str, Any], Body(), WithJsonSchema({"$ref": "#/components/schemas/ServerFields"})]


@router.post("/validate", response_model=ValidateOut, responses=responses(400, 401, 413, 422))
def validate(fields: FieldsBody, manager: ManagerDep) -> dict[str, Any]:
    """Check server fields as a run would; nothing is started. A 422 lists EVERY wrong field in
    `errors[]` (`loc` ["body", field], `message` a sentence to show beside the field, `value` as sent)."""
    check = manager.check_fields(fields, api=True)
    if check.spec is None:
        raise RequestValidationError([{"loc": ["body", p.field], "msg": p.sentence, "type": p.code}
                                      for p in check.problems])
    return spec.normalise(check.spec)
