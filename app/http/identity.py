"""Who a request is, for the queue's lanes (lab.service.jobs.Who; the JOB CONTRACT's IDENTITY entry):
a named student (the run's `student`), else the teacher (the request carries LAB_TOKEN's bearer), else
an anonymous caller, keyed by its peer address so anonymous callers take turns among themselves."""

from __future__ import annotations

from fastapi import Request

from app.http.auth import token_ok
from lab.service.jobs import Who, who_for


def who_of(request: Request, student: str | None = None) -> Who:
    token = request.app.state.settings.token_value
    teacher = token is not None and token_ok(request.headers.get("authorization"), token)
    client = request.client.host if request.client is not None else None
    return who_for(student, teacher=teacher, client=client)
