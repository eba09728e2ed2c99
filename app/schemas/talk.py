"""The talk's presenter state: which act the presenter shows (PUT/GET /api/v1/talk)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.domain.scenarios import ACTS

# an act's key, or the summary after the last act
ActKey = Literal[(*(a.key for a in ACTS), "summary")]  # type: ignore[valid-type]


class TalkShow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    act: ActKey = Field(description="the act on the presenter's screen (an act's key, or summary)")


class TalkOut(BaseModel):
    act: str | None = Field(description="the act on the presenter's screen, or null before a presenter showed one")
    at: float | None = Field(description="when the presenter moved there (epoch seconds)")
