"""Long-lived nbdkit servers: create, list, inspect (libnbd-probed flags, nbd+unix URI), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.api import API_PREFIX
from app.http.deps import ManagerDep
from app.http.errors import responses, spec_error
from app.http.headers import located
from app.http.idempotency import IdempotencyKey, once
from app.schemas.runs import ManagedServerOut, ServerCreate, ServerList
from lab.domain.spec import SpecError

router = APIRouter(prefix="/servers", tags=["servers"])


@router.post("", status_code=201, response_model=ManagedServerOut,
             responses=located(201, "started", 400, 401, 409, 413, 422, 429, 503))
def create_server(fields: ServerCreate, manager: ManagerDep, request: Request, response: Response,
                  idempotency_key: IdempotencyKey = None) -> Any:
    """Start an nbdkit server with these fields; runs may then target it with `server_id`."""
    def make() -> dict[str, Any]:
        raw = fields.raw()
        try:
            spec = manager.new_spec(raw)
        except SpecError as e:
            raise spec_error(e, ("body",)) from None
        info = manager.create_server(spec, ttl_s=fields.ttl_s)
        response.headers["Location"] = f"{API_PREFIX}/servers/{info['id']}"
        return info

    return once(manager.idempotency, request, response, idempotency_key, 201, make)


@router.delete("", response_model=ServerList, responses=responses(401, 403))
def delete_servers(manager: ManagerDep) -> dict[str, Any]:
    """Stop every long-lived server (the clean-up after a script); their queued and running runs are
    cancelled first. Answers the servers stopped."""
    return {"servers": manager.delete_servers()}


@router.get("", response_model=ServerList)
def list_servers(manager: ManagerDep) -> dict[str, Any]:
    return {"servers": manager.list_servers()}


@router.get("/{server_id}", response_model=ManagedServerOut, responses=responses(404))
def get_server(server_id: str, manager: ManagerDep) -> dict[str, Any]:
    return manager.get_server(server_id)


@router.delete("/{server_id}", response_model=ManagedServerOut, responses=responses(401, 404))
def delete_server(server_id: str, manager: ManagerDep) -> dict[str, Any]:
    """Stop the server (runs queued or running on it are cancelled first)."""
    return manager.delete_server(server_id)
