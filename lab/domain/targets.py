"""External NBD targets: which ones the settings allow, decided from their text alone.

The setting LAB_EXTERNAL_TARGETS (lab.config.Settings.external_targets, handed down as
`Limits.external_targets`) lists what may be used, separated by commas or spaces: Unix socket
paths (`/run/my.sock`) or `host:port` pairs (`127.0.0.1:10809`, `[::1]:10809`). A target
not on the list is refused by `check_target` before any connection, so no packet ever goes
to a host nobody listed (the connection itself is lab.nbd.external's).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from lab.domain.limits import DEFAULT_LIMITS, Limits

ENV = "LAB_EXTERNAL_TARGETS"
_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$")


class ExternalError(ValueError):
    """An external target that may not be used; `field` names the server field at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Target:
    text: str
    socket: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def uri(self) -> str:
        if self.socket:
            return f"nbd+unix:///?socket={self.socket}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"nbd://{host}:{self.port}/"

    def nbd_plugin_params(self) -> dict[str, str]:
        if self.socket:
            return {"socket": self.socket}
        return {"hostname": str(self.host), "port": str(self.port)}


def parse_target(text: str) -> Target:
    text = (text or "").strip()
    if text.startswith("/"):
        return Target(os.path.normpath(text), socket=os.path.normpath(text))
    m = _HOSTPORT.match(text)
    if not m or not 0 < int(m["port"]) < 65536:
        raise ExternalError("target", f"{text[:80]!r} is neither a Unix socket path nor host:port")
    return Target(text, host=m["v6"] or m["host"], port=int(m["port"]))


def allowed_targets(limits: Limits = DEFAULT_LIMITS) -> list[Target]:
    """The targets `limits` allow (none by default); a malformed entry allows nothing."""
    out = []
    for item in limits.external_targets:
        if item:
            try:
                out.append(parse_target(item))
            except ExternalError:
                continue  # a malformed entry allows nothing
    return out


def check_target(text: str | None, limits: Limits = DEFAULT_LIMITS) -> Target:
    """The listed target `text` names, or ExternalError. Makes no connection."""
    if not text:
        raise ExternalError("target", "an external server needs a target (a Unix socket path or host:port)")
    target = parse_target(text)
    allowed = allowed_targets(limits)
    if not allowed:
        raise ExternalError("target", f"external targets are off: none is listed in {ENV}")
    if target not in allowed:
        raise ExternalError("target", f"{target.text} is not listed in {ENV}; refused without connecting")
    return target
