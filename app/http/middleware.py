"""Request guards that run before any route: CSRF safety, body limits, HEAD.

RequestGuard, for POST/PUT/PATCH/DELETE (the methods that change something):
- a browser sends `Origin` with every cross-origin POST; when one is sent it must be this
  service's own origin (its host and port, as the `Host` header names them), else 403
  `cross-origin`. Scripts (curl, httpx) send no Origin and are not affected;
- a request body must be `application/json` (415 `unsupported-media-type` otherwise):
  the three content types an HTML form or a no-cors fetch may send cross-site without a
  preflight (text/plain, form-urlencoded, multipart) can never start anything;
- a body larger than LAB_MAX_BODY_BYTES is refused with 413 before it is read, by its
  Content-Length, or as it streams in when it has none;
- a body must be UTF-8 JSON text (400 `bad-request`) without a lone surrogate (422 naming it:
  app/http/jsonbody.py), so no route meets text it cannot store or echo;
- the body is kept (scope[RAW_BODY]) so errors can echo a field's value as it was sent.

HeadMiddleware answers HEAD on every GET route with the GET's status and headers and no
body (an event stream is ended right after its headers).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import jsonbody
from app.http.errors import CODES, PROBLEM_JSON, RAW_BODY, RETRY_AFTER_S, problem_bytes

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def send_problem(send: Send, code: str, detail: str, path: str,
                       headers: list[tuple[bytes, bytes]] | None = None,
                       errors: list[dict[str, Any]] | None = None) -> None:
    body = problem_bytes(code, detail, path, errors)
    status = CODES[code][0]
    extra = [(b"retry-after", str(RETRY_AFTER_S).encode())] if status in (429, 503) else []
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
        *extra, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def same_origin(origin: str, host: str | None) -> bool:
    """True when the Origin header names this service (scheme aside: a TLS proxy may sit in front)."""
    if not host or origin.strip().lower() == "null":
        return False
    try:  # urlsplit and .port raise ValueError ("[::1", a port not a number in 0..65535)
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        default = "443" if parts.scheme == "https" else "80"
        given = f"{parts.hostname}:{parts.port or default}".lower()
        h = urlsplit("//" + host.strip())
        want = f"{h.hostname}:{h.port or default}".lower()
    except ValueError:
        return False
    return given == want


def _length(scope: Scope) -> int | None:
    text = _header(scope, b"content-length")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _has_body(scope: Scope) -> bool:
    """A body follows: chunked, or a positive Content-Length."""
    return "chunked" in (_header(scope, b"transfer-encoding") or "").lower() or (_length(scope) or 0) > 0


class _TooLarge(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body: int, origins: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_body = max_body
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        refused = self._refusal(scope)
        if refused is not None:
            await send_problem(send, *refused[:2], path, refused[2])
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await send_problem(send, "body-too-large", f"the body is larger than {self.max_body} bytes", path)
            return
        if body is None:  # the client left
            return
        if body:
            try:
                jsonbody.check(body)
            except jsonbody.BodyProblem as e:
                await send_problem(send, e.code, e.detail, path, errors=e.errors)
                return
        scope = {**scope, RAW_BODY: body}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _refusal(self, scope: Scope) -> tuple[str, str, list[tuple[bytes, bytes]]] | None:
        """(code, detail, headers) of the problem to answer before reading the body, or None."""
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_ok(origin, _header(scope, b"host")):
            return ("cross-origin", f"Origin {origin[:100]!r} is not this service: POST and DELETE are same-origin "
                    "only", [])
        content_type = _header(scope, b"content-type")
        length = _length(scope)
        if (content_type is not None and not _is_json(content_type)) or (content_type is None and _has_body(scope)):
            return ("unsupported-media-type",
                    f"a request body must be application/json, not {(content_type or 'untyped')[:80]!r}",
                    [(b"accept-post", b"application/json")])
        if length is not None and length > self.max_body:
            return "body-too-large", f"the body is {length} bytes; at most {self.max_body} are accepted", []
        return None

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        return same_origin(origin, host) or origin.strip().rstrip("/").lower() in self.origins

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _HeadDone(Exception):
    pass


class HeadMiddleware:
    """HEAD = GET without the body (RFC 9110 9.3.2), for every route that answers GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() != "HEAD":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def send_headers_only(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
                await send(message)
            elif message["type"] == "http.response.body":
                if finished:
                    raise _HeadDone
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _HeadDone  # a stream: stop producing it (its own cleanup runs)

        with contextlib.suppress(_HeadDone):
            await self.app({**scope, "method": "GET"}, receive, send_headers_only)


DEPRECATED_SINCE = b"@1795996800"  # 2026-11-30, when /api/v1 arrived (RFC 9745 structured date)


class LegacyPrefix:
    """Answers under the legacy prefix say they are deprecated (RFC 9745) and name their successor."""

    def __init__(self, app: ASGIApp, legacy: str, current: str) -> None:
        self.app = app
        self.legacy, self.current = legacy.rstrip("/") + "/", current.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(self.legacy) or path.startswith(self.current):
            await self.app(scope, receive, send)
            return
        successor = (self.current + path[len(self.legacy):]).encode("latin-1", "replace")

        async def mark(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"deprecation", DEPRECATED_SINCE),
                                                  (b"link", b"<" + successor + b'>; rel="successor-version"')]}
            await send(message)

        await self.app(scope, receive, mark)
