"""The class: its session and join code, its members, who ran what, and the guesses made before the
talk's acts (the rules: lab.service.classroom; the tiers: app/http/identity.py, docs/classroom.md).

- A student joins with the teacher's code and a name (`POST /class/join`), and from then on sends the
  key it got; with LAB_TOKEN unset (an open lab) a name typed on a guess or a run works as well.
- One guess per student and act row (a new one replaces it), closed when the act's first run starts,
  hidden from the other students until the reveal; the teacher sees everything and may delete.
- `GET /class/acts`: per act its state, its rows with the class's guesses, the measured run and the
  model, and the closest guesses first once revealed. `GET /class.csv`: the same, one row per guess.
"""

from __future__ import annotations

import statistics
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from app.http.deps import ManagerDep, SettingsDep
from app.http.errors import Problem, responses, spec_error
from app.http.identity import Caller, CallerDep
from app.schemas.runs import Prediction, Reference, Student, _Strict
from lab.domain.errors import Forbidden
from lab.domain.spec import SpecError
from lab.domain.students import PREDICTION_FIELDS
from lab.service.export import csv_text, guess_rows
from lab.service.manager import Member

router = APIRouter(tags=["class"])

TargetQ = Annotated[str | None, Query(max_length=64, description="an act row key, e.g. act2-A")]
StudentQ = Annotated[str | None, Query(min_length=1, max_length=80)]
ActKey = Annotated[str, Path(max_length=64, description="an act's key, e.g. baseline")]


class StudentSummary(BaseModel):
    student: str
    total: int
    by_status: dict[str, int]
    first_at: float | None = None
    last_at: float | None = None
    unfinished: int = Field(0, description="runs of theirs queued or running now")


class MemberOut(BaseModel):
    student: str = Field(description="the name as the student joined")
    canonical: str = Field(description="who they are for the lab: look-alike names are one student")
    joined_at: float
    joined: bool = Field(description="joined with the code (else: a name typed in an open lab)")


class SessionOut(BaseModel):
    id: str
    started_at: float
    code: str | None = Field(None, description="the join code: for the teacher only (everyone, in an open lab)")


class ActState(BaseModel):
    key: str
    locked: bool = Field(description="the act has started: guesses are closed")
    locked_at: float | None = None
    running: bool = Field(description="a run of the act is queued or running")
    revealed: bool = Field(description="the class's guesses are shown (the teacher's reveal, or the act's runs ended)")
    revealed_at: float | None = None


class ClassOut(BaseModel):
    mode: Literal["class", "open"] = Field(description="class: LAB_TOKEN set (students join with the code); "
                                                      "open: no token (names are typed, nothing is guarded)")
    you: Literal["teacher", "student", "anonymous"]
    session: SessionOut
    members: list[MemberOut]
    students: list[StudentSummary]
    max_queued_per_student: int | None = None
    total_runs: int


class JoinCreate(_Strict):
    code: Annotated[str, Field(min_length=1, max_length=20, description="the join code the teacher shows")]
    name: Student


class JoinOut(BaseModel):
    student: str = Field(description="your name as the class sees it")
    canonical: str
    session: str
    key: str = Field(description="send it as `Authorization: Bearer <key>` to run and guess")


class GuessOut(BaseModel):
    id: str
    student: str
    target: str
    prediction: dict[str, float] | None = Field(description="null while hidden (not yours, not revealed yet)")
    created_at: float
    hidden: bool = False
    replaced: bool | None = Field(None, description="on POST: this guess replaced your earlier one")


class GuessList(BaseModel):
    guesses: list[GuessOut]
    count: int


class Deleted(BaseModel):
    deleted: int


class Measured(BaseModel):
    run_id: str
    duration_s: float | None = None
    predicted_s: float | None = None
    expected_s: float | None = None
    write_ops: int | None = None
    zero_ops: int | None = None
    contended: bool | None = None
    created_at: float | None = None


class GuessPoint(BaseModel):
    student: str
    duration_s: float | None = None
    error_s: float | None = Field(None, description="guess minus measured")


class ActRowView(BaseModel):
    key: str
    group: str
    client: str
    label: str = ""
    available: bool | None = None
    guesses: dict[str, list[float]] = Field(description="prediction field -> the class's guesses (empty while hidden)")
    points: list[GuessPoint] = Field(description="each student's time guess (values once revealed)")
    students: list[str] = Field(description="who guessed this row")
    measured: Measured | None = None
    reference: Reference | None = None


class Ranked(BaseModel):
    student: str
    error: float = Field(description="mean |guess - measured| / measured over the act's rows they guessed")
    rows: int


class ActView(BaseModel):
    key: str
    title: str
    state: ActState
    rows: list[ActRowView]
    ranking: list[Ranked] = Field(description="closest first; empty until revealed")


class ActsOut(BaseModel):
    acts: list[ActView]


class GuessCreate(_Strict):
    student: Student | None = Field(None, description="an open lab's typed name (a joined student's key names them)")
    target: Annotated[str, Field(min_length=1, max_length=64, description="the act row guessed, e.g. act2-A")]
    prediction: Prediction


def _teacher(caller: Caller) -> None:
    if not caller.teaches:
        raise Forbidden("this is the teacher's (send LAB_TOKEN as the bearer token)")


def _viewer(caller: Caller) -> Member | None:
    if caller.tier == "student" and caller.name and caller.display:
        return Member("", caller.name, caller.display)
    return None


# -- the class, its session and members -------------------------------------------------------------
@router.get("/class", response_model=ClassOut)
def class_view(manager: ManagerDep, settings: SettingsDep, caller: CallerDep) -> dict[str, Any]:
    """The session (its join code for the teacher), every member, every student with runs (how many by
    status, first and last), and the per-student limit."""
    room = manager.classroom
    queued = manager.unfinished_by_student()
    students = [{**s, "unfinished": queued.get(s["student"], 0)} for s in manager.history.students()]
    session = room.session()
    return {"mode": "open" if caller.open_lab else "class", "you": caller.tier,
            "session": {**session, "code": session["code"] if caller.teaches else None},
            "members": [{"student": m["display"], **m} for m in room.members()], "students": students,
            "max_queued_per_student": settings.max_queued_per_student or None,
            "total_runs": sum(s["total"] for s in students)}


@router.get("/class/session", response_model=SessionOut, responses=responses(403))
def get_session(manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """The class session with its join code (the teacher's: show it to the class)."""
    _teacher(caller)
    return manager.classroom.session()


@router.post("/class/session", status_code=201, response_model=SessionOut, responses=responses(401, 403))
def new_session(manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """A new join code, a new session: every student joins again; the old guesses stay with the old one."""
    _teacher(caller)
    return manager.classroom.new_session()


@router.post("/class/join", status_code=201, response_model=JoinOut, responses=responses(403, 409, 422, 429))
def join(body: JoinCreate, manager: ManagerDep, request: Request) -> dict[str, Any]:
    """Join the class with the teacher's code and a name; the answer's `key` is yours to send. A name
    that looks like a member's ("ana" for "Ana", a Cyrillic look-alike) is taken: 409."""
    try:
        member, key = manager.classroom.join(body.code, body.name, request.client.host if request.client else "")
    except SpecError as e:
        raise spec_error(e, ("body",)) from None
    return {**member.to_dict(), "key": key}


@router.delete("/class/students/{canonical}", status_code=204, response_class=Response,
               responses=responses(401, 403, 404))
def remove_student(canonical: Annotated[str, Path(max_length=80)], manager: ManagerDep,
                   caller: CallerDep) -> Response:
    """Remove a member (their key stops working, their guesses go, their name is free again)."""
    _teacher(caller)
    manager.classroom.remove(canonical)
    return Response(status_code=204)


# -- the acts' guessing state ----------------------------------------------------------------------
@router.post("/class/acts/{act}/reveal", response_model=ActState, responses=responses(401, 403, 404))
def reveal(act: ActKey, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """Show the class's guesses of this act now (they show by themselves once its runs have ended)."""
    _teacher(caller)
    return manager.classroom.reveal(act)


@router.post("/class/acts/{act}/reopen", response_model=ActState, responses=responses(401, 403, 404))
def reopen(act: ActKey, manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """Open the act's guesses again (a second round): closed again at its next run, hidden until revealed."""
    _teacher(caller)
    return manager.classroom.reopen(act)


# -- guesses -----------------------------------------------------------------------------------------
@router.post("/guesses", status_code=201, response_model=GuessOut, responses=responses(401, 404, 409, 413, 422, 429))
def add_guess(body: GuessCreate, manager: ManagerDep, caller: CallerDep, request: Request) -> dict[str, Any]:
    """A student's guess of an act row before the act runs: one per student and row (a new one replaces
    it); closed once the act has started (409 guesses-locked); a few a minute per student (429)."""
    room = manager.classroom
    if body.target not in room.act_of_row:
        raise Problem("not-found", f"no act row {body.target!r}; use one of {', '.join(room.act_of_row)}",
                      errors=[{"loc": ["body", "target"], "message": "no such act row", "code": "not_found",
                               "value": body.target}])
    if caller.tier == "student":
        member = Member(room.session()["id"], caller.name or "", caller.display or "")
    elif body.student is not None and caller.open_lab:
        member = room.member_for_name(body.student)
    else:
        raise Problem("invalid-request", "student: join the class first (POST /api/v1/class/join), or name "
                      "yourself in an open lab", errors=[{"loc": ["body", "student"], "message": "who guesses?",
                                                          "code": "missing"}])
    try:
        prediction = body.prediction.raw()
    except SpecError as e:
        raise spec_error(e, ("body",)) from None
    guess, replaced = room.guess(member, body.target, prediction, request.client.host if request.client else "")
    return {**guess, "hidden": False, "replaced": replaced}


@router.get("/guesses", response_model=GuessList)
def list_guesses(manager: ManagerDep, caller: CallerDep, target: TargetQ = None,
                 student: StudentQ = None) -> dict[str, Any]:
    """This session's guesses, oldest first: the others' values only once their act is revealed."""
    rows = manager.classroom.guesses(teacher=caller.teaches, viewer=_viewer(caller), target=target, student=student)
    return {"guesses": rows, "count": len(rows)}


@router.delete("/guesses/{guess_id}", response_model=Deleted, responses=responses(401, 403, 404))
def delete_guess(guess_id: Annotated[str, Path(max_length=32)], manager: ManagerDep,
                 caller: CallerDep) -> dict[str, Any]:
    _teacher(caller)
    n = manager.classroom.delete_guesses(guess_id=guess_id)
    if not n:
        raise Problem("not-found", f"no guess {guess_id} in this class session")
    return {"deleted": n}


@router.delete("/guesses", response_model=Deleted, responses=responses(401, 403))
def delete_guesses(manager: ManagerDep, caller: CallerDep, target: TargetQ = None,
                   student: StudentQ = None) -> dict[str, Any]:
    """Delete this session's guesses of a row and/or a student (both absent: every guess of the session)."""
    _teacher(caller)
    return {"deleted": manager.classroom.delete_guesses(target=target, student=student)}


@router.get("/guesses.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def guesses_csv(manager: ManagerDep, caller: CallerDep, target: TargetQ = None, student: StudentQ = None) -> Response:
    rows = manager.classroom.guesses(teacher=caller.teaches, viewer=_viewer(caller), target=target, student=student)
    shown = [{**g, "prediction": g["prediction"] or {}} for g in rows]
    return Response(csv_text(guess_rows(shown)), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="guesses.csv"'})


# -- the acts: guesses beside what was measured ------------------------------------------------------
def _measured(manager: Any, key: str, since: float | None) -> dict[str, Any] | None:
    """The newest succeeded run of act row `key` (made at or after `since`, the act's start, when given)."""
    runs, _, _ = manager.history.page("runs", {"label": key, "status": "succeeded"}, "-created_at", None, 5)
    for run in runs:
        if since is None or (run.get("created_at") or 0) >= since:
            backend = run.get("backend") or {}
            return {"run_id": run["id"], "duration_s": run.get("duration_s"), "predicted_s": run.get("predicted_s"),
                    "expected_s": run.get("expected_s"), "write_ops": backend.get("write_ops"),
                    "zero_ops": backend.get("zero_ops"), "contended": bool(run.get("contended")),
                    "created_at": run.get("created_at")}
    return None


def act_views(manager: Any, caller: Caller) -> list[dict[str, Any]]:
    room = manager.classroom
    guesses = room.guesses(teacher=caller.teaches, viewer=_viewer(caller))
    states = room.act_states()
    rows_here = {r.key: r for s in manager.scenarios_here([_acts_scenario()]) for r in s.rows}
    out = []
    for act in room.acts.values():
        state = states[act.key]
        shown_all = caller.teaches or state["revealed"]
        rows, errors = [], {}
        for row in act.rows:
            mine = [g for g in guesses if g["target"] == row.key]
            measured = _measured(manager, row.key, state["locked_at"])
            m = (measured or {}).get("duration_s")
            points = []
            for g in mine:
                value = (g["prediction"] or {}).get("duration_s")
                err = value - m if value is not None and m is not None else None
                points.append({"student": g["student"], "duration_s": value, "error_s": err})
                if err is not None and m and state["revealed"]:
                    errors.setdefault(g["student"], []).append(abs(err) / m)
            here = rows_here.get(row.key)
            rows.append({
                "key": row.key, "group": row.group, "client": row.client, "label": here.label if here else row.label,
                "available": here.available if here else None,
                "guesses": {k: [g["prediction"][k] for g in mine if g["prediction"] and k in g["prediction"]]
                            for k in PREDICTION_FIELDS},
                "points": points, "students": sorted({g["student"] for g in mine}),
                "measured": measured, "reference": row.reference,
            })
        ranking = sorted(({"student": s, "error": statistics.fmean(e), "rows": len(e)} for s, e in errors.items()),
                         key=lambda r: (r["error"], r["student"])) if shown_all else []
        out.append({"key": act.key, "title": act.title, "state": state, "rows": rows, "ranking": ranking})
    return out


def _acts_scenario() -> Any:
    from lab.domain.scenarios import get_scenario

    return get_scenario("acts")


@router.get("/class/acts", response_model=ActsOut)
def acts_view(manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """Per act: its state (guesses closed, revealed), each row's guesses (values once revealed), its
    newest measured run since the act started (time, model, contended), and the closest guesses first."""
    return {"acts": act_views(manager, caller)}


CLASS_CSV = ["act", "row", "student", "guess_s", "measured_s", "model_s", "expected_s", "error_s", "error_rel",
             "contended", "run_id", "guessed_at"]


@router.get("/class.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def class_csv(manager: ManagerDep, caller: CallerDep) -> Response:
    """One row per student's guess of an act row: the guess, the measured time, the model's time and the
    error (guess - measured). Values of acts not yet revealed only for the teacher."""
    guesses = {(g["target"], g["student"]): g for g in
               manager.classroom.guesses(teacher=caller.teaches, viewer=_viewer(caller))}
    lines: list[list[Any]] = [CLASS_CSV]
    for act in act_views(manager, caller):
        for row in act["rows"]:
            m = row["measured"] or {}
            for p in row["points"]:
                g = guesses.get((row["key"], p["student"]), {})
                rel = p["error_s"] / m["duration_s"] if p["error_s"] is not None and m.get("duration_s") else None
                lines.append([act["key"], row["key"], p["student"], p["duration_s"], m.get("duration_s"),
                              m.get("predicted_s"), m.get("expected_s"), p["error_s"],
                              None if rel is None else round(rel, 4), m.get("contended"), m.get("run_id"),
                              g.get("created_at")])
    return Response(csv_text(lines), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="class.csv"'})
