"""Request-scoped access to what the lifespan owns."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.settings import Settings
from lab.service.manager import Manager


def get_manager(request: Request) -> Manager:
    return request.app.state.manager


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ManagerDep = Annotated[Manager, Depends(get_manager)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
