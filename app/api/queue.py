"""The queue as it stands: which runs wait, in the order they will start, and when each may start."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.http.deps import ManagerDep

router = APIRouter(tags=["runs"])


class QueuedRun(BaseModel):
    id: str
    queue_position: int = Field(description="its place in the order runs will start (1: next)")
    estimated_start_s: float | None = Field(description="seconds from now until it may start (a snapshot); null "
                                                   "while no worker offers what it needs")
    lane: str = Field(description="teacher, student or anonymous: the teacher's runs go first, students take turns")
    student: str | None = None


class QueueSlotsOut(BaseModel):
    """A place runs are carried out (this service's threads, or a cluster worker) and what runs there."""

    id: str = Field(description="'local' (this service's threads) or a worker's name")
    slots: int
    running: list[str] = Field(description="ids of the runs and jobs running there")


class QueueOut(BaseModel):
    runs: list[QueuedRun] = Field(description="queued runs in the order they will start")
    queued: int
    running: int
    workers: list[QueueSlotsOut]


@router.get("/queue", response_model=QueueOut)
def get_queue(manager: ManagerDep) -> dict[str, Any]:
    """Queued runs in the order the scheduler will start them (the teacher's first, then students in
    turns, anonymous callers sharing one turn), each with `estimated_start_s`, and the workers."""
    return manager.queue()
