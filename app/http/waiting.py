"""GET of a run or sweep: `?wait=SECONDS` answers when it is finished, or when time is up; a
finished one carries its ETag (If-None-Match with it answers 304).

The wait polls the database from the event loop (no thread is held while waiting, so many
waiting clients cost nothing), starting at 50 ms and backing off to 500 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

from app.http.errors import responses
from app.http.etag import conditional, tag_of
from app.http.headers import ETAG
from lab.domain.run import FINAL

MAX_WAIT_S = 60.0
WaitQ = Annotated[float, Query(ge=0, le=MAX_WAIT_S,
                               description="block up to this many seconds until it is finished (0: answer now)")]


def finished_responses(what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses of GET of one `what` (run or sweep) answered by `answer_final`."""
    return {200: {"headers": {"ETag": ETAG}},
            304: {"description": f"If-None-Match named the finished {what}'s ETag: it has not changed"},
            **responses(404, 422)}


async def wait_for(fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
                   seconds: float) -> dict[str, Any]:
    row = await run_in_threadpool(fetch)
    deadline = time.monotonic() + seconds
    pause = 0.05
    while not done(row) and time.monotonic() < deadline:
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)
        row = await run_in_threadpool(fetch)
    return row


async def wait_final(fetch: Callable[[], dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The run or sweep once it is finished, or as it is after `seconds`."""
    return await wait_for(fetch, lambda row: row["status"] in FINAL, seconds)


async def answer_final(fetch: Callable[[], dict[str, Any]], shape: Callable[[dict[str, Any]], dict[str, Any]],
                       seconds: float, if_none_match: str | None, response: Response) -> Any:
    """The answer to GET of a run or sweep: `shape` (run in a thread: it may read the store) adds
    what the answer carries beside the row; a finished one gets its ETag, or a 304 if it was named."""
    row = await wait_final(fetch, seconds)
    shown = await run_in_threadpool(shape, row)
    if row["status"] in FINAL:
        return conditional(tag_of(shown), if_none_match, response) or shown
    return shown
