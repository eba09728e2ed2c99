"""The dashboard's HTML pages: the lab, the case-study chart and the guided talk.

The pages are thin shells: the browser fills them from the REST API and the event
stream, so a page opened by the audience shows exactly what the API serves. What the
page needs before its first request (clients, server field choices, whether POST needs
a token) is rendered into it here, from the same registries the CLI uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from app.auth import token_ok
from lab import kinds, storage
from lab.clients import client_ids, get_client
from lab.spec import DISK_FORMATS, FASTZEROMODES, PLUGINS, ZEROMODES, ServerSpec

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(ROOT / "templates"))
router = APIRouter(include_in_schema=False)

PAGES = (("lab", "/", "Lab"), ("results", "/results", "Case study"), ("talk", "/talk", "Talk"),
         ("class", "/class", "Class"))


def lab_token(request: Request) -> str | None:
    """The presenter token: from the app's settings when it has them, else the environment."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and hasattr(settings, "token_value"):
        return settings.token_value or None
    return os.environ.get("LAB_TOKEN", "").strip() or None


def page_config(request: Request) -> dict[str, Any]:
    """Everything the scripts need up front; the rest comes from /api."""
    clients = []
    for cid in client_ids():
        info = get_client(cid).info()
        clients.append({k: info.get(k) for k in ("id", "label", "era", "description", "parallel", "real_binary")})
    return {
        "auth_required": lab_token(request) is not None,
        "clients": clients,
        "zeromodes": list(ZEROMODES),
        "fastzeromodes": list(FASTZEROMODES),
        "spec_defaults": ServerSpec().to_dict(),
        # server kinds and storages with their availability here (disabled options say why)
        "kinds": kinds.availability(),
        "storages": storage.availability(),
        "plugins": list(PLUGINS),
        "disk_formats": list(DISK_FORMATS),
    }


def _render(request: Request, template: str, page: str) -> HTMLResponse:
    config = page_config(request)
    return templates.TemplateResponse(
        request, template, {"page": page, "pages": PAGES, "config": config},
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
    return _render(request, "talk.html", "talk")


@router.get("/class", response_class=HTMLResponse)
def class_page(request: Request) -> HTMLResponse:
    """The teacher's view: who ran what, and the class's guesses per act against the result."""
    return _render(request, "class.html", "class")


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
