"""`?wait=SECONDS` on GET of a run or sweep: answer when it is finished, or when time is up.

The wait polls the database from the event loop (no thread is held while waiting, so many
waiting clients cost nothing), starting at 50 ms and backing off to 500 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query
from starlette.concurrency import run_in_threadpool

MAX_WAIT_S = 60.0
WaitQ = Annotated[float, Query(ge=0, le=MAX_WAIT_S,
                               description="block up to this many seconds until it is finished (0: answer now)")]


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
