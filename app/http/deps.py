"""Request-scoped access to what the lifespan owns."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.settings import Settings
from lab.host.places import Core
from lab.service.manager import Manager


def get_manager(request: Request) -> Manager:
    return request.app.state.manager


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_core(request: Request) -> Core:
    """What the core takes from this app's settings (places, limits), made once by create_app."""
    return request.app.state.core


ManagerDep = Annotated[Manager, Depends(get_manager)]
CoreDep = Annotated[Core, Depends(get_core)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
