"""Server kinds and storages this machine has, and the fast-zero probe."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.http.deps import ManagerDep
from app.http.errors import Problem, responses, spec_error
from app.http.identity import who_of
from app.schemas.runs import KindsOut, ProbeCreate, ProbeOut
from lab.domain.spec import DISK_FORMATS, SpecError
from lab.domain.targets import allowed_targets
from lab.service.jobs import JobFailed

router = APIRouter(tags=["servers"])


@router.get("/kinds", response_model=KindsOut)
def list_kinds(manager: ManagerDep) -> dict[str, Any]:
    """Each server kind and storage with `available` and, when not, `reason`."""
    have = manager.availability()
    return {"kinds": have["kind"], "storages": have["storage"], "disk_formats": list(DISK_FORMATS),
            "external_targets": [t.text for t in allowed_targets(manager.config.limits)]}


@router.post("/probes", response_model=ProbeOut, responses=responses(401, 413, 422, 429, 502))
async def create_probe(body: ProbeCreate, manager: ManagerDep, request: Request) -> dict[str, Any]:
    """Start a server from `server`, probe its zeroing (as `lab probe --json`), stop it; answers when done.
    The probe is a job of the one scheduler: it waits for runs that need the machine alone."""
    raw = body.server.raw() if body.server else {}
    try:
        return await run_in_threadpool(lambda: manager.probe(raw, body.length, who=who_of(request)))
    except SpecError as e:
        raise spec_error(e, ("body",) if e.field == "length" else ("body", "server")) from None
    except JobFailed as e:
        if e.field is not None and e.kind in ("SpecError", "ExternalError"):
            raise spec_error(SpecError(e.field, e.message), ("body", "server")) from None
        raise Problem("probe-failed", e.message) from None
