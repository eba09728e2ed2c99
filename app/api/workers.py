"""Cluster mode's workers: who is there, what each has, how busy it is, when it last spoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.http.deps import ManagerDep
from app.schemas.workers import WorkersOut

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=WorkersOut)
def list_workers(manager: ManagerDep) -> dict[str, Any]:
    """Every `lab worker` connected to this service's broker, from its heartbeat (each second): its
    fingerprint, calibration age, load, running jobs and capabilities. Without a broker
    (LAB_BROKER_URL unset) `cluster` is false and the list is empty: every run is carried out here."""
    return manager.cluster()
