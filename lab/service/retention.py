"""How long progress events are kept: those of runs that finished long ago are deleted (state,
done and sweep events stay forever), at start and then at most every `every_s`, as runs finish.
"""

from __future__ import annotations

import logging
import time

from lab.service.store import Store

log = logging.getLogger("lab.service.retention")

PRUNE_EVERY_S = 600.0


class Retention:
    def __init__(self, store: Store, max_age_s: float | None, max_events: int | None,
                 every_s: float = PRUNE_EVERY_S) -> None:
        """`max_age_s`: progress of runs finished longer ago is deleted (None: keep); `max_events`:
        beyond this many progress rows the oldest finished runs' go first (None: no cap)."""
        self.store, self.max_age_s, self.max_events, self.every_s = store, max_age_s, max_events, every_s
        self._pruned_at = 0.0

    def prune(self) -> int:
        """Delete what the limits say; returns how many events. Never raises (logs instead)."""
        self._pruned_at = time.monotonic()
        try:
            older = time.time() - self.max_age_s if self.max_age_s is not None else None
            n = self.store.prune_progress(finished_before=older, keep_at_most=self.max_events)
        except Exception:
            log.exception("pruning old progress events")
            return 0
        if n:
            log.info("pruned %d progress events of finished runs", n)
        return n

    def maybe_prune(self) -> int:
        """prune() if the last one is `every_s` old."""
        return self.prune() if time.monotonic() - self._pruned_at > self.every_s else 0
