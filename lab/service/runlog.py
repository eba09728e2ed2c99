"""One log line per run as it starts and ends, saying who asked (teacher, student, anonymous) and, when
it did not succeed, why: `lab serve`'s log (text, or JSON lines with these as fields: lab/cli/logs.py).

    run 3f2a9c0d1e2b started: qemu-img, nbdkit memory 100M, for student Ana
    run 3f2a9c0d1e2b cancelled (cancelled by the teacher): qemu-img, for student Ana
"""

from __future__ import annotations

import logging
from typing import Any

from lab.domain.run import Run

log = logging.getLogger("lab.runs")


def _fields(run: Run, who: Any, event: str, **more: Any) -> dict[str, Any]:
    lane = getattr(who, "lane", None) or "anonymous"
    return {"event": event, "run_id": run.id, "who": lane, "student": run.student, "client": run.client,
            "label": run.label, "sweep_id": run.sweep_id, **more}


def _whose(run: Run, who: Any) -> str:
    lane = getattr(who, "lane", None) or "anonymous"
    if run.student:
        return f"for student {run.student}"
    return {"teacher": "for the teacher", "system": "for the service"}.get(lane, "anonymous")


def started(run: Run, who: Any) -> None:
    s = run.server
    what = f"{run.client}, {getattr(s, 'kind', 'nbdkit')} {getattr(s, 'plugin', '') or ''} {getattr(s, 'size', '')}"
    log.info("run %s started: %s, %s", run.id, " ".join(what.split()), _whose(run, who),
             extra=_fields(run, who, "run.started"))


def ended(run: Run, who: Any, cancelled_by: str | None = None) -> None:
    """`cancelled_by`: who asked for the cancel (the teacher, the student), when someone did."""
    status = run.status
    reason = run.error or ""
    if status == "cancelled" and cancelled_by:
        reason = f"cancelled by {cancelled_by}"
    took = f" in {run.duration_s:.2f} s" if status == "succeeded" and run.duration_s is not None else ""
    why = f" ({reason})" if reason and status != "succeeded" else ""
    level = logging.INFO if status in ("succeeded", "cancelled") else logging.WARNING
    log.log(level, "run %s %s%s%s: %s, %s", run.id, status, took, why, run.client, _whose(run, who),
            extra=_fields(run, who, f"run.{status}", status=status, reason=reason or None,
                          duration_s=run.duration_s))
