"""Results as JSON and CSV: Run.to_dict() rows (the CLI's JSON), CSV flattened by lab.service.export.

Both page like /runs and take its filters (app/api/filters.py: newest first by default, an
opaque cursor, since/until, student, server_id, contended, server fields); the CSV's next page
is in its `Link` header (and `X-Next-Cursor`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.api.filters import RunFiltersDep
from app.http.deps import ManagerDep
from app.http.errors import responses
from app.http.etag import ETAG_DOC, NOT_MODIFIED_DOC, IfNoneMatch, conditional, tag_of
from app.http.headers import LINK_NEXT
from app.http.pagination import Page, link_next, page_query
from app.schemas.runs import ResultsOut
from lab.service.export import COLUMNS, to_csv

router = APIRouter(tags=["results"])

MAX_ROWS = 10_000

ResultsPage = Annotated[Page, Depends(page_query(default_limit=1000, most=MAX_ROWS))]


@router.get("/results.json", response_model=ResultsOut, response_model_exclude_unset=True,
            responses={200: {"headers": {"Link": LINK_NEXT, "ETag": ETAG_DOC}}, 304: NOT_MODIFIED_DOC,
                       **responses(404, 422)})
def results_json(manager: ManagerDep, request: Request, response: Response, page: ResultsPage,
                 filters: RunFiltersDep, if_none_match: IfNoneMatch = None) -> Any:
    """Runs newest first (`sort=created_at`: a sweep's rows in their order), each as `lab run --json` prints it.
    The page has an ETag: If-None-Match with it answers 304 while nothing on the page changed."""
    rows, _, nxt = page.of(manager.history, "runs", filters)
    out = {"rows": rows, "count": len(rows), "columns": list(COLUMNS), "next_cursor": nxt}
    link_next(request, response, nxt)
    return conditional(tag_of(out), if_none_match, response) or out


@router.get("/results.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}},
          "headers": {"Link": LINK_NEXT, "ETag": ETAG_DOC,
                      "X-Next-Cursor": {"description": "the next page's cursor", "schema": {"type": "string"}}}},
    304: NOT_MODIFIED_DOC, **responses(404, 422)})
def results_csv(manager: ManagerDep, request: Request, page: ResultsPage, filters: RunFiltersDep,
                if_none_match: IfNoneMatch = None) -> Response:
    """The same rows, one column per leaf (`backend.write_ops`, `server.zeromode`, ...); an ETag as for JSON."""
    rows, _, nxt = page.of(manager.history, "runs", filters)
    text = to_csv(rows)
    out = Response(text, media_type="text/csv; charset=utf-8",
                   headers={"Content-Disposition": 'inline; filename="fastzero-results.csv"'})
    not_modified = conditional(tag_of(text.encode()), if_none_match, out)
    if not_modified is not None:
        return not_modified
    link_next(request, out, nxt)
    if nxt:
        out.headers["X-Next-Cursor"] = nxt
    return out
