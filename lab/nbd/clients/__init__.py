"""Copy clients by id: the implementations of the catalog (lab.domain.clients): the installed binaries
and the qemu-era re-enactments."""

from __future__ import annotations

from lab.domain.clients import CLIENTS, client_ids, client_info
from lab.nbd.clients.base import Cancelled, Client, ClientError, ClientResult, CopyContext
from lab.nbd.clients.eras import ERAS
from lab.nbd.clients.real import NbdCopy, QemuImg

_BINARIES = {"qemu-img": QemuImg, "nbdcopy": NbdCopy}  # the installed ones, and their variants (options)
_REGISTRY: dict[str, Client] = {c.id: c for c in (
    *(_BINARIES[c.base or c.id](c) for c in CLIENTS.values() if (c.base or c.id) in _BINARIES), *ERAS)}
if set(_REGISTRY) != set(CLIENTS):  # the catalog and the implementations name the same clients
    raise RuntimeError(f"clients without an implementation: {set(CLIENTS) - set(_REGISTRY)}; "
                       f"implementations not in the catalog: {set(_REGISTRY) - set(CLIENTS)}")


def get_client(client_id: str) -> Client:
    """The implementation of catalog client `client_id` (KeyError naming the choices)."""
    client_info(client_id)
    return _REGISTRY[client_id]


__all__ = ["Cancelled", "Client", "ClientError", "ClientResult", "CopyContext", "client_ids", "get_client"]
