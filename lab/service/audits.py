"""Zero audits as jobs of the one scheduler, kept as JSON files in DATA_DIR/audits.

An audit is one job of kind `audit_step` (the JOB CONTRACT): its server and disk live for the
whole audit, so one step is the whole audit, carried out on one machine with that machine to
itself (it writes at full speed, and where the storage shows no evidence its cost is judged by
the clock). Its progress events are kept in memory for GET; its result (lab.nbd.audit's dict)
is written to DATA_DIR/audits/ID.json, so audits survive a restart; one still running when the
service stopped reads back as `interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from lab.domain.errors import Conflict, NotFound
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.run import new_id
from lab.host.places import Places, resolve
from lab.nbd.audit_cells import QUICK_SIZES
from lab.service import jobs

MAX_KEPT = 200  # the oldest finished audits' files go beyond this
AUDIT_DEADLINE_S = 1800.0
FINAL = ("done", "incomplete", "cancelled", "failed", "interrupted")


class AuditBook:
    """Submit, follow, list and cancel audits; their files are the record."""

    def __init__(self, scheduler: Any, places: Places | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.scheduler, self.limits = scheduler, limits
        self.dir = resolve(places).data_dir / "audits"
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, Any]] = {}  # queued or running: id -> summary (with progress)
        self._jobs: dict[str, jobs.Job] = {}

    # -- submitting --------------------------------------------------------------------------------
    def submit(self, fields: dict[str, Any], plan: dict[str, Any] | None = None, deadline_s: float = AUDIT_DEADLINE_S,
               who: jobs.Who | None = None) -> dict[str, Any]:
        """Queue an audit; AuditError (its `field`) before anything is queued when the request is wrong."""
        from lab.nbd import audit

        opts = plan or {}
        sizes = opts.get("sizes") or (QUICK_SIZES if opts.get("quick") else None)
        made = audit.make_plan(sizes, max_size=opts.get("max_size"), flags=opts.get("flags"),
                               disks=opts.get("disks"), inflight=opts.get("inflight"), limits=self.limits)
        server = audit.check_request(fields, made, self.limits, api=True)
        if not 0 < deadline_s <= 4 * 3600:
            raise audit.AuditError("deadline_s", f"must be between 0 and {4 * 3600} seconds (got {deadline_s})")
        aid = new_id()
        summary = {"id": aid, "status": "queued", "label": audit.label(server), "server": server,
                   "plan": made.to_dict(), "created_at": time.time(), "progress": None, "verdict": None}
        job = jobs.audit_job(aid, {"server": server, "plan": made.to_dict(), "deadline_s": deadline_s, "api": True},
                             who or jobs.TEACHER)
        job.listener = lambda ev: self._event(aid, ev)
        with self._lock:
            self._live[aid] = summary
            self._jobs[aid] = job
        try:
            self.scheduler.submit([job])
        except BaseException:
            with self._lock:
                self._live.pop(aid, None)
                self._jobs.pop(aid, None)
            raise
        self._write(aid, summary)  # on record at once: a service that stops before it ends shows it interrupted
        threading.Thread(target=self._await, args=(aid, job), name=f"audit-{aid}", daemon=True).start()
        return dict(summary)

    def _event(self, aid: str, ev: dict[str, Any]) -> None:
        with self._lock:
            s = self._live.get(aid)
            if s is None:
                return
            if ev.get("type") == "state":
                s["status"], s["started_at"] = "running", s.get("started_at") or time.time()
            elif ev.get("phase") == "group":
                s["progress"] = {"done": ev.get("done"), "total": ev.get("total"), "current": ev.get("key")}

    def _await(self, aid: str, job: jobs.Job) -> None:
        job.done.wait()
        out = job.outcome or {}
        with self._lock:
            summary = self._live.get(aid, {"id": aid})
        result = out.get("result")  # a cancelled audit has one too: what it did before it stopped
        if result is not None:
            record = {**summary, **result, "id": aid, "status": result["status"], "finished_at": time.time()}
        else:
            record = {**summary, "status": "cancelled" if job.status == "cancelled" else "failed",
                      "error": out.get("error") or job.status, "finished_at": time.time()}
        self._write(aid, record)
        with self._lock:
            self._live.pop(aid, None)
            self._jobs.pop(aid, None)
        self._trim()

    # -- reading ----------------------------------------------------------------------------------
    def get(self, aid: str) -> dict[str, Any]:
        with self._lock:
            live = self._live.get(aid)
            if live is not None:
                return dict(live)
        path = self._path(aid)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            raise NotFound(f"no audit {aid}", "audit_id") from None
        if record.get("status") not in FINAL:  # written by a service that stopped before it ended
            record = {**record, "status": "interrupted"}
        return record

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first: live ones, then the kept files (summaries: no cells)."""
        with self._lock:
            out = [dict(s) for s in self._live.values()]
        files = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) \
            if self.dir.is_dir() else []
        for p in files[:limit]:
            with contextlib.suppress(OSError, ValueError):
                out.append(summary_of(json.loads(p.read_text())))
        seen: set[str] = set()
        out = [s for s in out if not (s["id"] in seen or seen.add(s["id"]))]  # a live one also has its file
        out.sort(key=lambda s: s.get("created_at") or 0, reverse=True)
        return out[:limit]

    def cancel(self, aid: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(aid)
        if job is None:
            self.get(aid)  # NotFound, or a finished one
            raise Conflict(f"audit {aid} has already finished")
        self.scheduler.cancel(lambda j: j is job, wait=5)
        job.done.wait(10)
        return self.get(aid)

    def report_html(self, ids: list[str]) -> str:
        """Finished audits side by side as one self-contained page (lab.service.audit_report)."""
        from lab.service import audit_report

        audits = [self.get(i) for i in ids]
        waiting = [a["id"] for a in audits if "cells" not in a]
        if waiting:
            raise NotFound(f"no report yet: audits still running or queued: {', '.join(waiting)}", "ids")
        return audit_report.html_page(audits)

    # -- files --------------------------------------------------------------------------------------
    def _path(self, aid: str) -> Path:
        if not aid.isalnum() or len(aid) > 40:
            raise NotFound(f"no audit {aid[:40]}", "audit_id")
        return self.dir / f"{aid}.json"

    def _write(self, aid: str, record: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{aid}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self._path(aid))

    def _trim(self) -> None:
        files = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in files[MAX_KEPT:]:
            with contextlib.suppress(OSError):
                p.unlink()


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """An audit without its cells, reproducers and report (for lists)."""
    keep = ("id", "status", "label", "server", "created_at", "finished_at", "verdict", "why", "error", "progress",
            "seconds", "stopped")
    out = {k: record.get(k) for k in keep}
    out["unsafe"] = bool((record.get("safety") or {}).get("unsafe"))
    if out["status"] not in FINAL:  # on file but not live here: its service stopped before it ended
        out["status"] = "interrupted"
    return out
