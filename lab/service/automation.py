"""What the Manager offers scripts beyond single runs: custom sweeps, re-runs and clean-up.

A mixin of lab.service.manager.Manager (it uses the manager's scheduler, sweeps, servers, store and
config), kept apart so the manager stays a small facade.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lab.domain import sweepspec
from lab.domain.errors import NotFound
from lab.domain.run import Run
from lab.service.jobs import Who, who_for
from lab.service.scheduler import Stop

if TYPE_CHECKING:
    from lab.service.managed import ServerRegistry
    from lab.service.manager import ManagerConfig
    from lab.service.scheduler import Scheduler
    from lab.service.store import Store
    from lab.service.sweeps import SweepService


class Automation:
    scheduler: Scheduler
    sweeps: SweepService
    servers: ServerRegistry
    store: Store
    config: ManagerConfig

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def start_sweep(self, name: str, only: list[str] | None = None,
                    overrides: dict[str, Any] | None = None, student: str | None = None,
                    who: Who | None = None) -> dict[str, Any]:
        raise NotImplementedError

    # -- custom sweeps -----------------------------------------------------------------------
    def start_custom_sweep(self, definition: dict[str, Any], who: Who | None = None) -> dict[str, Any]:
        """Queue a custom sweep (rows or a grid, lab.domain.sweepspec); DefinitionError names the place at fault."""
        self.scheduler.check_open()
        planned = sweepspec.plan(definition, self.config.limits, self.sweeps.machine)
        return self.sweeps.start_custom(planned, who=who).to_dict()

    def rerun_sweep(self, sweep_id: str, who: Who | None = None) -> dict[str, Any]:
        """Queue a new sweep made like `sweep_id` (its scenario rows or its custom definition)."""
        old = self.get_sweep(sweep_id)
        if old.get("definition"):
            return self.start_custom_sweep(old["definition"], who=who)
        student = old.get("student")  # a student's sweep again is that student's
        return self.start_sweep(old["name"], only=old.get("only"), overrides=old.get("overrides"),
                                student=student, who=who_for(student) if student else who)

    # -- clean-up ----------------------------------------------------------------------------
    def cancel_where(self, match: Callable[[Run], bool], wait: float = 5.0) -> list[dict[str, Any]]:
        """Cancel every queued or running run `match` picks; returns their rows (final, or still stopping)."""
        jobs = self.scheduler.cancel(lambda j: j.run is not None and match(j.run), wait=wait)
        return [self.store.get_run(j.run.id) or j.run.to_dict() for j in jobs]

    def delete_server(self, server_id: str, wait: float = 5.0, reason: str = "deleted") -> dict[str, Any]:
        """Stop a managed server (deleted, or expired: its TTL is over); runs queued or running
        on it are cancelled first."""
        m = self.servers.remove(server_id)
        gone = f"server {server_id} was {reason}"
        self.scheduler.cancel(lambda j: j.needs.server_id == server_id,
                              Stop("cancelled", gone, f"{gone} during the run"), wait=wait)
        info = self.servers.info(m)
        self.servers.stop(m, reason)
        info["running"] = False
        return info

    def delete_servers(self, wait: float = 5.0) -> list[dict[str, Any]]:
        """Stop every managed server (as delete_server each)."""
        out = []
        for server_id in self.servers.ids():
            with contextlib.suppress(NotFound):  # deleted meanwhile
                out.append(self.delete_server(server_id, wait))
        return out
