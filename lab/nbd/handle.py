"""What a libnbd client sees of a server: the flags it advertises, and a clean disconnect.

Kept apart from lab.nbd.servers (which starts servers and pulls in the spec and its pydantic
models) so an era client's child process imports only this, libnbd and the client: at a
case study's start sixteen children begin at once, and their imports were the burst of CPU
that slowed the copies already running.
"""

from __future__ import annotations

from typing import Any

from lab.domain.flags import ServerFlags


def probe(uri: str) -> ServerFlags:
    """Ask the server what it advertises, as any libnbd client would see it."""
    import nbd

    h = nbd.NBD()
    try:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(uri)
        return ServerFlags(
            size=h.get_size(),
            can_zero=bool(h.can_zero()),
            can_fast_zero=bool(h.can_fast_zero()),
            can_trim=bool(h.can_trim()),
            can_flush=bool(h.can_flush()),
            can_fua=bool(h.can_fua()),
            can_multi_conn=bool(h.can_multi_conn()),
            can_block_status=bool(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)),
            is_read_only=bool(h.is_read_only()),
            block_size_max=int(h.get_block_size(nbd.SIZE_MAXIMUM)),
        )
    finally:
        close_handle(h)


def close_handle(h: Any) -> None:
    """Disconnect cleanly; libnbd 1.14's Python handle has no close(), it closes when freed."""
    try:
        if h.aio_is_ready() or h.aio_is_processing():
            h.shutdown()
    except Exception:
        pass
    del h
