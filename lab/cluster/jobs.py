"""A job on a worker: the service's own handlers (lab.service.jobs.HANDLERS), with this machine's settings.

The worker carries a job out exactly as the service's LocalExecutor would, through the same handler,
with a context of its own: its Core (data dir, limits and so its allow-lists), no managed servers
(they live on the service). Before anything starts, a job is checked against this worker's own
limits: a server field outside them (an external target it does not list, a size above its
LAB_MAX_SIZE, a kind or storage this machine lacks) refuses the job, whatever the service allowed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.domain.spec import SpecError, build_spec
from lab.host.places import Core
from lab.nbd.backends import Machine
from lab.service.jobs import HANDLERS


class Refused(Exception):
    """This worker will not run the job (the message says why, naming the field where there is one)."""


@dataclass
class WorkerContext:
    """lab.service.jobs.Context on a worker."""

    emit_to: Callable[[dict[str, Any]], None]
    cancel: threading.Event
    core: Core
    image_cache_bytes: int | None = None

    def emit(self, event: dict[str, Any]) -> None:
        self.emit_to(event)

    def managed_server(self, server_id: str) -> Any:
        return None  # managed servers live on the service (capability "managed"), never here


def check(kind: str, payload: dict[str, Any], core: Core) -> None:
    """Refused unless this worker has a handler for `kind` and the job's server fits its own limits."""
    if kind not in HANDLERS:
        raise Refused(f"unknown job kind {kind!r} (this worker runs {', '.join(sorted(HANDLERS))})")
    if kind != "run":
        return
    run = payload.get("run")
    if not isinstance(run, dict) or not isinstance(run.get("server"), dict):
        raise Refused("a run job carries its run, with its server fields")
    if run.get("server_id") is not None:
        raise Refused("a run on a managed server runs where that server is (the service)")
    try:
        build_spec(run["server"], core.limits, Machine(core.places))
    except SpecError as e:
        raise Refused(f"server field {e.field}: {e.message} (this worker's own limits)") from None


def carry_out(kind: str, payload: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
    """The job's result, from the service's handler for `kind`."""
    return HANDLERS[kind](payload, ctx)
