"""This machine's calibration as jobs of the one scheduler: every point of every kind
(lab.measure.calibration.steps) is a `calibration_point` job in the system's lane with the machine to
itself, one point at a time in order (a group of parallelism 1), so the calibration measures a quiet
machine yet a class's runs wait at most one point's time behind it, not the whole minute; cancel (or the
service's stop) ends it between or inside points. The fit (lab.measure.calibration.fit_kind) runs here
once a kind's points are in, and the whole is saved only when every kind is: a failed or cancelled
calibration leaves the one in use untouched.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from lab.domain.run import new_id
from lab.host.places import Places
from lab.measure import calibration, expectation
from lab.service.jobs import Job, calibration_point_job
from lab.service.scheduler import LOCAL, Scheduler

log = logging.getLogger("lab.service.calibrating")


class Calibrating:
    """At most one calibration at a time per service (two would measure each other)."""

    def __init__(self, scheduler: Scheduler, places: Places | None = None,
                 kinds: tuple[expectation.Kind, ...] = expectation.KINDS) -> None:
        self.scheduler, self.places, self.kinds = scheduler, places, kinds
        self._lock = threading.Lock()
        self._jobs: list[tuple[expectation.Kind, Job]] = []
        self._thread: threading.Thread | None = None
        self.id: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.first = False  # this is the service's first-start calibration (lab serve on a new machine)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, worker: str = LOCAL) -> bool:
        """Queue a calibration (False: one is already under way). ShuttingDown when the service stops."""
        with self._lock:
            if self.running:
                return False
            self.id, self.error, self.started_at, self.finished_at = new_id(), None, time.time(), None
            until = time.time() + calibration.EXTRA_UNTIL_S
            self._jobs = [(kind, calibration_point_job(kind, point, until, group=f"calibration-{self.id}",
                                                       worker=worker))
                          for kind in self.kinds for point in calibration.steps(kind)]
            self.scheduler.submit([job for _k, job in self._jobs])
            self._thread = threading.Thread(target=self._follow, args=(list(self._jobs),), name="calibration",
                                            daemon=True)
            self._thread.start()
            return True

    def cancel(self, wait: float = 0.0) -> None:
        group = f"calibration-{self.id}"
        self.scheduler.cancel(lambda j: j.group == group, wait=wait)

    def _follow(self, jobs: list[tuple[expectation.Kind, Job]]) -> None:
        m = expectation.machine()
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        measured: dict[str, list[dict[str, Any]]] = {}
        fits: dict[str, expectation.Fit] = {}
        try:
            for kind, job in jobs:
                job.done.wait()
                if job.status != "succeeded":
                    error = (job.outcome or {}).get("error") or job.status
                    raise RuntimeError(f"{kind.key}: {error}")
                points = measured.setdefault(kind.key, [])
                points.append((job.outcome or {})["result"])
                if len(points) == len(calibration.steps(kind)):
                    fits[kind.key] = calibration.fit_kind(kind, points)
            cal = expectation.Calibration(expectation.fingerprint(m), m, fits, took_s=round(time.monotonic() - t0, 2),
                                          load_before=load_before)
            expectation.save(cal, self.places)
            log.info("calibrated in %.1f s", cal.took_s)
        except Exception as e:  # reported by state(); the calibration in use stays
            self.error = "cancelled" if self.scheduler.stopping else f"{type(e).__name__}: {e}"
            self.cancel()
            log.warning("calibration failed: %s", self.error)
        finally:
            self.finished_at = time.time()

    def first_start(self, auto_calibrate: bool | None) -> bool:
        """A machine never calibrated (for these tool versions) is calibrated at the service's first start, in
        the background: the service answers at once, says `starting` (health) and "calibrating (n of m)"
        (pages), and runs asked for meanwhile queue behind its points. `auto_calibrate`: LAB_AUTO_CALIBRATE
        (None: only when started from a terminal)."""
        if auto_calibrate is False or (auto_calibrate is None and not sys.stderr.isatty()):
            return False
        if expectation.load(places=self.places) is not None or not self.start():
            return False
        self.first = True
        log.info("first start on this machine: calibrating it in the background (%d points, about a minute); "
                 "runs queue behind it", self.progress()[1])
        return True

    def starting(self) -> tuple[int, int] | None:
        """(points measured, points in all) while the first start's calibration runs, else None. Instant
        (no lock, no file read): /api/v1/health asks it."""
        return self.progress() if self.first and self.running else None

    def progress(self) -> tuple[int, int]:
        """(points measured, points in all) of the calibration under way or last made; no file read."""
        jobs = [job for _k, job in self._jobs]
        return sum(1 for j in jobs if j.done.is_set() and j.status == "succeeded"), len(jobs)

    def state(self) -> dict[str, Any]:
        """`status`: none (never calibrated), queued (waiting for the machine), running, done or failed;
        `step` of `steps` points measured; the calibration in use and its staleness (lab.measure.expectation)."""
        cal = expectation.load(places=self.places)
        jobs = [job for _k, job in self._jobs]
        step = sum(1 for j in jobs if j.done.is_set() and j.status == "succeeded")
        if self.running:
            status = "running" if any(j.status != "queued" for j in jobs) else "queued"
        else:
            status = "failed" if self.error else "done" if cal else "none"
        return {"status": status, "step": step, "steps": len(jobs), "started_at": self.started_at,
                "finished_at": self.finished_at, "error": self.error, "calibration": cal.to_dict() if cal else None,
                **expectation.state(self.places)}
