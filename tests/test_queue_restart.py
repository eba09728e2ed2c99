"""A restart of `lab serve` keeps the queue: queued runs (and a sweep's queued rows) survive a SIGTERM,
start again in the order the lanes and turns give them, and run to the end; only the run that was
running is `interrupted`."""

from __future__ import annotations

import time

import httpx

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "8M", "delay_write": "200ms", "delay_zero": "1ms"}  # about 7 s: still running at the stop


def _final(http: httpx.Client, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = http.get(f"/api/v1/runs/{run_id}", params={"wait": 5}).json()
        if row["status"] not in ("queued", "running"):
            return row
    raise AssertionError(f"run {run_id} did not finish")


def test_a_restart_keeps_the_queue_in_its_order(live_service) -> None:
    svc = live_service(LAB_WORKERS="1", token="teach", log_level="warning")
    with svc.http() as http:  # the token: the teacher, unless a run names a student
        blocker = http.post("/api/v1/runs", json={"client": "qemu-4.2", "server": SLOW}).json()
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/runs/{blocker['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.1)
        students = []
        for name in ("ana", "ana", "ben", "ben"):
            r = http.post("/api/v1/runs", json={"client": "qemu-4.2", "server": FAST, "student": name})
            assert r.status_code == 202 and r.json()["lane"] == "student"
            students.append(r.json())
        sweep = http.post("/api/v1/scenarios/reference/runs",
                          json={"only": ["ref-none", "ref-plugin-default"], "server": FAST}).json()
        listed = {r["id"]: r for r in http.get("/api/v1/runs", params={"status": "queued"}).json()["runs"]}
        before = sorted(listed, key=lambda rid: listed[rid]["queue_position"])
    assert svc.stop() == 0

    svc.start()
    with svc.http() as http:
        assert http.get(f"/api/v1/runs/{blocker['id']}").json()["status"] == "interrupted"
        ids = [r["id"] for r in students] + sweep["run_ids"]
        rows = {rid: _final(http, rid) for rid in ids}
        assert {rid: r["status"] for rid, r in rows.items()} == {rid: "succeeded" for rid in ids}
        assert all(r["verified"] for r in rows.values())
        assert http.get(f"/api/v1/sweeps/{sweep['id']}", params={"wait": 30}).json()["status"] == "succeeded"
    started = sorted(ids, key=lambda rid: rows[rid]["started_at"])
    assert started == before, "they started in the order they were queued in before the stop"
    # the teacher's sweep first, then the students taking turns
    assert started == [*sweep["run_ids"], students[0]["id"], students[2]["id"], students[1]["id"], students[3]["id"]]


def test_lab_queue_shows_the_order_and_the_estimates(live_service) -> None:
    """`lab queue` prints what GET /api/v1/queue says: the teacher's run first, then students in turns."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    lab = str(Path(sys.executable).with_name("lab"))
    svc = live_service(LAB_WORKERS="1", token="teach", log_level="warning")
    with svc.http() as http:
        blocker = http.post("/api/v1/runs", json={"client": "qemu-4.2", "server": SLOW}).json()
        ids = [http.post("/api/v1/runs", json={"client": "qemu-4.2", "server": FAST, "student": s}).json()["id"]
               for s in ("ana", "ana", "ben")]
        teacher = http.post("/api/v1/runs", json={"client": "qemu-4.2", "server": FAST}).json()["id"]
        out = subprocess.run([lab, "queue", "--url", svc.url, "--json"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        q = json.loads(out.stdout)
        order = [r["id"] for r in q["runs"]]
        assert order[0] == teacher and order[1:] == [ids[0], ids[2], ids[1]], q
        assert [r["queue_position"] for r in q["runs"]] == [1, 2, 3, 4]
        starts = [r["estimated_start_s"] for r in q["runs"]]
        assert starts == sorted(starts) and starts[-1] > 0
        assert q["workers"] == [{"id": "local", "slots": 1, "running": [blocker["id"]]}]
        text = subprocess.run([lab, "queue", "--url", svc.url], capture_output=True, text=True, timeout=30).stdout
        assert "teacher" in text and "ana" in text and "worker local: 1 of 1 slots" in text, text
        for rid in [blocker["id"], *ids, teacher]:
            http.post(f"/api/v1/runs/{rid}/cancel")
