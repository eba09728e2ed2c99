"""Server-Sent Events: one run, one sweep, or everything; resumable by id across restarts.

Wire format (FastAPI's fastapi.sse): every event has `id:` (global, increasing), `event:`
(its type) and `data:` (one JSON object that repeats id and type). Reconnecting with
`Last-Event-ID` (browsers do it by themselves) or `?last_event_id=` resumes after that
id with nothing missed or repeated. Idle streams get a comment line every
LAB_SSE_KEEPALIVE_S seconds so proxies keep them open.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app.deps import ManagerDep, SettingsDep
from app.errors import responses
from lab.events import Subscription
from lab.store import Event

router = APIRouter(prefix="/api", tags=["events"])

RETRY_MS = 2000


def resume_after(
    last_event_id: Annotated[str, Header(alias="Last-Event-ID", pattern=r"^\s*\d{0,18}\s*$",
                                         description="resume after this event id")] = "",
    last_event_id_query: Annotated[int | None, Query(alias="last_event_id", ge=0, le=10**18 - 1,
                                                     description="same, for a first connect")] = None,
) -> int | None:
    """The id to resume after: the header (a browser's reconnect) wins over the query (its first connect)."""
    if last_event_id.strip():
        text = last_event_id.strip()
        return int(text)  # the pattern let digits only through
    return last_event_id_query


ResumeDep = Annotated[int | None, Depends(resume_after)]


async def _stream(sub: Subscription, keepalive_s: float,
                  last: Callable[[Event], bool] | None = None) -> AsyncIterable[ServerSentEvent]:
    try:
        yield ServerSentEvent(comment="fastzero-lab events", retry=RETRY_MS)
        while True:
            batch = await sub.aget(timeout=keepalive_s)
            if not batch:
                if sub.closed:  # the service is stopping: end now, the client reconnects with its last id
                    return
                yield ServerSentEvent(comment="keepalive")
                continue
            for ev in batch:
                yield ServerSentEvent(id=str(ev.id), event=ev.type, raw_data=ev.json)
                if last is not None and last(ev):
                    return
    finally:
        sub.close()


def _finished_before(manager: ManagerDep, kind: str, key: str, after: int | None) -> bool:
    """True when the closing event of a run/sweep is at or before `after`: nothing left to send."""
    if after is None:
        return False
    closing = manager.store.closing_event_id(kind, key)
    return closing is not None and closing <= after


# Checks run as (sync) dependencies: they must answer 404 before the 200 of a stream is sent.
# Each returns (after, done): where to resume, and whether the stream has nothing left to send.
def run_stream(run_id: str, manager: ManagerDep, after: ResumeDep) -> tuple[int | None, bool]:
    manager.get_run(run_id)
    return after, _finished_before(manager, "run", run_id, after)


def sweep_stream(sweep_id: str, manager: ManagerDep, after: ResumeDep) -> tuple[int | None, bool]:
    manager.get_sweep(sweep_id)
    return after, _finished_before(manager, "sweep", sweep_id, after)


def global_start(manager: ManagerDep, after: ResumeDep) -> int:
    return manager.replay_start() if after is None else after


@router.get("/runs/{run_id}/events", response_class=EventSourceResponse, tags=["runs"], responses=responses(404, 422))
async def run_events(run_id: str, manager: ManagerDep, settings: SettingsDep,
                     plan: Annotated[tuple[int | None, bool], Depends(run_stream)]) -> AsyncIterable[ServerSentEvent]:
    """The run's history so far, then live events; the stream ends after its `done` event."""
    after, done = plan
    if done:
        return
    sub = manager.subscribe(after=after or 0, run_id=run_id)
    async for item in _stream(sub, settings.sse_keepalive_s, lambda ev: ev.type == "done"):
        yield item


@router.get("/sweeps/{sweep_id}/events", response_class=EventSourceResponse, tags=["sweeps"],
            responses=responses(404, 422))
async def sweep_events(sweep_id: str, manager: ManagerDep, settings: SettingsDep,
                       plan: Annotated[tuple[int | None, bool], Depends(sweep_stream)],
                       ) -> AsyncIterable[ServerSentEvent]:
    """Events of the sweep and of its runs, history first; ends after `sweep_done`."""
    after, done = plan
    if done:
        return
    sub = manager.subscribe(after=after or 0, sweep_id=sweep_id)
    async for item in _stream(sub, settings.sse_keepalive_s, lambda ev: ev.type == "sweep_done"):
        yield item


@router.get("/events", response_class=EventSourceResponse, responses=responses(422))
async def all_events(manager: ManagerDep, settings: SettingsDep,
                     start: Annotated[int, Depends(global_start)]) -> AsyncIterable[ServerSentEvent]:
    """Everything, live. Without an id it starts with the history of whatever is still queued or
    running (a late watcher sees their progress so far); it never ends by itself."""
    sub = manager.subscribe(after=start)
    async for item in _stream(sub, settings.sse_keepalive_s):
        yield item
