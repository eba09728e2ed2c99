"""The copy clients' catalog: each client's id, what to call it, its era, what it does, and its traits.

A value the scheduler, sweep definitions, the API's schemas and the pages need without running a
copy; the implementations (how each one copies) are lab.nbd.clients', which serve exactly these ids.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ClientInfo:
    id: str
    label: str
    era: str
    description: str
    parallel: bool = False  # many requests in flight: the serial delay sum is an upper bound, the CPU is busy
    real_binary: bool = False  # an installed binary, clocked from its spawn to its exit (start-up included)
    # A variant of another client: the same binary with `options` that change its zero traffic (the
    # calibrated expectation treats it as its base client).
    base: str = ""
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CATALOG: tuple[ClientInfo, ...] = (
    ClientInfo("qemu-img", "qemu-img (installed)", "today",
               "The real qemu-img convert of this machine: writes data, one zero request per hole "
               "(WRITE_ZEROES when offered, else zero-filled writes), no pre-zero pass.", real_binary=True),
    ClientInfo("nbdcopy", "nbdcopy (installed)", "today",
               "The real nbdcopy from libnbd: many requests in flight over several connections, "
               "zeroes per hole range, no fast-zero flag.", parallel=True, real_binary=True),
    ClientInfo("qemu-img-S0", "qemu-img -S 0 (installed)", "today",
               "qemu-img convert -S 0: no sparse detection, every hole is written as zero bytes and no zero request "
               "is sent (the destination ends fully allocated): a copy that does not trust the server's zero.",
               real_binary=True, base="qemu-img", options=("-S", "0")),
    ClientInfo("nbdcopy-allocated", "nbdcopy --allocated (installed)", "today",
               "nbdcopy --allocated: zero requests carry NO_HOLE (the destination stays allocated), up to 128 MiB "
               "each.", parallel=True, real_binary=True, base="nbdcopy", options=("--allocated",)),
    ClientInfo("nbdcopy-1conn", "nbdcopy --connections=1 (installed)", "today",
               "nbdcopy over one connection: the same requests, so a server's per-connection state (nbdkit's "
               "file plugin learning what fallocate cannot do) sees them all.", parallel=True, real_binary=True,
               base="nbdcopy", options=("--connections=1",)),
    ClientInfo("qemu-2.7", "qemu 2.7 (re-enacted)", "Sep 2016",
               "No write-zeroes in the NBD client: every hole goes over the wire as zero bytes (<=16 MiB writes); "
               "data in <=2 MiB writes, one request at a time."),
    ClientInfo("qemu-2.8", "qemu 2.8 (re-enacted)", "Dec 2016",
               "Holes as WRITE_ZEROES with NO_HOLE (<=32 MiB); zero-byte writes if the server lacks write-zeroes."),
    ClientInfo("qemu-3.1", "qemu 3.1 (re-enacted)", "2.12-3.1, Dec 2018",
               "Blind pre-zero pass over the whole target (WRITE_ZEROES, may trim, 32 MiB pieces) when the server "
               "offers write-zeroes, then data only; if the pass fails, zeroes per hole (NO_HOLE: may-trim came in "
               "4.0)."),
    ClientInfo("qemu-4.0", "qemu 4.0 (re-enacted)", "Apr 2019",
               "Pre-zero asked with NO_FALLBACK, which NBD cannot express: refused before any request; "
               "zeroes per hole (may trim)."),
    ClientInfo("qemu-bs", "qemu 3.0 block-status experiment (re-enacted)", "2018, never merged",
               "As qemu 2.8 (holes as WRITE_ZEROES with NO_HOLE), but first one BLOCK_STATUS (REQ_ONE) on the "
               "destination per hole: no zero when the destination already reads as zero there."),
    ClientInfo("qemu-4.2", "qemu 4.2 (re-enacted)", "Dec 2019",
               "Pre-zero with FAST_ZERO in 32 MiB pieces when the server offers fast zero; the first refusal "
               "(ENOTSUP) abandons it and zeroes go per hole (may trim)."),
)
CLIENTS: dict[str, ClientInfo] = {c.id: c for c in CATALOG}


def client_ids() -> list[str]:
    return list(CLIENTS)


def client_info(client_id: str) -> ClientInfo:
    """The catalog entry; KeyError naming the choices for an unknown id."""
    try:
        return CLIENTS[client_id]
    except KeyError:
        raise KeyError(f"unknown client {client_id!r}; choose one of {', '.join(CLIENTS)}") from None
