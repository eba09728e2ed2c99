"""This machine's calibration: the coefficients behind each run's `expected_s` (lab.calibrate)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.errors import Problem, responses
from lab import calibrate

router = APIRouter(tags=["calibration"])
# Calibrating runs ~50 small copies; two at once would measure each other.
_lock = threading.Lock()


@router.get("/calibration", responses=responses(404))
def get_calibration() -> dict[str, Any]:
    """The cached calibration of this machine and tool versions (404 until `POST /calibration` or
    `lab calibrate` has made one)."""
    cal = calibrate.load()
    if cal is None:
        raise Problem("not-found", "this machine is not calibrated (or its tools changed): POST /calibration")
    return cal.to_dict()


@router.post("/calibration", responses=responses(401, 429))
async def create_calibration() -> dict[str, Any]:
    """Measure the coefficients again (about 30-60 s; answers when done). Best on an idle lab: runs
    in progress share the machine with it."""
    if not _lock.acquire(blocking=False):
        raise Problem("limit-reached", "a calibration is already running; try again when it is done")
    try:
        cal = await run_in_threadpool(calibrate.calibrate)
    finally:
        _lock.release()
    return cal.to_dict()
