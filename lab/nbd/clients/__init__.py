"""Copy clients by id: the real binaries and the qemu-era re-enactments."""

from __future__ import annotations

import contextlib

from lab.nbd.clients.base import Cancelled, Client, ClientError, ClientResult, CopyContext
from lab.nbd.clients.real import NbdCopy, QemuImg

_REGISTRY: dict[str, Client] = {}


def register(client: Client) -> Client:
    _REGISTRY[client.id] = client
    return client


for _c in (QemuImg(), NbdCopy()):
    register(_c)

with contextlib.suppress(ImportError):  # the era clients register themselves
    from lab.nbd.clients import eras as _eras  # noqa: F401


def client_ids() -> list[str]:
    return list(_REGISTRY)


def get_client(client_id: str) -> Client:
    try:
        return _REGISTRY[client_id]
    except KeyError:
        raise KeyError(f"unknown client {client_id!r}; choose one of {', '.join(_REGISTRY)}") from None


__all__ = ["Cancelled", "Client", "ClientError", "ClientResult", "CopyContext", "client_ids", "get_client", "register"]
