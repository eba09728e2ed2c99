"""Bearer-token guard for every mutating request.

Pure ASGI middleware rather than a per-route dependency, so a POST route added later
(or a mounted sub-app) cannot slip past. GET, HEAD and OPTIONS stay open: an audience
can watch the dashboard and the event streams without the presenter's token.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from app.http import identity
from app.http.middleware import send_problem
from lab.service.manager import is_student_key

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_ok(header: str | None, token: str) -> bool:
    """Constant-time check of an Authorization header against the token."""
    given = ""
    if header and header[:7].lower() == "bearer ":
        given = header[7:].strip()
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


class TokenMiddleware:
    """Resolves who is asking (app/http/identity.py) once per request, keeps it in the scope, and lets a
    write through only when that caller may make it (`identity.allowed`): with LAB_TOKEN set, the
    teacher everything, a joined student their runs and guesses, everyone joining and form checks."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    def _caller(self, scope: Scope) -> identity.Caller | None:
        """The caller, or None for a student key this class does not know (ended session, removed)."""
        client = (scope.get("client") or ("", 0))[0]
        given = identity.bearer(scope.get("headers", []))
        if self.token is not None and given is not None and \
                hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.token.encode("utf-8")):
            return identity.Caller("teacher", client=client)
        if given is not None and is_student_key(given):
            manager = getattr(scope["app"].state, "manager", None) if "app" in scope else None
            member = manager.classroom.member_for_key(given) if manager is not None else None
            if member is None:
                return None
            return identity.Caller("student", member.canonical, member.display, client, self.token is None)
        return identity.Caller("anonymous", client=client, open_lab=self.token is None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller = self._caller(scope)
        path = scope.get("path", "")
        safe = scope["method"].upper() in SAFE_METHODS
        if caller is None and safe:  # a stale key still reads what everyone reads
            caller = identity.Caller("anonymous", client=(scope.get("client") or ("", 0))[0],
                                     open_lab=self.token is None)
        if caller is None:
            await send_problem(send, "invalid-token", "this student key is not one of this class session's (a new "
                               "join code ends the old session): join again", path,
                               [(b"www-authenticate", b'Bearer realm="fastzero-lab", error="invalid_token"')])
            return
        scope[identity.SCOPE_KEY] = caller
        if safe or identity.allowed(scope["method"].upper(), path, caller):
            await self.app(scope, receive, send)
            return
        if caller.tier == "student":
            await send_problem(send, "forbidden", "a student may start and cancel their own runs and guess; this "
                               "needs the teacher's token", path)
            return
        header = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None)
        # RFC 6750 3.1: no error code when no credentials came; invalid_token when they were wrong
        if header is None or header[:7].lower() != b"bearer ":
            code, detail = "missing-token", "a bearer token is required: Authorization: Bearer <token> (the " \
                                            "teacher's), or a student's key from POST /api/v1/class/join"
            challenge = b'Bearer realm="fastzero-lab"'
        else:
            code, detail = "invalid-token", "the bearer token is not the one this service was started with"
            challenge = b'Bearer realm="fastzero-lab", error="invalid_token", ' \
                        b'error_description="the token is not valid"'
        await send_problem(send, code, detail, path, [(b"www-authenticate", challenge)])
