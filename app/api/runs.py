"""Runs: start (on a fresh server or a managed one), list with filters, inspect, cancel."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.api import API_PREFIX
from app.api.filters import RunFiltersDep
from app.http.deps import ManagerDep
from app.http.errors import field_error, responses, spec_error
from app.http.etag import ETAG_DOC, NOT_MODIFIED_DOC, IfNoneMatch, conditional, tag_of
from app.http.headers import LINK_NEXT, located
from app.http.idempotency import IdempotencyKey, once
from app.http.identity import CallerDep, student_of, who_of
from app.http.pagination import PageDep, link_next
from app.http.waiting import WaitQ, answer_final, finished_responses
from app.schemas.runs import CancelledOut, RunCreate, RunFilter, RunList, RunOut
from lab.domain.errors import Forbidden
from lab.domain.spec import SpecError

router = APIRouter(prefix="/runs", tags=["runs"])


@router.post("", status_code=202, response_model=RunOut, response_model_exclude_unset=True,
    responses=located(202, "queued", 400, 401, 404, 409, 413, 422, 429, 503))
def start_run(body: RunCreate, manager: ManagerDep, caller: CallerDep, request: Request, response: Response,
              idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a run. It starts when a worker is free; follow it at /api/v1/runs/{id}/events. A student's run
    is theirs whatever `student` says (their key names them)."""
    def make() -> dict[str, Any]:
        student = student_of(caller, body.student, manager.classroom)
        if body.server is not None and body.server_id is not None:
            raise field_error(["body", "server_id"], "give either server fields or server_id, not both")
        raw = body.server.raw() if body.server is not None else {}
        try:
            prediction = body.prediction.raw() if body.prediction is not None else None
        except SpecError as e:
            raise spec_error(e, ("body",)) from None
        try:
            run = manager.new_run(body.client.value, raw, server_id=body.server_id, queue_depth=body.queue_depth,
                                  label=body.label, student=student, prediction=prediction)
        except SpecError as e:
            raise spec_error(e, ("body", "server")) from None
        row = with_position(manager, manager.submit(run, who_of(request, run.student)))
        response.headers["Location"] = f"{API_PREFIX}/runs/{row['id']}"
        return row

    return once(manager.idempotency, request, response, idempotency_key, 202, make)


@router.get("", response_model=RunList, response_model_exclude_unset=True,
    responses={200: {"headers": {"Link": LINK_NEXT}}, **responses(404, 422)})
def list_runs(manager: ManagerDep, request: Request, response: Response, page: PageDep,
              filters: RunFiltersDep) -> dict[str, Any]:
    """Newest first (see `sort`), one page: follow `next_cursor` (or the `Link` header) for the next.
    `last_event_id` lets a watcher subscribe to /api/v1/events from exactly this point."""
    last = manager.last_event_id  # before the read: events after it may already be in the list, none lost
    runs, total, nxt = page.of(manager.history, "runs", filters)
    link_next(request, response, nxt)
    response.headers["X-Last-Event-ID"] = str(last)
    waiting = manager.waiting() if any(r.get("status") == "queued" for r in runs) else {}
    return {"runs": [with_position(manager, r, waiting) for r in runs], "total": total, "next_cursor": nxt,
            "last_event_id": last}


def with_position(manager: Any, row: dict[str, Any], waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    """A queued run says its place in the order runs will start (1: next) and when it may start
    (`estimated_start_s`, seconds from now); `waiting`: manager.waiting(), when the caller has it."""
    if row.get("status") == "queued":
        place = (waiting if waiting is not None else manager.waiting()).get(row["id"])
        if place is not None:
            return {**row, **place}
    return row


@router.get("/{run_id}", response_model=RunOut, response_model_exclude_unset=True,
            responses=finished_responses("run"))
async def get_run(run_id: str, manager: ManagerDep, response: Response,
                  wait: WaitQ = 0, if_none_match: IfNoneMatch = None) -> Any:
    """The run. `?wait=S` answers when it finishes or after S seconds, whichever comes first.
    A finished run has an ETag: If-None-Match with it answers 304."""
    return await answer_final(lambda: manager.get_run(run_id), lambda row: with_position(manager, row),
                              wait, if_none_match, response)


@router.post("/cancel", response_model=CancelledOut, response_model_exclude_unset=True,
             responses=responses(401, 403, 422))
def cancel_runs(body: RunFilter, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """Cancel every queued or running run the filter picks (every field given must match; `{}` picks
    them all). Queued ones end at once, running ones are stopped (waits up to 5 s). The teacher's."""
    if not caller.teaches:
        raise Forbidden("cancelling by filter is the teacher's (their token): cancel your own runs one by one")
    given = body.model_dump(exclude_none=True)

    def match(run: Any) -> bool:
        for name, want in given.items():
            have = run.status if name == "status" else getattr(run, name, None)
            if (have.value if isinstance(have, StrEnum) else have) != (want.value if isinstance(want, StrEnum)
                                                                       else want):
                return False
        return True

    rows = manager.cancel_where(match, by=caller.label)
    return {"count": len(rows), "runs": rows}


@router.post("/{run_id}/cancel", response_model=RunOut, response_model_exclude_unset=True,
    responses={
    200: {"description": "the run is cancelled (final state in the body)"},
    202: {"description": "cancel requested; the run is still stopping", "model": RunOut},
    **responses(401, 403, 404, 409),
})
def cancel_run(run_id: str, manager: ManagerDep, caller: CallerDep, response: Response) -> dict[str, Any]:
    """Queued: cancelled at once. Running: its processes are stopped (waits up to 5 s). Finished: 409.
    A student cancels only their own runs; another's needs the teacher's token (403)."""
    owner = manager.get_run(run_id).get("student")
    if not caller.may_change(owner):
        raise Forbidden(f"run {run_id} is not yours ({owner or 'nobody named'}): only the teacher may cancel it")
    row = manager.cancel(run_id, by=caller.label)
    if row["status"] in ("queued", "running"):
        response.status_code = 202
    return row


TRACE_DOC = {200: {"description": "one row per request: seq, t0/t1 (s since the copy started), op, kind, offset, "
                                  "count, flags, result, conn, source",
                   "headers": {"ETag": ETAG_DOC}, "content": {"application/x-ndjson": {}, "text/csv": {}}}}


@router.get("/{run_id}/trace", response_class=StreamingResponse,
            responses={**TRACE_DOC, 304: NOT_MODIFIED_DOC, **responses(404, 422)})
def get_trace(run_id: str, manager: ManagerDep, if_none_match: IfNoneMatch = None,
              format: Annotated[str, Query(pattern="^(ndjson|csv)$")] = "ndjson") -> Response:
    """The run's requests as nbdkit's log filter recorded them (see lab/nbd/diskmap.py for the kinds).

    Kept for finished runs that reached the copy; 404 for a run that has none (yet). A trace never
    changes once written: its ETag (If-None-Match -> 304) saves fetching it again."""
    run = manager.get_run(run_id)
    path = manager.history.trace_path(run_id)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise HTTPException(404, f"run {run_id} has no trace"
                            + (" yet: it is still going" if run["status"] in ("queued", "running") else "")) from None
    tag = tag_of([run_id, format, stat.st_size, stat.st_mtime_ns])
    out: StreamingResponse
    if format == "csv":
        out = StreamingResponse(manager.history.trace_csv(run_id), media_type="text/csv",
                                headers={"Content-Disposition": f'attachment; filename="trace-{run_id}.csv"'})
    else:
        out = StreamingResponse(_file_chunks(path), media_type="application/x-ndjson")
    return conditional(tag, if_none_match, out) or out


def _file_chunks(path: Any) -> Any:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            yield chunk
