"""Idempotency-Key on the POSTs that start something (runs, sweeps, servers).

A client that did not hear the answer (a time-out, a dropped connection) retries with the
same key and gets the first answer again, replayed from SQLite (`Idempotent-Replayed: true`),
instead of a second run. The key is bound to the request: the same key with another method,
path or body is a 409 `idempotency-key-reused`; a retry while the first request is still
being answered is a 409 `idempotency-conflict`. Bodies are compared by their JSON's meaning
(keys in any order, any spacing), not byte for byte. Only successful answers are kept (a 429 may
be retried and then succeed); keys are forgotten after KEEP_S.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request, Response
from fastapi.encoders import jsonable_encoder

from app.http.errors import RAW_BODY, Problem
from lab.service.manager import IdempotencyLog

KEEP_S = 24 * 3600.0
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="any unique string (a UUID): a retry with the same key gets the first answer, nothing new starts")]


def _fingerprint(request: Request) -> str:
    """The request's method, path and body's meaning: its JSON written canonically (keys sorted, no
    spaces), so a retry that orders keys or spaces differently is the same request. The guard
    (app/http/jsonbody.py) has already refused a body that is not JSON."""
    h = hashlib.sha256()
    h.update(request.method.encode() + b" " + request.url.path.encode() + b"\n")
    raw = request.scope.get(RAW_BODY) or b""
    if raw:
        with contextlib.suppress(ValueError):
            raw = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    h.update(raw)
    return h.hexdigest()


def once(store: IdempotencyLog, request: Request, response: Response, key: str | None, status: int,
         make: Callable[[], dict[str, Any]]) -> Any:
    """Answer with make() (which sets response's status and headers), or replay the answer to `key`."""
    if key is None:
        return make()
    fingerprint = _fingerprint(request)
    earlier = store.idem_claim(key, fingerprint, KEEP_S)
    if earlier is not None:
        old_fingerprint, status, text = earlier
        if old_fingerprint != fingerprint:
            raise Problem("idempotency-key-reused",
                          "this Idempotency-Key was used for another request (method, path or body): use a new key")
        if status is None or text is None:
            raise Problem("idempotency-conflict", "the first request with this Idempotency-Key is still being "
                          "answered; retry in a moment", headers={"Retry-After": "1"})
        saved = json.loads(text)
        out = Response(content=json.dumps(saved["body"]).encode(), status_code=status, media_type="application/json",
                       headers={**saved["headers"], "Idempotent-Replayed": "true"})
        return out
    try:
        body = make()
    except BaseException:
        store.idem_release(key)
        raise
    headers = {k: v for k, v in response.headers.items() if k.lower() in ("location",)}
    store.idem_complete(key, response.status_code or status,
                        json.dumps({"body": jsonable_encoder(body), "headers": headers}))
    return body
