"""Response headers as the OpenAPI document declares them."""

from __future__ import annotations

from typing import Any

from app.http.errors import responses

LOCATION: dict[str, Any] = {"description": "where the created resource lives (/api/v1/...)",
                            "schema": {"type": "string"}}
ETAG: dict[str, Any] = {"description": "a finished run's or sweep's entity tag (for If-None-Match)",
                        "schema": {"type": "string"}}
LINK_NEXT: dict[str, Any] = {"description": 'the next page: <URL>; rel="next" (absent on the last page)',
                             "schema": {"type": "string"}}
LAST_EVENT_ID: dict[str, Any] = {"description": "the last event id when the list was read",
                                 "schema": {"type": "string"}}


def located(status: int, description: str, *problems: int) -> dict[int | str, dict[str, Any]]:
    """The responses of a route that creates something: `status` with the Location of what it
    made, then the problems (app.http.errors.responses) it may answer instead."""
    return {status: {"description": description, "headers": {"Location": LOCATION}}, **responses(*problems)}
