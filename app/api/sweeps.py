"""Sweeps: groups of runs with their own id (a scenario's rows, or a custom grid); list, get, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api import API_PREFIX
from app.http.deps import ManagerDep
from app.http.errors import field_error, responses
from app.http.etag import ETAG_DOC, NOT_MODIFIED_DOC, IfNoneMatch, conditional, tag_of
from app.http.headers import LINK_NEXT, located
from app.http.idempotency import IdempotencyKey, once
from app.http.identity import who_of
from app.http.pagination import PageDep, link_next
from app.http.waiting import WaitQ, answer_final, finished_responses, wait_final
from app.schemas.runs import RunStatus, SweepList, SweepOut
from app.schemas.sweeps import CustomSweepCreate, SweepRowsOut
from lab.domain.sweepspec import DefinitionError, group_rows
from lab.service.export import row_csv
from lab.service.manager import Manager

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", status_code=202, response_model=SweepOut, response_model_exclude_unset=True,
             responses=located(202, "queued", 400, 401, 409, 413, 422, 429, 503))
def start_custom_sweep(body: CustomSweepCreate, manager: ManagerDep, request: Request, response: Response,
                       idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a custom sweep: `rows`, or a `grid` whose rows are the product of its axes (client,
    queue_depth, any server field), each run `repeats` times; all runs fit in the queue or none is
    queued. `parallelism` caps its runs at once, `priority` orders it against other queued runs."""
    def make() -> dict[str, Any]:
        definition = body.definition()  # a grid's axes go in one order (lab.domain.sweepspec.AXES)
        try:
            sweep = manager.start_custom_sweep(definition, who=who_of(request))
        except DefinitionError as e:
            raise field_error(["body", *e.loc], e.message) from None
        response.headers["Location"] = f"{API_PREFIX}/sweeps/{sweep['id']}"
        return with_runs(manager, sweep)

    return once(manager.idempotency, request, response, idempotency_key, 202, make)


@router.get("", response_model=SweepList, response_model_exclude_unset=True,
    responses={200: {"headers": {"Link": LINK_NEXT}}, **responses(404, 422)})
def list_sweeps(
    manager: ManagerDep,
    request: Request,
    response: Response,
    page: PageDep,
    status: RunStatus | None = None,
    name: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Newest first (see `sort`), one page: follow `next_cursor` (or the `Link` header) for the next."""
    last = manager.last_event_id
    filters = {"status": status.value if status else None, "name": name}
    sweeps, total, nxt = page.of(manager.history, "sweeps", filters)
    link_next(request, response, nxt)
    return {"sweeps": sweeps, "total": total, "next_cursor": nxt, "last_event_id": last}


@router.get("/{sweep_id}", response_model=SweepOut, response_model_exclude_unset=True,
            responses=finished_responses("sweep"))
async def get_sweep(sweep_id: str, manager: ManagerDep, response: Response,
                    wait: WaitQ = 0, if_none_match: IfNoneMatch = None) -> Any:
    """The sweep with its runs in order. `?wait=S` answers when it finishes or after S seconds.
    A finished sweep has an ETag: If-None-Match with it answers 304."""
    return await answer_final(lambda: manager.get_sweep(sweep_id), lambda row: with_runs(manager, row),
                              wait, if_none_match, response)


@router.post("/{sweep_id}/rerun", status_code=202, response_model=SweepOut, response_model_exclude_unset=True,
             responses=located(202, "queued", 401, 404, 409, 422, 429, 503))
def rerun_sweep(sweep_id: str, manager: ManagerDep, request: Request, response: Response,
                idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a new sweep made like this one: the same scenario rows, or the same custom definition."""
    def make() -> dict[str, Any]:
        try:
            sweep = manager.rerun_sweep(sweep_id, who=who_of(request))
        except DefinitionError as e:  # the limits changed since it was saved
            raise field_error(["path", "sweep_id"], f"this sweep cannot run here any more: {e}") from None
        response.headers["Location"] = f"{API_PREFIX}/sweeps/{sweep['id']}"
        return with_runs(manager, sweep)

    return once(manager.idempotency, request, response, idempotency_key, 202, make)


ContendedQ = Annotated[bool | None, Query(
    description="false: leave contended runs out of the statistics; true: only them (default: all, with a warning)")]


async def _rows(manager: Any, sweep_id: str, wait: float, contended: bool | None) -> dict[str, Any]:
    sweep = await wait_final(lambda: manager.get_sweep(sweep_id), wait)
    runs = (await run_in_threadpool(with_runs, manager, sweep))["runs"]
    return {"sweep_id": sweep["id"], "name": sweep["name"], "status": sweep["status"],
            "repeats": sweep.get("repeats") or 1, "contended": contended, "rows": group_rows(runs, contended)}


@router.get("/{sweep_id}/results", response_model=SweepRowsOut,
            responses={200: {"headers": {"ETag": ETAG_DOC}}, 304: NOT_MODIFIED_DOC, **responses(404, 422)})
async def sweep_results(sweep_id: str, manager: ManagerDep, response: Response, wait: WaitQ = 0,
                        contended: ContendedQ = None, if_none_match: IfNoneMatch = None) -> Any:
    """The sweep's runs grouped per row (in order), with p50, p95, min, max and spread of the
    succeeded runs' time, prediction, ratio and backend counts; `contended` per row counts the
    runs marked contended, `warnings` says what makes a row less clean than it looks. `?wait=S` as
    for the sweep. An ETag: If-None-Match with it answers 304 while nothing changed."""
    out = await _rows(manager, sweep_id, wait, contended)
    return conditional(tag_of(out), if_none_match, response) or out


@router.get("/{sweep_id}/results.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "headers": {"ETag": ETAG_DOC}},
    304: NOT_MODIFIED_DOC, **responses(404, 422)})
async def sweep_results_csv(sweep_id: str, manager: ManagerDep, wait: WaitQ = 0, contended: ContendedQ = None,
                            if_none_match: IfNoneMatch = None) -> Response:
    """The same rows, one line each and one column per figure (`duration_s.p50`, `server.size`, ...):
    no JSON in a cell."""
    text = row_csv((await _rows(manager, sweep_id, wait, contended))["rows"])
    out = Response(text, media_type="text/csv; charset=utf-8",
                   headers={"Content-Disposition": f'inline; filename="sweep-{sweep_id}.csv"'})
    return conditional(tag_of(text.encode()), if_none_match, out) or out


@router.post("/{sweep_id}/cancel", response_model=SweepOut, response_model_exclude_unset=True,
    responses=responses(401, 404, 409))
def cancel_sweep(sweep_id: str, manager: ManagerDep) -> dict[str, Any]:
    """Cancel every run of the sweep that has not finished."""
    return with_runs(manager, manager.cancel_sweep(sweep_id))


def with_runs(manager: Manager, sweep: dict[str, Any]) -> dict[str, Any]:
    return {**sweep, "runs": manager.history.sweep_runs(sweep["id"])}
