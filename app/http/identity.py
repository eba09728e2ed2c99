"""Who is asking: the class's three tiers (docs/classroom.md, CONTRACTS.md "IDENTITY").

- teacher:   `Authorization: Bearer <LAB_TOKEN>` (when LAB_TOKEN is set);
- student:   `Authorization: Bearer s_...`, the key `POST /api/v1/class/join` gave for the class's join
             code and a name (lab.service.classroom); in an open lab (no LAB_TOKEN) also a name typed on
             the run or guess itself, which claims that name's member;
- anonymous: neither: with LAB_TOKEN set, the audience (it reads, it does not write); in an open lab,
             the lab's own user (no token: nobody to tell apart).

TokenMiddleware (app/http/auth.py) resolves the caller once per request and keeps it in the scope;
routes read it with `CallerDep`. What each tier may write is decided here (`allowed`), in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request

from app.http.errors import Problem
from lab.service.jobs import TEACHER, Who

Tier = Literal["teacher", "student", "anonymous"]
SCOPE_KEY = "lab.caller"  # where the middleware keeps the caller in the ASGI scope
_API = r"^/api(?:/v1)?"
# Writes anyone may make: joining the class, and checking a form (it changes nothing).
OPEN_WRITES = tuple(re.compile(_API + p + "$") for p in (r"/class/join", r"/validate"))
# Writes a joined student may make; the route then checks the finer rights (only their own runs).
STUDENT_WRITES = tuple(re.compile(_API + p + "$") for p in (
    r"/runs", r"/runs/[^/]+/cancel", r"/scenarios/[^/]+/runs", r"/guesses"))


@dataclass(frozen=True)
class Caller:
    tier: Tier
    name: str | None = None  # a student's canonical name (the scheduler's lane key)
    display: str | None = None  # as the student joined
    client: str = ""  # the peer address (an anonymous caller's lane key)
    open_lab: bool = False  # no LAB_TOKEN: nobody is told apart by a token

    @property
    def teaches(self) -> bool:
        """May use the teacher's controls: the token, or anyone not a student in an open lab."""
        return self.tier == "teacher" or (self.open_lab and self.tier == "anonymous")

    @property
    def label(self) -> str:
        """Who, in a log line: the teacher, student Ana, an anonymous caller (its address)."""
        if self.tier == "teacher":
            return "the teacher"
        if self.tier == "student":
            return f"student {self.display}"
        return f"an anonymous caller ({self.client or 'unknown address'})"

    def may_change(self, student: str | None) -> bool:
        """May cancel (or delete) something that belongs to `student` (a display name, None: nobody's)."""
        if self.teaches:
            return True
        if self.tier == "student":
            from lab.domain.students import canonical

            return student is not None and canonical(student) == self.name
        return student is None  # an open lab's anonymous caller: the nameless runs


def who_of(request: Request, student: str | None = None) -> Who:
    """The scheduler's identity of a run or sweep a request queues (lab.service.jobs.Who): a student's
    own lane (their key, or in an open lab the name the run carries: its canonical form, so look-alike
    names take one turn), the teacher's lane, else one anonymous caller keyed by its peer address."""
    caller = get_caller(request)
    if caller.tier == "student":
        return Who("student", caller.name)
    if student:
        from lab.domain.students import canonical

        return Who("student", canonical(student) or student)
    if caller.tier == "teacher":
        return TEACHER
    return Who("anonymous", client=caller.client or None)


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    auth = next((v for k, v in headers if k.lower() == b"authorization"), None)
    if auth is None:
        return None
    text = auth.decode("latin-1")
    return text[7:].strip() if text[:7].lower() == "bearer " else None


def allowed(method: str, path: str, caller: Caller) -> bool:
    """May `caller` send this write at all (the middleware's gate; reads are always allowed)."""
    if caller.tier == "teacher" or caller.open_lab:
        return True
    if any(p.match(path) for p in OPEN_WRITES):
        return True
    return caller.tier == "student" and method == "POST" and any(p.match(path) for p in STUDENT_WRITES)


def get_caller(request: Request) -> Caller:
    caller = request.scope.get(SCOPE_KEY)
    if caller is None:  # a route reached without the middleware (never in the app): the least rights
        return Caller("anonymous", client=request.client.host if request.client else "")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def student_of(caller: Caller, named: str | None, classroom: Any, field: str = "student") -> str | None:
    """The display name a run or guess is made for: a student's own (whatever the body says); a name the
    teacher or an open lab's caller typed, as its member's display name (claimed on first use); else None."""
    if caller.tier == "student":
        return caller.display
    if named is None:
        return None
    from lab.domain.spec import SpecError

    try:
        return classroom.member_for_name(named, field).display
    except SpecError as e:
        raise Problem("invalid-request", f"{field}: {e.message}",
                      errors=[{"loc": ["body", field], "message": e.message, "code": "value_error",
                               "value": named}]) from None
