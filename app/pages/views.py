"""The dashboard's HTML pages: the lab, the case-study chart and the guided talk.

The pages are thin shells: the browser fills them from the REST API and the event
stream, so a page opened by the audience shows exactly what the API serves. What the
page needs before its first request (clients, server field choices, whether POST needs
a token) is rendered into it here, from the same registries the CLI uses.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from app.api.config import lab_config
from app.http.auth import token_ok
from app.pages.assets import dashboard_dir

templates = Jinja2Templates(directory=dashboard_dir("templates"))
router = APIRouter(include_in_schema=False)

PAGES = (("lab", "/", "Lab"), ("results", "/results", "Case study"), ("talk", "/talk", "Talk"),
         ("class", "/class", "Class"), ("audits", "/audits", "Audit"), ("workers", "/workers", "Workers"))


def lab_token(request: Request) -> str | None:
    """The presenter token, from the app's settings."""
    settings = getattr(request.app.state, "settings", None)
    return settings.token_value if settings is not None else None


def page_config(request: Request) -> dict[str, Any]:
    """Everything the scripts need up front (GET /api/config's answer); the rest comes from /api."""
    return lab_config(request)


def _render(request: Request, template: str, page: str, body_class: str = "") -> HTMLResponse:
    config = page_config(request)
    # the Workers tab only where there are workers (cluster mode, LAB_BROKER_URL)
    pages = PAGES if request.app.state.manager.cluster()["cluster"] else [p for p in PAGES if p[0] != "workers"]
    return templates.TemplateResponse(
        request, template, {"page": page, "pages": pages, "config": config, "body_class": body_class},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/", response_class=HTMLResponse)
def lab_page(request: Request) -> HTMLResponse:
    return _render(request, "lab.html", "lab")


@router.get("/results", response_class=HTMLResponse)
def results_page(request: Request) -> HTMLResponse:
    return _render(request, "results.html", "results")


@router.get("/talk", response_class=HTMLResponse)
def talk_page(request: Request) -> HTMLResponse:
    # ?kiosk hides the top bar: drawn so from the start, not by the script (the stage jumped up at load)
    return _render(request, "talk.html", "talk", "kiosk" if "kiosk" in request.query_params else "")


@router.get("/class", response_class=HTMLResponse)
def class_page(request: Request) -> HTMLResponse:
    """The teacher's view: who ran what, and the class's guesses per act against the result."""
    return _render(request, "class.html", "class")


@router.get("/audits", response_class=HTMLResponse)
def audits_page(request: Request) -> HTMLResponse:
    """The zero audit: start one, follow them, read one, compare several side by side."""
    return _render(request, "audits.html", "audits")


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> HTMLResponse:
    """Cluster mode's workers: fingerprint, calibration age, load, running jobs, last heartbeat."""
    return _render(request, "workers.html", "workers")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    """One run: its disk map replayed from the trace, counts, verification, log excerpt."""
    return _render(request, "run.html", "run")


@router.get("/ui/config")
def ui_config(request: Request) -> dict[str, Any]:
    return page_config(request)


@router.post("/ui/token-check")
def token_check(request: Request) -> JSONResponse:
    """Lets the presenter's page know its token is right before it shows run controls."""
    token = lab_token(request)
    if token is None:
        return JSONResponse({"ok": True, "auth_required": False})
    if token_ok(request.headers.get("authorization"), token):
        return JSONResponse({"ok": True, "auth_required": True})
    return JSONResponse({"ok": False, "auth_required": True, "detail": "wrong token"}, status_code=401)
