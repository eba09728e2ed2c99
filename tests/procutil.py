"""Which processes a test left behind: this process's descendants only, never the machine's."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def own_children() -> list[int]:
    """Pids of this test process's live descendants (not the whole machine's)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if rest[0] == "Z":
            continue
        parents[int(entry)] = int(rest[1])
    found = []
    for pid in parents:
        p = pid
        while p in parents and p > 1:
            p = parents[p]
            if p == me:
                found.append(pid)
                break
    return found


def process_names(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names
