"""Long-lived nbdkit servers: create, list, inspect (libnbd-probed flags, nbd+unix URI), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.api import API_PREFIX
from app.http.deps import ManagerDep, SettingsDep
from app.http.errors import field_error, responses, spec_error
from app.http.headers import located
from app.http.idempotency import IdempotencyKey, once
from app.schemas.runs import MAX_TTL_S, ManagedServerOut, ServerCreate, ServerList
from app.settings import Settings
from lab.domain.spec import SpecError

router = APIRouter(prefix="/servers", tags=["servers"])


def ttl_most(settings: Settings) -> float:
    """The longest ttl_s a request may ask: LAB_SERVER_TTL_S (0, servers that live until deleted: MAX_TTL_S)."""
    return settings.server_ttl_s or MAX_TTL_S


@router.post("", status_code=201, response_model=ManagedServerOut,
             responses=located(201, "started", 400, 401, 409, 413, 422, 429, 502, 503))
def create_server(fields: ServerCreate, manager: ManagerDep, settings: SettingsDep, request: Request,
                  response: Response, idempotency_key: IdempotencyKey = None) -> Any:
    """Start an nbdkit server with these fields; runs may then target it with `server_id`."""
    most = ttl_most(settings)
    if fields.ttl_s is not None and fields.ttl_s > most:
        raise field_error(["body", "ttl_s"], f"at most {most:g} s on this service (LAB_SERVER_TTL_S)",
                          "less_than_equal")

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
