"""Zero audits: queue one (a job of the one scheduler), follow it, cancel it, read its report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from app.api import API_PREFIX
from app.http.deps import ManagerDep
from app.http.errors import field_error, responses
from app.http.headers import located
from app.http.identity import who_of
from app.schemas.audits import AuditCreate, AuditList, AuditOut, AuditServer

router = APIRouter(prefix="/audits", tags=["audits"])


@router.post("", status_code=202, response_model=AuditOut,
             responses=located(202, "queued", 400, 401, 413, 422, 429, 503))
async def create_audit(body: AuditCreate, manager: ManagerDep, request: Request, response: Response) -> Any:
    """Queue a zero audit of `server` (as `lab audit`): answers at once with its id; GET it to follow it."""
    fields = body.server.model_dump(mode="json", exclude_none=True)
    plan: dict[str, Any] = {"sizes": body.sizes, "quick": body.quick, "max_size": body.max_size,
                            "flags": tuple(f.value for f in body.flags) if body.flags else None,
                            "disks": tuple(d.value for d in body.disks) if body.disks else None,
                            "inflight": body.inflight}
    try:
        out = await run_in_threadpool(manager.audits.submit, fields, plan, body.deadline_s, who_of(request))
    except ValueError as e:  # lab.nbd.audit.AuditError: the field at fault
        name = getattr(e, "field", None) or "server"
        loc = ["body", "server", name] if name in AuditServer.model_fields else ["body", name]
        raise field_error(loc, getattr(e, "message", str(e))) from None
    response.headers["Location"] = f"{API_PREFIX}/audits/{out['id']}"
    return out


@router.get("", response_model=AuditList)
def list_audits(manager: ManagerDep, limit: int = Query(50, ge=1, le=200)) -> dict[str, Any]:
    """The audits, newest first (summaries: GET one for its cells)."""
    return {"audits": manager.audits.list(limit)}


@router.get("/report.html", response_class=HTMLResponse, responses=responses(404, 422))
def audits_report(manager: ManagerDep, ids: str = Query(..., max_length=400, pattern=r"[^,\s]",
                                                        description="audit ids, comma-separated")) -> HTMLResponse:
    """Finished audits side by side: one self-contained HTML page (no script, nothing loaded)."""
    wanted = [i.strip() for i in ids.split(",") if i.strip()][:8]
    if not wanted:
        raise field_error(["query", "ids"], "name at least one audit")
    return HTMLResponse(manager.audits.report_html(wanted))


@router.get("/{audit_id}", response_model=AuditOut, responses=responses(404))
def get_audit(audit_id: str, manager: ManagerDep) -> dict[str, Any]:
    """One audit: its progress while it runs; once done everything `lab audit --json` prints."""
    return manager.audits.get(audit_id)


@router.get("/{audit_id}/report.html", response_class=HTMLResponse, responses=responses(404))
def audit_report_page(audit_id: str, manager: ManagerDep) -> HTMLResponse:
    """One finished audit as a self-contained HTML page (the same as `lab audit --html`)."""
    return HTMLResponse(manager.audits.report_html([audit_id]))


@router.post("/{audit_id}/cancel", response_model=AuditOut, responses=responses(401, 404, 409))
async def cancel_audit(audit_id: str, manager: ManagerDep) -> dict[str, Any]:
    """Stop an audit between two of its requests; the cells done so far are kept."""
    return await run_in_threadpool(manager.audits.cancel, audit_id)
