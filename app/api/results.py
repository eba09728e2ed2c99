"""Results as JSON and CSV: Run.to_dict() rows (the CLI's JSON), CSV flattened by lab.service.export.

Both page like /runs (newest first by default, an opaque cursor, since/until, server-field
filters); the CSV's next page is in its `Link` header (and `X-Next-Cursor`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.runs import ServerFiltersDep
from app.http.deps import ManagerDep
from app.http.errors import responses
from app.http.headers import LINK_NEXT
from app.http.pagination import Page, link_next, page_query
from app.schemas.runs import ClientId, ResultsOut, RunStatus
from lab.service.export import COLUMNS, to_csv

router = APIRouter(tags=["results"])

MAX_ROWS = 10_000

SweepQ = Annotated[str | None, Query(max_length=64, description="only this sweep's runs")]
LabelQ = Annotated[str | None, Query(max_length=80, description="only runs with this label (scenario row key)")]
ResultsPage = Annotated[Page, Depends(page_query(default_limit=1000, most=MAX_ROWS))]


def _filters(sweep_id: str | None, client: ClientId | None, status: RunStatus | None, label: str | None,
             server: dict[str, Any]) -> dict[str, Any]:
    return {"sweep_id": sweep_id, "client": client.value if client else None,
            "status": status.value if status else None, "label": label, **server}


@router.get("/results.json", response_model=ResultsOut, response_model_exclude_unset=True,
            responses={200: {"headers": {"Link": LINK_NEXT}}, **responses(404, 422)})
def results_json(manager: ManagerDep, request: Request, response: Response, page: ResultsPage,
                 server: ServerFiltersDep, sweep_id: SweepQ = None, client: ClientId | None = None,
                 status: RunStatus | None = None, label: LabelQ = None) -> dict[str, Any]:
    """Runs newest first (`sort=created_at`: a sweep's rows in their order), each as `lab run --json` prints it."""
    rows, _, nxt = page.of(manager.history, "runs", _filters(sweep_id, client, status, label, server))
    link_next(request, response, nxt)
    return {"rows": rows, "count": len(rows), "columns": list(COLUMNS), "next_cursor": nxt}


@router.get("/results.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "headers": {"Link": LINK_NEXT, "X-Next-Cursor": {"description": "the next page's cursor",
                                                            "schema": {"type": "string"}}}},
    **responses(404, 422)})
def results_csv(manager: ManagerDep, request: Request, page: ResultsPage, server: ServerFiltersDep,
                sweep_id: SweepQ = None, client: ClientId | None = None, status: RunStatus | None = None,
                label: LabelQ = None) -> Response:
    """The same rows, one column per leaf (`backend.write_ops`, `server.zeromode`, ...)."""
    rows, _, nxt = page.of(manager.history, "runs", _filters(sweep_id, client, status, label, server))
    out = Response(to_csv(rows), media_type="text/csv; charset=utf-8",
                   headers={"Content-Disposition": 'inline; filename="fastzero-results.csv"'})
    link_next(request, out, nxt)
    if nxt:
        out.headers["X-Next-Cursor"] = nxt
    return out
