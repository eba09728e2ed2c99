"""Servers with a time to live: a thread that stops each one when its TTL is over.

A script that crashes leaves its long-lived servers behind; each server therefore has a TTL
(LAB_SERVER_TTL_S by default, or its own), and this thread stops it when the TTL is over the
way DELETE does (its queued and running runs are cancelled first), recorded as a `server`
event with `status: stopped, reason: expired`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("lab.service.expiry")


class Reaper:
    def __init__(self, expired: Callable[[], list[str]], stop: Callable[[str], object], every_s: float = 0.5) -> None:
        self._expired, self._stop, self.every_s = expired, stop, every_s
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self._loop, name="lab-server-ttl", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._quit.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._quit.wait(self.every_s):
            for server_id in self._expired():
                try:
                    self._stop(server_id)
                except Exception as e:  # gone meanwhile (deleted by its owner): nothing to do
                    log.debug("expiring server %s: %s", server_id, e)
