"""The Host guard: a request naming a host this service does not answer to gets 400 before routing.

DNS rebinding: a page on rb.evil.example makes its own name resolve to 127.0.0.1 (or to the class's
lab), and the browser, which then thinks the lab is rb.evil.example, lets that page send any
request and read every answer. Origin and Host agree in such a request, so the cross-site guard
cannot see it; the Host header is the tell. Accepted without a setting: `localhost` and any IP
address (an address is never rebound: the attack needs a name the attacker's DNS answers), so
`http://192.168.1.5:8000/` in a classroom works as it is. Names go in LAB_ALLOWED_HOSTS
(lab/config.py): `lab.school.example`, `.school.example` for a domain and its subdomains, or `*`.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from app.http.middleware import send_problem

ALWAYS = frozenset({"localhost"})


def host_name(header: str) -> str | None:
    """The name or address of a Host header without its port, lower case; None when it is not one."""
    text = header.strip().lower()
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not _port(text[end + 1:])):
            return None
        try:
            return str(ipaddress.IPv6Address(text[1:end]))
        except ValueError:
            return None
    name, colon, port = text.partition(":")
    if (colon and not _port(":" + port)) or not name:
        return None
    name = name.rstrip(".")
    if not name or not all(c.isalnum() or c in "-._" for c in name) or not name.isascii():
        return None
    return name


def _port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed(header: str | None, hosts: frozenset[str]) -> bool:
    """True when a request with this Host header may be answered (no header: HTTP/1.0, no browser)."""
    if header is None or "*" in hosts:
        return True
    name = host_name(header)
    if name is None:
        return False
    if name in ALWAYS or name in hosts or _is_address(name):
        return True
    return any(h.startswith(".") and (name.endswith(h) or name == h[1:]) for h in hosts)


class HostGuard:
    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
        if allowed(header, self.hosts):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:100]
        await send_problem(send, "unknown-host", f"Host {shown!r} is not a name this service answers to: "
                           "LAB_ALLOWED_HOSTS lists the names it does (addresses and localhost always work)",
                           scope.get("path", ""))
