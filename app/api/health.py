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
    """On the event loop, no thread hop and no lock: it answers while every worker thread is busy."""
    versions = request.app.state.versions
    return {"status": "ok", "version": versions.get("fastzero-lab", "unknown"), "versions": versions,
            "manager": manager.stats()}


@router.get("/clients", response_model=list[ClientOut], tags=["runs"])
def clients() -> list[dict[str, Any]]:
    return [c.to_dict() for c in CATALOG]
