"""The shape of every error (RFC 9457 problem details), for the OpenAPI document; app/http/errors.py answers
with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    limit: str | None = Field(None, description="limit-reached and never-fits: which limit (queue-full, "
                              "per-student, anonymous, servers)")
