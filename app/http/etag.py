"""Entity tags (RFC 9110 8.8.3) and conditional GETs: If-None-Match naming the current tag answers 304.

A tag is a hash of what the answer is made of (the rows before serialisation, a CSV's bytes, a
trace file's size and time), so it changes exactly when the answer would.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header, Response

IfNoneMatch = Annotated[str | None, Header(max_length=1000, description="an ETag from before: 304 if it still holds")]
ETAG_DOC: dict[str, Any] = {"description": "the answer's entity tag (send it back as If-None-Match)",
                            "schema": {"type": "string"}}
NOT_MODIFIED_DOC: dict[str, Any] = {"description": "If-None-Match named the current ETag: nothing changed"}


def tag_of(content: Any) -> str:
    """A strong tag of JSON-able content or bytes."""
    data = content if isinstance(content, bytes) else json.dumps(content, sort_keys=True, default=str).encode()
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """If-None-Match names `tag` (weak comparison, RFC 9110 13.1.2) or is `*`."""
    tags = [t.strip().removeprefix("W/") for t in (if_none_match or "").split(",") if t.strip()]
    return "*" in tags or tag in tags


def conditional(tag: str, if_none_match: str | None, response: Response) -> Response | None:
    """Put `tag` on `response`; return the 304 to answer instead when If-None-Match names it."""
    if matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    return None
