"""Server-Sent Events: one run, one sweep, or everything; resumable by id across restarts.

Wire format (as fastapi.sse writes it): every event has `id:` (global, increasing), `event:`
(its type) and `data:` (one JSON object that repeats id and type). Reconnecting with
`Last-Event-ID` (browsers do it by themselves) or `?last_event_id=` resumes after that
id with nothing missed or repeated. Idle streams get a comment line every
LAB_SSE_KEEPALIVE_S seconds so proxies keep them open.

The streams are plain StreamingResponses (SseResponse), not FastAPI's generator endpoints:
FastAPI's SSE wrapper runs a producer task and a keepalive task per stream, and when a
client leaves while both hold an event, its task group raises (BrokenResourceError,
logged as "Exception in ASGI application"; found by scripts/fuzz_api.py). It also leaves
the generator, and so the subscription, to be closed whenever it is garbage-collected.
SseResponse closes the generator and the subscription as soon as the response ends, however
it ends (stream over, client gone, service stopping), and the keepalive is ours already.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import format_sse_event
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.http.deps import ManagerDep, SettingsDep
from app.http.errors import Problem, responses
from lab.domain.vocabulary import EVENT_TYPES
from lab.service.manager import Event, Subscription

router = APIRouter(tags=["events"])
log = logging.getLogger("app.events")

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


class Streams:
    """How many event streams are open, and at most how many may be (LAB_MAX_STREAMS): past it a
    stream is refused with 503 and Retry-After before it subscribes. Counted on the event loop
    (the routes are async), so no lock."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0

    def enter(self) -> None:
        if self.open >= self.cap:
            raise Problem("too-many-streams", f"{self.open} event streams are open, as many as this service takes "
                          "(LAB_MAX_STREAMS): retry after Retry-After, or watch /api/v1/events, which carries "
                          "every run's events on one stream")
        self.open += 1

    def leave(self) -> None:
        self.open -= 1


FD_HEADROOM = 512  # open files besides the streams: the database, sockets of servers and clients, logs


def stream_cap(wanted: int) -> int:
    """How many streams this process can hold: LAB_MAX_STREAMS, raising the open-files soft limit
    (each stream is a socket) up to the hard limit if need be; less, with a warning, if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    cap = max(1, soft - FD_HEADROOM)
    log.warning("open files limited to %d: at most %d event streams (LAB_MAX_STREAMS is %d)", soft, cap, wanted)
    return cap


def streams(request: Request) -> Streams:
    return request.app.state.streams  # type: ignore[no-any-return]


StreamsDep = Annotated[Streams, Depends(streams)]


class SseResponse(StreamingResponse):
    """text/event-stream from a subscription; the subscription is closed, and its place among the
    open streams given back, when the response ends (stream over, client gone, service stopping)."""

    media_type = "text/event-stream"

    def __init__(self, sub: Subscription, body: AsyncIterator[bytes], gate: Streams) -> None:
        super().__init__(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.sub, self.gate = sub, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.gate.leave()
            body = self.body_iterator
            if hasattr(body, "aclose"):
                await body.aclose()  # type: ignore[union-attr]
            self.sub.close()


@lru_cache(maxsize=4096)
def frame(ev: Event) -> bytes:
    """The event as one SSE frame (event, data, id lines), encoded once per event: live
    fan-out hands the same Event to every subscriber, and a replay of a recent event hits
    the cache too (events are immutable, their id unique). The JSON has no newline."""
    return f"event: {ev.type}\ndata: {ev.json}\nid: {ev.id}\n\n".encode()


# The stream's first bytes: a comment, so the headers and a first chunk leave at once, and no
# client sees an event in it (a block holding only `retry:` is an empty "message" to some, such
# as httpx-sse). The reconnection hint rides on the first real event instead.
OPENING = format_sse_event(comment="fastzero-lab events")
RETRY_LINE = f"retry: {RETRY_MS}\n".encode()


async def _frames(sub: Subscription, keepalive_s: float,
                  last: Callable[[Event], bool] | None = None) -> AsyncIterator[bytes]:
    yield OPENING
    retry = RETRY_LINE
    while True:
        batch = await sub.aget(timeout=keepalive_s)
        if not batch:
            if sub.closed:  # the service is stopping: end now, the client reconnects with its last id
                return
            yield KEEPALIVE
            continue
        # One write per batch: a replay page or a burst costs one send, not one per event.
        # Each frame is encoded once per event, shared by every live subscriber (frame()).
        out = bytearray(retry)
        retry = b""
        for ev in batch:
            out += frame(ev)
            if last is not None and last(ev):
                yield bytes(out)
                return
        yield bytes(out)


KEEPALIVE = format_sse_event(comment="keepalive")
# One event on the wire (OpenAPI 3.2 itemSchema, as FastAPI documents its own SSE routes);
# `data` is the JSON text of the event, described by contentSchema.
EVENT_DATA = {
    "type": "object",
    "required": ["id", "type", "ts", "run_id", "sweep_id"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "ts": {"type": "number"},
        "run_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "sweep_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "additionalProperties": True,
}
FINISHED_DOC: dict[int | str, dict[str, Any]] = {
    204: {"description": "the stream has nothing left to send (resumed after its closing event): "
                         "an EventSource stops reconnecting"},
}
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `id` (global, increasing), `event` (the type), `data` (JSON); "
                       "comment lines (`: keepalive`) and a `retry` hint in between",
        "content": {"text/event-stream": {"itemSchema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "event": {"type": "string", "enum": list(EVENT_TYPES)},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": EVENT_DATA},
                "retry": {"type": "integer", "minimum": 0},
            },
        }}},
    },
}


def _stream(gate: Streams, subscribe: Callable[[], Subscription], keepalive_s: float,
            last: Callable[[Event], bool] | None = None) -> SseResponse:
    gate.enter()  # 503 past LAB_MAX_STREAMS, before anything is subscribed
    try:
        sub = subscribe()
    except BaseException:
        gate.leave()
        raise
    return SseResponse(sub, _frames(sub, keepalive_s, last), gate)


def _finished_before(manager: ManagerDep, kind: str, key: str, after: int | None) -> bool:
    """True when the closing event of a run/sweep is at or before `after`: nothing left to send."""
    if after is None:
        return False
    closing = manager.history.closing_event_id(kind, key)
    return closing is not None and closing <= after


# Checks run as (sync) dependencies: they must answer 404 before the 200 of a stream is sent.
# Each returns (after, done): where to resume, and whether the stream has nothing left to send.
def run_stream(run_id: str, manager: ManagerDep, after: ResumeDep) -> tuple[int | None, bool]:
    manager.get_run(run_id)
    return after, _finished_before(manager, "run", run_id, after)


def sweep_stream(sweep_id: str, manager: ManagerDep, after: ResumeDep) -> tuple[int | None, bool]:
    manager.get_sweep(sweep_id)
    return after, _finished_before(manager, "sweep", sweep_id, after)


def _one_stream(manager: ManagerDep, gate: Streams, keepalive_s: float, plan: tuple[int | None, bool], closing: str,
                **which: str) -> Response:
    """A run's or sweep's stream (`which`: run_id= or sweep_id=): history, then live until its
    `closing` event; 204 when resumed after that event (an EventSource then stops reconnecting)."""
    after, done = plan
    if done:
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    return _stream(gate, lambda: manager.subscribe(after=after or 0, **which), keepalive_s,
                   lambda ev: ev.type == closing)


def global_start(manager: ManagerDep, after: ResumeDep) -> int:
    return manager.replay_start() if after is None else after


@router.get("/runs/{run_id}/events", response_class=SseResponse, status_code=200, tags=["runs"],
            responses={**STREAM_DOC, **FINISHED_DOC, **responses(404, 422, 503)})
async def run_events(run_id: str, manager: ManagerDep, settings: SettingsDep, gate: StreamsDep,
                     plan: Annotated[tuple[int | None, bool], Depends(run_stream)]) -> Response:
    """The run's history so far, then live events; the stream ends after its `done` event."""
    return _one_stream(manager, gate, settings.sse_keepalive_s, plan, "done", run_id=run_id)


@router.get("/sweeps/{sweep_id}/events", response_class=SseResponse, status_code=200, tags=["sweeps"],
            responses={**STREAM_DOC, **FINISHED_DOC, **responses(404, 422, 503)})
async def sweep_events(sweep_id: str, manager: ManagerDep, settings: SettingsDep, gate: StreamsDep,
                       plan: Annotated[tuple[int | None, bool], Depends(sweep_stream)]) -> Response:
    """Events of the sweep and of its runs, history first; ends after `sweep_done`."""
    return _one_stream(manager, gate, settings.sse_keepalive_s, plan, "sweep_done", sweep_id=sweep_id)


@router.get("/events", response_class=SseResponse, status_code=200,
            responses={**STREAM_DOC, **responses(422, 503)})
async def all_events(manager: ManagerDep, settings: SettingsDep, gate: StreamsDep,
                     start: Annotated[int, Depends(global_start)]) -> SseResponse:
    """Everything, live. Without an id it starts with the history of whatever is still queued or
    running (a late watcher sees their progress so far); it never ends by itself."""
    return _stream(gate, lambda: manager.subscribe(after=start), settings.sse_keepalive_s)
