"""Bearer-token guard for every mutating request.

Pure ASGI middleware rather than a per-route dependency, so a POST route added later
(or a mounted sub-app) cannot slip past. GET, HEAD and OPTIONS stay open: an audience
can watch the dashboard and the event streams without the presenter's token.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from app.http.middleware import send_problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_ok(header: str | None, token: str) -> bool:
    """Constant-time check of an Authorization header against the token."""
    given = ""
    if header and header[:7].lower() == "bearer ":
        given = header[7:].strip()
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


class TokenMiddleware:
    """`open_posts`: exact paths whose POST needs no token (a student's guess: it starts nothing)."""

    def __init__(self, app: ASGIApp, token: str | None, open_posts: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.token = token
        self.open_posts = open_posts

    def _open(self, scope: Scope) -> bool:
        method = scope["method"].upper()
        return method in SAFE_METHODS or (method == "POST" and scope.get("path", "") in self.open_posts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or self._open(scope):
            await self.app(scope, receive, send)
            return
        auth = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None)
        header = auth.decode("latin-1") if auth is not None else None
        if token_ok(header, self.token):
            await self.app(scope, receive, send)
            return
        # RFC 6750 3.1: no error code when no credentials came; invalid_token when they were wrong
        if header is None or header[:7].lower() != "bearer ":
            code, detail = "missing-token", "a bearer token is required: Authorization: Bearer <token>"
            challenge = b'Bearer realm="fastzero-lab"'
        else:
            code, detail = "invalid-token", "the bearer token is not the one this service was started with"
            challenge = b'Bearer realm="fastzero-lab", error="invalid_token", ' \
                        b'error_description="the token is not valid"'
        await send_problem(send, code, detail, scope.get("path", ""), [(b"www-authenticate", challenge)])
