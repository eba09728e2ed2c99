"""What a SIGKILLed predecessor left on this machine, removed at start-up (Manager.start).

Its storages first (lab.host.storage: mounts and loop devices, which a plain rmtree must never go
through), then its other private dirs (lab.host.procs: server sockets and logs).
"""

from __future__ import annotations

from lab.host import procs, storage
from lab.host.places import Places


def sweep(places: Places | None = None) -> int:
    """Release and remove every dir whose owning process is gone; returns how many."""
    return len(storage.sweep_stale(places)) + procs.remove_stale_dirs(places)
