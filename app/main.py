"""The FastAPI application: `create_app()` (uvicorn's factory) and its lifespan.

The lifespan owns one Store and one Manager: opening the store marks runs a dead
predecessor left active as `interrupted`; leaving it interrupts what is still queued or
running and stops every server, so no nbdkit or client outlives the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import openapi
from app.api import (
    API_PREFIX,
    LEGACY_PREFIX,
    audits,
    calibration,
    classroom,
    config,
    events,
    health,
    kinds,
    metrics,
    queue,
    results,
    runs,
    scenarios,
    servers,
    sweeps,
    talk,
    workers,
)
from app.http import auth, errors
from app.http.allow import Allowed
from app.http.hosts import HostGuard
from app.http.middleware import HeadMiddleware, LegacyPrefix, RequestGuard
from app.http.query import only_known_query
from app.pages import apidocs, views
from app.pages.assets import dashboard_dir
from app.settings import Settings
from lab.service.manager import Manager, tool_versions, use_as_default

log = logging.getLogger("app")

DESCRIPTION = """\
Re-run, live, the NBD fast-zero case study: nbdkit servers with slow writes, qemu-img
(today's and re-enacted eras) and nbdcopy clients, request counts per layer.

Sizes are bytes or strings with a unit (`"16M"`), delays milliseconds or strings with a
unit (`"20ms"`); responses echo them normalised (bytes, milliseconds). When `LAB_TOKEN`
is set, POST and DELETE need `Authorization: Bearer <token>`; reads and event streams
stay open.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    if settings is None:  # this factory is the driver that read the environment (uvicorn --factory, `lab serve`):
        settings = Settings()  # its places are also the process default (lab.host.places), as `lab` sets them
        use_as_default(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = await run_in_threadpool(Manager.open, settings)
        app.state.manager = manager
        app.state.versions = await run_in_threadpool(tool_versions)
        restore = _end_streams_on_signal(manager)
        app.state.metrics.start(manager)
        try:
            yield
        finally:
            restore()
            app.state.metrics.stop()
            manager.close_streams()
            await run_in_threadpool(manager.close)

    app = FastAPI(title="fastzero-lab", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.streams = events.Streams(events.stream_cap(settings.max_streams))
    app.state.metrics = metrics.Metrics(app.state.streams)
    # outermost last: Host -> HEAD -> guard (origin, content type, body size) -> token -> routes
    app.state.allowed = Allowed(lambda: _with_legacy(app.openapi().get("paths", {})))  # for 405's Allow
    app.add_middleware(auth.TokenMiddleware, token=settings.token_value)
    app.add_middleware(RequestGuard, max_body=settings.max_body_bytes, origins=settings.origins)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(LegacyPrefix, legacy=LEGACY_PREFIX, current=API_PREFIX)
    app.add_middleware(HostGuard, hosts=settings.hosts)  # outermost: a rebinding page reaches nothing
    errors.install(app)
    # /api/v1 is the API; /api, its first unversioned home, answers the same for one more release
    # (not in the schema; answers carry `Deprecation` and a `Link` to the successor).
    strict_query = [Depends(only_known_query)]  # an unknown query parameter is a 400 naming it
    routers = (health, config, servers, kinds, runs, queue, sweeps, scenarios, results, events, classroom, calibration,
               workers, audits, talk)
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX, dependencies=strict_query)
    for module in routers:
        app.include_router(module.router, prefix=LEGACY_PREFIX, include_in_schema=False, dependencies=strict_query,
                           generate_unique_id_function=lambda route: f"legacy_{route.name}")
    app.include_router(metrics.router, dependencies=strict_query)  # /metrics, where Prometheus looks
    apidocs.install(app)
    _add_pages(app)
    openapi.install(app, settings)
    return app


def _with_legacy(paths: dict[str, Any]) -> dict[str, Any]:
    """The documented paths and their legacy aliases (/api/v1/x and /api/x)."""
    legacy = {LEGACY_PREFIX + p[len(API_PREFIX):]: ops for p, ops in paths.items() if p.startswith(API_PREFIX)}
    return {**paths, **legacy}


def _end_streams_on_signal(manager: Manager) -> Callable[[], None]:
    """On SIGINT/SIGTERM end the event streams at once, then let the server's own handler run.

    Open streams never end by themselves, so the server would otherwise wait for them until
    its graceful-shutdown timeout. Browsers reconnect (with Last-Event-ID) to the next
    instance. Only possible in the main thread (uvicorn's), not under a test client.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(manager.close_streams)
        prev = previous.get(sig)
        if callable(prev):
            prev(sig, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev)

    return restore


def _add_pages(app: FastAPI) -> None:
    """The dashboard (app/pages with templates/ and static/, app/pages/assets.py finds them); an
    installation without them serves the API alone, and / says where its documents are."""
    if dashboard_dir("templates").is_dir():
        app.include_router(views.router)
    else:
        @app.get("/", include_in_schema=False)
        def index() -> JSONResponse:
            return JSONResponse({"name": "fastzero-lab", "docs": "/docs", "openapi": "/openapi.json"})
    if dashboard_dir("static").is_dir():
        app.mount("/static", StaticFiles(directory=dashboard_dir("static")), name="static")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fastzero-lab")
    except metadata.PackageNotFoundError:
        return "0"
