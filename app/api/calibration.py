"""This machine's calibration: the coefficients behind each run's `expected_s` (lab.measure.expectation,
measured by lab.measure.calibration).

Measuring takes about a minute, so POST queues it (202: its points are jobs of the scheduler,
lab.service.calibrating) and GET reports it; the service's shutdown cancels one in progress.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.http.deps import ManagerDep
from app.http.errors import Problem, responses
from app.schemas.runs import CalibrationState

router = APIRouter(tags=["calibration"])


@router.get("/calibration", response_model=CalibrationState)
def get_calibration(manager: ManagerDep) -> dict[str, Any]:
    """`status`: none (this machine and these tool versions were never calibrated), running, done or
    failed; `calibration`: the coefficients in use (null when none); `stale`: a control (a short copy
    measured before CPU-bound runs) drifted beyond what the intervals allow for, `controls` the newest."""
    return manager.calibration_state()


@router.post("/calibration", status_code=202, responses=responses(401, 429))
def create_calibration(request: Request, manager: ManagerDep) -> JSONResponse:
    """Measure the coefficients again in the background (about 30-60 s): each point is a job of the
    scheduler with the machine to itself, one at a time, before the runs waiting (runs already running
    finish first); GET follows it (`step` of `steps`)."""
    if not manager.calibrate():
        raise Problem("limit-reached", "a calibration is already running; GET /calibration follows it")
    return JSONResponse(manager.calibration_state(), status_code=202, headers={"Location": str(request.url)})
