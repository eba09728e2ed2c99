"""The class: who ran what (per student), and the guesses made before the talk's acts.

POST /guesses is the one write a student may make without the teacher's token (TokenMiddleware
lets it through): a guess changes nothing that runs; it is a name, a target and numbers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.http.deps import ManagerDep, SettingsDep
from app.http.errors import Problem, responses, spec_error
from app.schemas.runs import Prediction, Reference, Student, _Strict
from lab.domain.scenarios import ACTS
from lab.domain.spec import SpecError
from lab.domain.students import PREDICTION_FIELDS
from lab.service.export import csv_text, guess_rows

router = APIRouter(tags=["class"])

# What a guess may be about: a row of the talk's acts (its label on the runs that act starts).
ACT_ROWS = {r.key: (a, r) for a in ACTS for r in a.rows}
OPEN_POSTS = ("/guesses",)  # relative to the API prefix: the token does not guard these

TargetQ = Annotated[str | None, Query(max_length=64, description="an act row key, e.g. act2-A")]
StudentQ = Annotated[str | None, Query(min_length=1, max_length=80)]


class StudentSummary(BaseModel):
    student: str
    total: int
    by_status: dict[str, int]
    first_at: float | None = None
    last_at: float | None = None
    unfinished: int = Field(0, description="runs of theirs queued or running now")


class ClassOut(BaseModel):
    students: list[StudentSummary]
    max_queued_per_student: int | None = None
    total_runs: int


class GuessOut(BaseModel):
    id: str
    student: str
    target: str
    prediction: dict[str, float]
    created_at: float


class GuessList(BaseModel):
    guesses: list[GuessOut]
    count: int


class Measured(BaseModel):
    run_id: str
    duration_s: float | None = None
    predicted_s: float | None = None
    write_ops: int | None = None
    zero_ops: int | None = None


class ActRowView(BaseModel):
    key: str
    group: str
    client: str
    guesses: dict[str, list[float]] = Field(description="prediction field -> the class's guesses")
    students: list[str]
    measured: Measured | None = None
    reference: Reference | None = None


class ActView(BaseModel):
    key: str
    title: str
    rows: list[ActRowView]


class ActsOut(BaseModel):
    acts: list[ActView]


class GuessCreate(_Strict):
    student: Student
    target: Annotated[str, Field(min_length=1, max_length=64, description="the act row guessed, e.g. act2-A")]
    prediction: Prediction


@router.get("/class", response_model=ClassOut)
def class_view(manager: ManagerDep, settings: SettingsDep) -> dict[str, Any]:
    """Every student with runs: how many by status, first and last; and the per-student limit."""
    queued = manager.unfinished_by_student()
    students = [{**s, "unfinished": queued.get(s["student"], 0)} for s in manager.history.students()]
    return {"students": students, "max_queued_per_student": settings.max_queued_per_student or None,
            "total_runs": sum(s["total"] for s in students)}


@router.post("/guesses", status_code=201, response_model=GuessOut, responses=responses(404, 413, 422))
def add_guess(body: GuessCreate, manager: ManagerDep) -> dict[str, Any]:
    """A student's guess before an act of the talk (no token needed: it starts nothing)."""
    if body.target not in ACT_ROWS:
        raise Problem("not-found", f"no act row {body.target!r}; use one of {', '.join(ACT_ROWS)}",
                      errors=[{"loc": ["body", "target"], "message": "no such act row", "code": "not_found",
                               "value": body.target}])
    try:
        prediction = body.prediction.raw()
    except SpecError as e:
        raise spec_error(e, ("body",)) from None
    return manager.add_guess(body.student, body.target, prediction)


@router.get("/guesses", response_model=GuessList)
def list_guesses(manager: ManagerDep, target: TargetQ = None, student: StudentQ = None) -> dict[str, Any]:
    rows = manager.history.guesses(target, " ".join(student.split()) if student else None)
    return {"guesses": rows, "count": len(rows)}


@router.get("/guesses.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def guesses_csv(manager: ManagerDep, target: TargetQ = None, student: StudentQ = None) -> Response:
    text = csv_text(guess_rows(manager.history.guesses(target, " ".join(student.split()) if student else None)))
    return Response(text, media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="guesses.csv"'})


@router.get("/class/acts", response_model=ActsOut)
def acts_view(manager: ManagerDep) -> dict[str, Any]:
    """Per act and row: the class's guesses and the latest finished run of that row (measured, model)."""
    guesses = manager.history.guesses()
    latest = manager.history.latest_succeeded([row.key for act in ACTS for row in act.rows])
    out = []
    for act in ACTS:
        rows = []
        for row in act.rows:
            mine = [g for g in guesses if g["target"] == row.key]
            run = latest.get(row.key)
            rows.append({
                "key": row.key, "group": row.group, "client": row.client,
                "guesses": {k: [g["prediction"][k] for g in mine if k in g["prediction"]] for k in PREDICTION_FIELDS},
                "students": sorted({g["student"] for g in mine}),
                "measured": None if run is None else {
                    "run_id": run["id"], "duration_s": run.get("duration_s"), "predicted_s": run.get("predicted_s"),
                    "write_ops": (run.get("backend") or {}).get("write_ops"),
                    "zero_ops": (run.get("backend") or {}).get("zero_ops")},
                "reference": row.reference,
            })
        out.append({"key": act.key, "title": act.title, "rows": rows})
    return {"acts": out}
