"""405 answers list every method the path supports (RFC 9110), not just one route's.

A path such as /api/runs is served by two operations (GET list, POST create); Starlette's
405 names only the methods of the first route that matched the path. This middleware
rewrites the Allow header of a 405 from the OpenAPI paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$")


class AllowMiddleware:
    def __init__(self, app: ASGIApp, paths: Callable[[], dict[str, dict]]) -> None:
        self.app = app
        self._paths = paths
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def _allowed(self, path: str) -> str | None:
        if self._table is None:
            table = []
            for template, ops in self._paths().items():
                methods = {m.upper() for m in ops if m in ("get", "post", "put", "patch", "delete")}
                if "GET" in methods:
                    methods.add("HEAD")
                table.append((template.count("{"), _compile(template), ", ".join(sorted(methods))))
            # literal segments first: /runs/cancel is its own path, not /runs/{run_id}
            self._table = [(pattern, methods) for _, pattern, methods in sorted(table, key=lambda t: t[0])]
        for pattern, methods in self._table:
            if pattern.match(path):
                return methods
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_fixed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = self._allowed(scope["path"])
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", allowed.encode())]}
            await send(message)

        await self.app(scope, receive, send_fixed)
