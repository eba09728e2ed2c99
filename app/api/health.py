"""Health and tool versions (looked up once at startup: health must stay instant under load)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request

from app.http.deps import ManagerDep
from app.schemas.runs import ClientOut, HealthOut
from lab.domain.clients import CATALOG

router = APIRouter(tags=["health"])


def tool_versions() -> dict[str, str]:
    from lab.nbd.clients.real import version
    from lab.nbd.servers import nbdkit_version

    try:
        import nbd

        libnbd = str(nbd.NBD().get_version())
    except Exception as e:  # the bindings are missing: say so rather than fail health
        libnbd = f"unavailable ({type(e).__name__})"
    out = {"nbdkit": nbdkit_version(), "qemu-img": version("qemu-img"), "libnbd": libnbd,
           "nbdcopy": version("nbdcopy"), "python": platform.python_version()}
    for dist in ("fastapi", "fastzero-lab"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


@router.get("/health", response_model=HealthOut)
async def health(request: Request, manager: ManagerDep) -> dict[str, Any]:
    """On the event loop, no thread hop and no lock: it answers while every worker thread is busy."""
    versions = request.app.state.versions
    return {"status": "ok", "version": versions.get("fastzero-lab", "unknown"), "versions": versions,
            "manager": manager.stats()}


@router.get("/clients", response_model=list[ClientOut], tags=["runs"])
def clients() -> list[dict[str, Any]]:
    return [c.to_dict() for c in CATALOG]
