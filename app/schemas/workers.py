"""The cluster's workers as GET /api/v1/workers shows them (lab.service.remote.CeleryExecutor.status)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas.runs import Scalar


class WorkerOut(BaseModel):
    name: str = Field(description="the worker's name in the cluster (LAB_WORKER_NAME, else its host name)")
    state: str | None = Field(description="starting, calibrating, ready (takes jobs) or draining (leaving)")
    slots: int | None = Field(description="jobs it runs at once")
    running: list[str] = Field(description="ids of the jobs (runs) it is carrying out, as it says")
    jobs_here: list[str] = Field(description="ids of this service's jobs placed on it")
    load: list[float] | None = Field(description="its load average over 1, 5 and 15 minutes")
    cores: int | None
    fingerprint: str | None = Field(description="its machine and tool versions (CPU, kernel, nbdkit, qemu...)")
    machine: dict[str, Scalar] | None = Field(description="what the fingerprint is made of: cpu, cores, kernel, "
                                                          "python, nbdkit, qemu-img, nbdcopy, libnbd")
    capabilities: list[str] = Field(description="what jobs may ask of it: kind:K, storage:S, root")
    calibrated_at: float | None = Field(description="when it was calibrated (null: never: its runs have no "
                                                    "expected_s)")
    calibration_age_s: float | None
    heartbeat_at: float | None = Field(description="its last heartbeat (every second; gone after 5 s without)")
    heartbeat_age_s: float
    started_at: float | None


class WorkersOut(BaseModel):
    cluster: bool = Field(description="whether this service sends measurements to workers (LAB_BROKER_URL)")
    workers: list[WorkerOut]
