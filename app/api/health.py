"""Health and tool versions (looked up once at startup: health must stay instant under load)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.http.deps import ManagerDep
from app.schemas.runs import ClientOut, HealthOut
from lab.domain.clients import CATALOG

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
async def health(request: Request, manager: ManagerDep) -> dict[str, Any]:
    """On the event loop, no thread hop and no lock: it answers while every worker thread is busy.
    `status`: ok, or starting while the first start's calibration runs (`calibrating`: step of steps);
    both mean the service answers (the compose healthcheck takes both)."""
    versions = request.app.state.versions
    starting = manager.starting()  # the first start's calibration: serving, runs queue behind it
    return {"status": "starting" if starting else "ok", "version": versions.get("fastzero-lab", "unknown"),
            "versions": versions, "manager": manager.stats(),
            "calibrating": {"step": starting[0], "steps": starting[1]} if starting else None}


@router.get("/clients", response_model=list[ClientOut], tags=["runs"])
def clients() -> list[dict[str, Any]]:
    return [c.to_dict() for c in CATALOG]
