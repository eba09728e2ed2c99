"""What a job and its answers look like on the broker: plain JSON, checked on arrival.

A job message (the one argument of the Celery task `lab.job`) wraps the job as the JOB CONTRACT
defines it (lab.service.jobs.Job.to_dict(): id, kind, payload, who, needs, ...):

    {"v": 1, "job": {"id": "<job id>", "kind": "run", "payload": {...}, ...},
     "service": "<service id>", "reply_to": "lab:events:<service id>"}

Its answers are entries of the `reply_to` stream, in the order they happened, each
{"job", "worker", "seq", "type", "data"} with `data` a JSON string:

- type "accepted": the worker took the job (data: its stamp, lab.domain.run.WorkerStamp);
- type "event": one of the job's events, exactly as the handler emits it here (lab.measure.execute's);
- type "trace": a chunk of a finished run's per-request trace rows (TRACE_CHUNK rows at most);
- type "end": the job is over (data: the contract's outcome, {"status", "result", "error",
  "started_copying"}, the run's trace taken out of the result: it came before in chunks).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lab.service.broker import NAME, events_key

VERSION = 1
TRACE_CHUNK = 5_000  # trace rows per stream entry (a 1 GiB copy of 4k writes has 262,144 of them)
EntryType = Literal["accepted", "event", "trace", "end"]


class JobCore(BaseModel):
    """The part of a job a worker reads (the rest of the contract's job travels along for the record)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(pattern=NAME.pattern)
    kind: str = Field(pattern=r"^[a-z_]{1,40}$")
    payload: dict[str, Any]


class JobMessage(BaseModel):
    """A job as it travels: the job, and where to answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = VERSION
    job: JobCore
    service: str = Field(pattern=NAME.pattern)
    reply_to: str

    @field_validator("reply_to")
    @classmethod
    def _own_stream(cls, v: str, info: Any) -> str:
        """A worker writes only to the sending service's own stream, never to a key a message names."""
        service = info.data.get("service")
        if service is None or v != events_key(service):
            raise ValueError("reply_to must be the sending service's event stream")
        return v


def entry(job: str, worker: str, seq: int, type_: EntryType, data: Any) -> dict[str, str]:
    """One stream entry's fields (Redis stream fields are strings)."""
    return {"job": job, "worker": worker, "seq": str(seq), "type": type_, "data": json.dumps(data)}


def outcome(status: str, result: Any = None, error: str | None = None, started_copying: bool = False) -> dict[str, Any]:
    """The contract's outcome of a job: status succeeded, failed, cancelled or lost."""
    return {"status": status, "result": result, "error": error, "started_copying": started_copying}


def read_entry(fields: dict[str, str]) -> tuple[str, str, int, EntryType, Any]:
    """(job, worker, seq, type, data) of a stream entry; ValueError for one that is not ours."""
    try:
        type_ = fields["type"]
        if type_ not in ("accepted", "event", "trace", "end"):
            raise ValueError(f"unknown entry type {type_!r}")
        return fields["job"], fields["worker"], int(fields["seq"]), type_, json.loads(fields["data"])  # type: ignore[return-value]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a job entry: {type(e).__name__}: {e}") from None
