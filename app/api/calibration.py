"""This machine's calibration: the coefficients behind each run's `expected_s` (lab.measure.expectation,
measured by lab.measure.calibration).

Measuring takes about a minute, so POST starts it in the background (202) and GET reports it;
the service's shutdown cancels one in progress (its runs stop and leave nothing behind).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.http.errors import Problem, responses
from app.schemas.runs import CalibrationState
from lab.host.places import Places
from lab.measure import calibration, expectation

router = APIRouter(tags=["calibration"])


class CalibrationJob:
    """At most one calibration at a time per service (two would measure each other)."""

    def __init__(self, places: Places | None) -> None:
        self.places = places  # the service's calibration file (lab.host.places), handed down
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        with self._lock:
            if self.running:
                return False
            self._cancel = threading.Event()
            self.started_at, self.finished_at, self.error = time.time(), None, None
            self._thread = threading.Thread(target=self._work, name="calibration", daemon=True)
            self._thread.start()
            return True

    def _work(self) -> None:
        try:
            calibration.calibrate(cancel=self._cancel, places=self.places)
        except calibration.Cancelled:
            self.error = "cancelled (the service stopped)"
        except Exception as e:  # reported by GET; the previous calibration stays in use
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.finished_at = time.time()

    def stop(self, timeout: float = 30.0) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def state(self) -> dict[str, Any]:
        cal = expectation.load(places=self.places)
        status = "running" if self.running else "failed" if self.error else "done" if cal else "none"
        return {"status": status, "started_at": self.started_at, "finished_at": self.finished_at,
                "error": self.error, "calibration": cal.to_dict() if cal else None,
                **expectation.state(self.places)}


def job(request: Request) -> CalibrationJob:
    j = getattr(request.app.state, "calibration", None)
    if j is None:
        j = request.app.state.calibration = CalibrationJob(request.app.state.manager.config.places)
    return j


@router.get("/calibration", response_model=CalibrationState)
def get_calibration(request: Request) -> dict[str, Any]:
    """`status`: none (this machine and these tool versions were never calibrated), running, done or
    failed; `calibration`: the coefficients in use (null when none); `stale`: a control (a short copy
    measured before CPU-bound runs) drifted beyond what the intervals allow for, `controls` the newest."""
    return job(request).state()


@router.post("/calibration", status_code=202, responses=responses(401, 429))
def create_calibration(request: Request) -> JSONResponse:
    """Measure the coefficients again in the background (about 30-60 s); GET follows it. Best on an
    idle lab: runs in progress share the machine with it."""
    j = job(request)
    if not j.start():
        raise Problem("limit-reached", "a calibration is already running; GET /calibration follows it")
    return JSONResponse(j.state(), status_code=202, headers={"Location": str(request.url)})
