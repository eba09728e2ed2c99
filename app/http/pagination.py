"""Cursor pages for the list routes (runs, sweeps, results), and the ETag of a finished run or sweep.

A cursor is the sort order and the key of the last row of the page before (base64url of JSON),
so the next page starts exactly after it however many runs were created meanwhile; an offset
would shift. `next_cursor` is null on the last page; the `Link: <...>; rel="next"` header
carries the same URL for clients that follow links.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request, Response

from app.http.errors import Problem
from lab.service.manager import History

Sort = StrEnum("Sort", {s: s for s in ("-created_at", "created_at", "-finished_at", "finished_at", "-duration_s",
                                        "duration_s")})
NEWEST = Sort("-created_at")
OLDEST = Sort("created_at")
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,400}$"

CursorQ = Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the page before")]
SortQ = Annotated[Sort, Query(description="order; `-` first for descending (default: newest first)")]
SinceQ = Annotated[float | None, Query(ge=0, le=1e11, description="created at or after (epoch seconds)")]
UntilQ = Annotated[float | None, Query(ge=0, le=1e11, description="created before (epoch seconds)")]


def encode(sort: str, key: tuple[Any, int]) -> str:
    raw = json.dumps([sort, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, sort: str) -> tuple[Any, int] | None:
    """The key a cursor carries; a 422 naming `cursor` when it is not one of ours or another sort's."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        s, value, seq = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _no_page(cursor, "not a cursor this service made: use next_cursor as given") from None
    if not _sql_number(value) or not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < INT64):
        raise _no_page(cursor, "not a cursor this service made: use next_cursor as given")
    if s != sort:
        raise _no_page(cursor, f"this cursor is for sort={str(s)[:40]!r}, not {sort!r}: keep the same sort")
    return value, seq


INT64 = 1 << 63  # SQLite's integers are signed 64-bit: a larger one cannot even be bound as a parameter


def _sql_number(value: Any) -> bool:
    """A key SQLite can compare: a finite float, or an integer within its 64 bits (not a boolean)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64 <= value < INT64
    return isinstance(value, float) and math.isfinite(value)


def _no_page(cursor: str, why: str) -> Problem:
    """An unknown cursor names no page: 404, with the query parameter named."""
    return Problem("not-found", f"no page for this cursor: {why}",
                   errors=[{"loc": ["query", "cursor"], "message": why, "code": "not_found", "value": cursor}])


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    if cursor is None:
        return
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"] + [("cursor", cursor)]
    response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'


@dataclass(frozen=True)
class Page:
    """Which page of a list route was asked for (its query parameters, from page_query())."""

    since: float | None
    until: float | None
    sort: str
    cursor: str | None
    limit: int

    def of(self, history: History, table: str,
           filters: dict[str, Any]) -> tuple[list[dict[str, Any]], int, str | None]:
        """This page of `table`: its rows, how many match in all, the next page's cursor (None on the last)."""
        rows, total, more = history.page(table, filters, self.sort, decode(self.cursor, self.sort), self.limit,
                                       self.since, self.until)
        return rows, total, (encode(self.sort, more) if more else None)


def page_query(default_limit: int = 100, most: int = 1000) -> Callable[..., Page]:
    """The page query parameters (since, until, sort, cursor, limit: in this order in the OpenAPI
    document) as one dependency; a route takes `page: Annotated[Page, Depends(page_query())]`."""
    def page(**q: Any) -> Page:
        return Page(q["since"], q["until"], q["sort"].value, q["cursor"], q["limit"])

    limit_q = Annotated[int, Query(ge=1, le=most)]
    params = (("since", SinceQ, None), ("until", UntilQ, None), ("sort", SortQ, NEWEST), ("cursor", CursorQ, None),
              ("limit", limit_q, default_limit))
    page.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
         for name, annotation, default in params], return_annotation=Page)
    return page


PageDep = Annotated[Page, Depends(page_query())]
