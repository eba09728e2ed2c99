"""`lab serve`'s log: run started/finished/failed/cancelled with who asked and why, as text or JSON lines
(LAB_LOG_FORMAT=json), and no health-probe access lines unless LAB_LOG_HEALTH=1."""

from __future__ import annotations

import json
import logging
import time

import httpx

from lab.cli.logs import DropHealth, JsonLines

SLOW = {"size": "8M", "delay_write": "60ms", "delay_zero": "1ms"}


def _access(path: str) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                             ("127.0.0.1:5", "GET", path, "1.1", 200), None)


def test_json_lines_carry_the_event_fields_and_health_probes_are_left_out() -> None:
    rec = logging.LogRecord("lab.runs", logging.WARNING, "", 0, "run %s failed", ("abc",), None)
    rec.event, rec.run_id, rec.who, rec.reason = "run.failed", "abc", "student", "NOT verified"
    line = json.loads(JsonLines().format(rec))
    assert line["msg"] == "run abc failed" and line["level"] == "warning" and line["logger"] == "lab.runs"
    assert (line["event"], line["run_id"], line["who"], line["reason"]) == ("run.failed", "abc", "student",
                                                                           "NOT verified")
    assert line["ts"].endswith("Z")
    access = json.loads(JsonLines().format(_access("/api/v1/runs?limit=5")))
    assert (access["event"], access["method"], access["path"], access["status"]) == ("http", "GET",
                                                                                    "/api/v1/runs?limit=5", 200)
    keep = DropHealth()
    assert not keep.filter(_access("/api/v1/health")) and not keep.filter(_access("/api/health?x=1"))
    assert keep.filter(_access("/api/v1/runs")) and keep.filter(rec)


def _lines(svc) -> list[dict]:
    return [json.loads(line) for line in svc.log_text().splitlines() if line.strip()]


def test_the_service_logs_who_started_and_ended_each_run_as_json(live_service) -> None:
    svc = live_service(LAB_LOG_FORMAT="json", log_level="info")
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        done = c.post("/api/v1/runs", json={"client": "qemu-img", "server": {"size": "4M"}, "student": "Ana"}).json()
        slow = c.post("/api/v1/runs", json={"client": "qemu-img", "server": SLOW}).json()
        deadline = time.monotonic() + 60
        while c.get(f"/api/v1/runs/{done['id']}").json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        c.post(f"/api/v1/runs/{slow['id']}/cancel")
        for _ in range(20):
            c.get("/api/v1/health")
    svc.stop()
    lines = _lines(svc)  # every line is JSON, uvicorn's own included
    events = {(e.get("event"), e.get("run_id")): e for e in lines}
    started = events[("run.started", done["id"])]
    assert started["who"] == "student" and started["student"] == "Ana" and "for student Ana" in started["msg"]
    assert events[("run.succeeded", done["id"])]["duration_s"] > 0
    cancelled = events[("run.cancelled", slow["id"])]
    assert cancelled["who"] == "anonymous" and cancelled["reason"].startswith("cancelled by an anonymous caller")
    paths = [e["path"] for e in lines if e.get("event") == "http"]
    assert any(p.startswith("/api/v1/runs") for p in paths)
    assert not [p for p in paths if p.startswith("/api/v1/health")], "health probes are not logged by default"
