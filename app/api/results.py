"""Results as JSON and CSV: Run.to_dict() rows (the CLI's JSON), CSV flattened by lab.results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import ManagerDep
from app.schemas import ClientId, ResultsOut, RunStatus
from lab.results import COLUMNS, to_csv

router = APIRouter(tags=["results"])

MAX_ROWS = 100_000


def _rows(manager: Any, sweep_id: str | None, client: ClientId | None, status: RunStatus | None,
          label: str | None, limit: int | None) -> list[dict[str, Any]]:
    rows, _ = manager.store.list_runs(status=status.value if status else None, client=client.value if client else None,
                                      sweep_id=sweep_id, label=label, limit=limit or MAX_ROWS, newest_first=False)
    return rows


SweepQ = Annotated[str | None, Query(max_length=64, description="only this sweep's runs")]
LabelQ = Annotated[str | None, Query(max_length=80, description="only runs with this label (scenario row key)")]
LimitQ = Annotated[int | None, Query(ge=1, le=MAX_ROWS)]


@router.get("/results.json", response_model=ResultsOut)
def results_json(manager: ManagerDep, sweep_id: SweepQ = None, client: ClientId | None = None,
                 status: RunStatus | None = None, label: LabelQ = None, limit: LimitQ = None) -> dict[str, Any]:
    """Runs oldest first (a sweep's rows in scenario order), each exactly as `lab run --json` prints it."""
    rows = _rows(manager, sweep_id, client, status, label, limit)
    return {"rows": rows, "count": len(rows), "columns": list(COLUMNS)}


@router.get("/results.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def results_csv(manager: ManagerDep, sweep_id: SweepQ = None, client: ClientId | None = None,
                status: RunStatus | None = None, label: LabelQ = None, limit: LimitQ = None) -> Response:
    """The same rows, one column per leaf (`backend.write_ops`, `server.zeromode`, ...)."""
    rows = _rows(manager, sweep_id, client, status, label, limit)
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'inline; filename="fastzero-results.csv"'})
