"""The talk's presenter and audience: which act the presenter shows, so every audience screen
(/talk?follow, or any /talk without the presenter's token) can follow it. PUT needs the
presenter's token when one is set (like every write); each change is a `talk` event."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.http.deps import ManagerDep
from app.http.errors import responses
from app.schemas.talk import TalkOut, TalkShow

router = APIRouter(tags=["talk"])


@router.get("/talk", response_model=TalkOut)
def shown(manager: ManagerDep) -> dict[str, Any]:
    """The act the presenter shows now."""
    return manager.shown_act()


@router.put("/talk", response_model=TalkOut, responses=responses(401, 422))
def show(body: TalkShow, manager: ManagerDep) -> dict[str, Any]:
    """The presenter's page says which act it shows; followers hear a `talk` event {act, at}."""
    return manager.show_act(body.act)
