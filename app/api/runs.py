"""Runs: start (on a fresh server or a managed one), list with filters, inspect, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import StreamingResponse

from app.api import API_PREFIX
from app.deps import ManagerDep
from app.errors import field_error, responses, spec_error
from app.schemas import ClientId, RunCreate, RunList, RunOut, RunStatus
from lab import diskmap
from lab.spec import SpecError

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=202, response_model=RunOut, responses=responses(400, 401, 404, 413, 422, 429, 503))
def start_run(body: RunCreate, manager: ManagerDep, response: Response) -> dict[str, Any]:
    """Queue a run. It starts when a worker is free; follow it at /api/runs/{id}/events."""
    if body.server is not None and body.server_id is not None:
        raise field_error(["body", "server_id"], "give either server fields or server_id, not both")
    raw = body.server.raw() if body.server is not None else {}
    try:
        run = manager.new_run(body.client.value, raw, server_id=body.server_id, queue_depth=body.queue_depth,
                              label=body.label)
    except SpecError as e:
        raise spec_error(e, ("body", "server")) from None
    row = manager.submit(run)
    response.headers["Location"] = f"{API_PREFIX}/runs/{row['id']}"
    return row


@router.get("", response_model=RunList)
def list_runs(
    manager: ManagerDep,
    response: Response,
    status: RunStatus | None = None,
    client: ClientId | None = None,
    sweep_id: Annotated[str | None, Query(max_length=64)] = None,
    server_id: Annotated[str | None, Query(max_length=64)] = None,
    label: Annotated[str | None, Query(max_length=80)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Newest first. `last_event_id` lets a watcher subscribe to /api/events from exactly this point."""
    last = manager.last_event_id  # before the read: events after it may already be in the list, none lost
    runs, total = manager.store.list_runs(status=status.value if status else None,
                                          client=client.value if client else None, sweep_id=sweep_id,
                                          server_id=server_id, label=label, limit=limit, offset=offset)
    response.headers["X-Last-Event-ID"] = str(last)
    return {"runs": runs, "total": total, "last_event_id": last}


@router.get("/{run_id}", response_model=RunOut, responses=responses(404))
def get_run(run_id: str, manager: ManagerDep) -> dict[str, Any]:
    return manager.get_run(run_id)


@router.post("/{run_id}/cancel", response_model=RunOut, responses={
    200: {"description": "the run is cancelled (final state in the body)"},
    202: {"description": "cancel requested; the run is still stopping", "model": RunOut},
    **responses(401, 404, 409),
})
def cancel_run(run_id: str, manager: ManagerDep, response: Response) -> dict[str, Any]:
    """Queued: cancelled at once. Running: its processes are stopped (waits up to 5 s). Finished: 409."""
    row = manager.cancel(run_id)
    if row["status"] in ("queued", "running"):
        response.status_code = 202
    return row


TRACE_DOC = {200: {"description": "one row per request: seq, t0/t1 (s since the copy started), op, kind, offset, "
                                  "count, flags, result, conn, source",
                   "content": {"application/x-ndjson": {}, "text/csv": {}}}}


@router.get("/{run_id}/trace", response_class=StreamingResponse, responses={**TRACE_DOC, **responses(404, 422)})
def get_trace(run_id: str, manager: ManagerDep,
              format: Annotated[str, Query(pattern="^(ndjson|csv)$")] = "ndjson") -> StreamingResponse:
    """The run's requests as nbdkit's log filter recorded them (see lab/diskmap.py for the kinds).

    Kept for finished runs that reached the copy; 404 for a run that has none (yet)."""
    run = manager.get_run(run_id)
    path = diskmap.trace_path(manager.store.dir, run_id)
    if not path.exists():
        raise HTTPException(404, f"run {run_id} has no trace"
                            + (" yet: it is still going" if run["status"] in ("queued", "running") else ""))
    if format == "csv":
        return StreamingResponse(diskmap.to_csv(diskmap.load(manager.store.dir, run_id)), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="trace-{run_id}.csv"'})
    return StreamingResponse(_file_chunks(path), media_type="application/x-ndjson")


def _file_chunks(path: Any) -> Any:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            yield chunk
