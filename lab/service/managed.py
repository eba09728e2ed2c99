"""The server registry: long-lived (managed) nbdkit servers that runs can target by `server_id`.

It starts, lists and stops them; stopping the runs that use a server is the caller's part
(through the worker pool's cancel), since only the pool knows its jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.domain.errors import ManagerError, NotFound, ServerLimit, ShuttingDown, StartFailed
from lab.domain.spec import ServerSpec
from lab.host.places import Core
from lab.nbd.servers import Server

log = logging.getLogger("lab.service.managed")


@dataclass
class Managed:
    server: Server
    created_at: float = field(default_factory=time.time)
    runs: int = 0
    ttl_s: float | None = None  # stopped this long after it was created (None: never)

    @property
    def expires_at(self) -> float | None:
        return None if self.ttl_s is None else self.created_at + self.ttl_s


class ServerRegistry:
    def __init__(self, max_servers: int, publish: Callable[..., Any], busy: Callable[[str], bool],
                 core: Core | None = None) -> None:
        self.max_servers = max_servers
        self.core = core or Core()  # where the servers' files go, what kind external may use
        self._publish, self._busy = publish, busy
        self._lock = threading.Lock()
        self._servers: dict[str, Managed] = {}
        self._closed = False

    def create(self, spec: ServerSpec, ttl_s: float | None = None) -> dict[str, Any]:
        """Start a server for `spec` (stopped `ttl_s` after; see expired()); ServerLimit at
        max_servers, ShuttingDown once closed."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("the service is shutting down")
            if len(self._servers) >= self.max_servers:
                raise ServerLimit(f"at most {self.max_servers} servers may run at once",
                                  can_wait=self.max_servers > 0)
            managed = Managed(Server(spec, places=self.core.places, limits=self.core.limits), ttl_s=ttl_s)
            srv = managed.server
            self._servers[srv.id] = managed  # holds the slot while nbdkit starts
        try:
            srv.start()
        except BaseException as e:
            with self._lock:
                self._servers.pop(srv.id, None)
            if isinstance(e, Exception) and not isinstance(e, ManagerError):
                raise StartFailed(f"the server did not start: {type(e).__name__}: {e}") from e
            raise
        with self._lock:
            stale = self._closed or srv.id not in self._servers
            if stale:
                self._servers.pop(srv.id, None)  # close() leaves servers still starting to us
            else:
                info = self.info(managed)
                self._publish("server", None, None, server_id=srv.id, status="started", server=info)
        if stale:
            srv.stop()
            raise ShuttingDown("the service is shutting down")
        return info

    def get(self, server_id: str) -> Managed:
        """A started server (NotFound for an unknown one or one still starting)."""
        with self._lock:
            return self._started(server_id)

    def _started(self, server_id: str) -> Managed:
        m = self._servers.get(server_id)
        if m is None or m.server.flags is None:
            raise NotFound(f"server {server_id} not found")
        return m

    def expired(self, now: float | None = None) -> list[str]:
        """Ids of started servers whose time to live is over."""
        now = time.time() if now is None else now
        with self._lock:
            return [sid for sid, m in self._servers.items()
                    if m.server.flags is not None and m.expires_at is not None and m.expires_at <= now]

    def ids(self) -> list[str]:
        with self._lock:
            return [sid for sid, m in self._servers.items() if m.server.flags is not None]

    def has(self, server_id: str) -> bool:
        return server_id in self._servers

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            managed = [m for m in self._servers.values() if m.server.flags is not None]
        return [self.info(m) for m in managed]

    def claim(self, server_id: str) -> Managed | None:
        """The server a run is about to use (counted), None when it is gone."""
        with self._lock:
            m = self._servers.get(server_id)
            if m is not None:
                m.runs += 1
            return m

    def remove(self, server_id: str) -> Managed:
        """Take a started server out of the table (no new run can claim it); stop() it after."""
        with self._lock:
            m = self._started(server_id)
            del self._servers[server_id]
            return m

    def stop(self, m: Managed, reason: str = "deleted") -> None:
        try:
            m.server.stop()
        except Exception:
            log.exception("stopping server %s", m.server.id)
        try:
            self._publish("server", None, None, server_id=m.server.id, status="stopped", reason=reason)
        except Exception:
            log.exception("publishing a server event")

    def close(self) -> None:
        """Stop every started server; ones still starting are stopped by their creator."""
        with self._lock:
            self._closed = True
            servers = [m for m in self._servers.values() if m.server.flags is not None]
            for m in servers:
                del self._servers[m.server.id]
        for m in servers:
            self.stop(m, "shutdown")

    def info(self, m: Managed) -> dict[str, Any]:
        srv = m.server
        info = srv.info()
        info.pop("pid", None)
        info.update(created_at=m.created_at, runs=m.runs, busy=self._busy(srv.id), ttl_s=m.ttl_s,
                    expires_at=m.expires_at,
                    backend=srv.backend().to_dict() if srv.running else None)
        return info

    def __len__(self) -> int:
        return len(self._servers)
