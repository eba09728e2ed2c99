"""Scenarios (named sets of runs) and sweeps (one scenario queued as a group, with its own id)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from app.api import API_PREFIX
from app.api.sweeps import with_runs
from app.http.deps import ManagerDep
from app.http.errors import Problem, responses, spec_error
from app.http.headers import located
from app.http.idempotency import IdempotencyKey, once
from app.http.identity import CallerDep, student_of, who_of
from app.schemas.runs import ScenarioList, ScenarioOut, ScenarioRowsOut, SweepCreate, SweepOut
from lab.domain.scenarios import SCENARIOS, row_match
from lab.domain.spec import SpecError, build_spec
from lab.service.manager import NotFound

router = APIRouter(tags=["scenarios"])


# The listing checks every row's fields against this machine (several hundred build_spec calls,
# ~60 ms of CPU holding the GIL): made at most once per LISTING_TTL_S, as what the machine has
# changes seldom. Found with py-spy under bench/load.py (docs/benchmarks.md#load-and-the-event-loop).
LISTING_TTL_S = 5.0


@router.get("/scenarios", response_model=ScenarioList, response_model_exclude_unset=True)
def list_scenarios(manager: ManagerDep, request: Request) -> Response:
    """Every scenario with its rows (client, server fields, reference figures) and acts, as this machine
    runs them: a row it cannot run is listed with `available: false` and the `reason`."""
    made = getattr(request.app.state, "scenario_listing", None)
    if made is None or time.monotonic() - made[0] >= LISTING_TTL_S:
        out = {"scenarios": [normalised(s.to_dict()) for s in manager.scenarios_here(SCENARIOS.values())]}
        body = ScenarioList.model_validate(out).model_dump_json(exclude_unset=True).encode()
        made = request.app.state.scenario_listing = (time.monotonic(), body)
    return Response(made[1], media_type="application/json")


@router.get("/scenarios/{name}", response_model=ScenarioOut, response_model_exclude_unset=True,
            responses=responses(404))
def get_scenario(name: str, manager: ManagerDep) -> dict[str, Any]:
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise NotFound(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    [here] = manager.scenarios_here([scenario])
    return normalised(here.to_dict())


def _fields(server: dict[str, Any]) -> dict[str, Any]:
    """A row's server fields as runs echo them (bytes, milliseconds): only those the row sets."""
    return dict(_normal(tuple(server.items())))


@lru_cache(maxsize=1024)
def _normal(items: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """_fields of a row's (hashable, fixed) fields: the same rows are normalised on every listing."""
    spec = build_spec(dict(items)).to_dict()
    return tuple((k, spec[k]) for k, _ in items if k in spec)


def normalised(scenario: dict[str, Any]) -> dict[str, Any]:
    rows = [{**r, "server": _fields(r["server"])} for r in scenario["rows"]]
    acts = [{**a, "rows": [{**r, "server": _fields(r["server"])} for r in a["rows"]]} for a in scenario["acts"]]
    return {**scenario, "rows": rows, "acts": acts}


@router.get("/scenarios/{name}/rows", response_model=ScenarioRowsOut, response_model_exclude_unset=True,
            responses=responses(404, 422))
def scenario_rows(name: str, manager: ManagerDep,
                  per_row: Annotated[int, Query(ge=0, le=100)] = 5) -> dict[str, Any]:
    """Which runs belong to which row of the scenario (and of its acts), newest first.

    One rule (lab.domain.scenarios.rows_of): a run measures a row when its client and every
    field of the row's `match` agree, or when it carries the row's key as its label with the
    row's zero modes (a sweep at another geometry). Every run says which rows it measures in
    `scenario_rows` ({row key: at the row's own geometry}), so a page that hears of a new run
    needs no rule of its own. `total` counts every matching run; `runs` holds the newest
    `per_row` of them.
    """
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise NotFound(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    [scenario] = manager.scenarios_here([scenario])  # the rows as this machine runs them (act 3b's storages)
    rows = {r.key: r for r in scenario.rows}
    for act in scenario.acts:
        for r in act.rows:
            rows.setdefault(r.key, r)
    last = manager.last_event_id
    out = []
    for row in rows.values():
        mine, total = manager.history.row_runs(row, per_row)
        out.append({**row.to_dict(), "server": _fields(row.server),
                    "match": {"client": row.client, "server": row_match(row)}, "total": total, "runs": mine})
    return {"name": name, "rows": out, "last_event_id": last}


@router.post("/scenarios/{name}/runs", status_code=202, response_model=SweepOut,
             response_model_exclude_unset=True,
    responses=located(202, "queued", 400, 401, 404, 409, 413, 422, 429, 503))
def start_sweep(name: str, manager: ManagerDep, caller: CallerDep, request: Request, response: Response,
                body: Annotated[SweepCreate | None, Body()] = None, idempotency_key: IdempotencyKey = None) -> Any:
    """Queue every row of the scenario (or `only` some) as one sweep; all rows fit in the queue or none is queued.
    A student's sweep is theirs whatever `student` says (their key names them)."""
    body = body or SweepCreate()
    student = student_of(caller, body.student, manager.classroom)
    return once(manager.idempotency, request, response, idempotency_key, 202,
                lambda: _start_sweep(name, manager, request, response, body, student))


def _start_sweep(name: str, manager: Any, request: Request, response: Response, body: SweepCreate,
                 student: str | None) -> dict[str, Any]:
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise NotFound(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    keys = [r.key for r in scenario.rows]
    for i, key in enumerate(body.only or ()):
        if key not in keys:
            raise Problem("not-found", f"scenario {name} has no row {key!r}; its rows: {', '.join(keys)}",
                          errors=[{"loc": ["body", "only", i], "message": "no such row", "code": "not_found",
                                   "value": key}])
    raw = body.server.raw() if body.server is not None else None
    try:
        sweep = manager.start_sweep(name, only=body.only, overrides=raw, student=student,
                                    who=who_of(request, student))
    except SpecError as e:
        if raw and e.field in raw:  # the caller's override is at fault
            raise spec_error(e, ("body", "server")) from None
        # the scenario's own rows do not fit this instance (its limits, what this machine has)
        raise Problem("not-runnable", f"scenario {name} cannot run on this service: {e}") from None
    response.headers["Location"] = f"{API_PREFIX}/sweeps/{sweep['id']}"
    return with_runs(manager, sweep)
