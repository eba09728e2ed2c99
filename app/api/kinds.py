"""Server kinds and storages this machine has, and the fast-zero probe."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.http.deps import ManagerDep
from app.http.errors import Problem, responses, spec_error
from app.schemas.runs import KindsOut, ProbeCreate, ProbeOut
from lab.domain.spec import DISK_FORMATS, SpecError
from lab.domain.targets import ExternalError, allowed_targets
from lab.host import storage
from lab.nbd import backends, probe

router = APIRouter(tags=["servers"])
# Probes write hundreds of MiB at full speed: one at a time keeps the others' runs honest.
_probe_lock = threading.Lock()


@router.get("/kinds", response_model=KindsOut)
def list_kinds(manager: ManagerDep) -> dict[str, Any]:
    """Each server kind and storage with `available` and, when not, `reason`."""
    have = manager.availability()
    return {"kinds": have["kind"], "storages": have["storage"], "disk_formats": list(DISK_FORMATS),
            "external_targets": [t.text for t in allowed_targets(manager.config.limits)]}


@router.post("/probes", response_model=ProbeOut, responses=responses(401, 413, 422, 429, 502))
async def create_probe(body: ProbeCreate, manager: ManagerDep) -> dict[str, Any]:
    """Start a server from `server`, probe its zeroing (as `lab probe --json`), stop it; answers when done."""
    raw = body.server.raw() if body.server else {}
    length = body.length or probe.DEFAULT_LENGTH
    if not probe.MIN_LENGTH <= length <= probe.MAX_LENGTH or length % 4096:
        raise spec_error(SpecError("length", "must be a multiple of 4K between 1M and 256M"), ("body",))
    if not _probe_lock.acquire(blocking=False):
        raise Problem("limit-reached", "a probe is already running; try again when it is done")
    try:
        return await run_in_threadpool(probe.probe_server, raw, length, probe.DEFAULT_DEADLINE_S,
                                       manager.config.limits, manager.config.places)
    except SpecError as e:
        raise spec_error(e, ("body", "server")) from None
    except ExternalError as e:
        raise spec_error(SpecError(e.field, e.message), ("body", "server")) from None
    except (probe.ProbeError, backends.KindError, storage.StorageError) as e:
        raise Problem("probe-failed", str(e)) from None
    finally:
        _probe_lock.release()
