"""First start on a machine never calibrated: the service answers at once, says `starting` (health) and
"calibrating (n of m)" (pages) while the calibration runs in the background, and runs asked for meanwhile
queue behind it; the compose healthcheck counts `starting` as healthy and says why in one line when not."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from testkit import REPO


def test_the_first_start_answers_at_once_and_says_it_is_calibrating(live_service) -> None:
    svc = live_service(LAB_AUTO_CALIBRATE="1", log_level="info")  # a fresh data dir: never calibrated
    health = svc.get("/api/v1/health")
    assert health["status"] == "starting", health
    assert 0 <= health["calibrating"]["step"] < health["calibrating"]["steps"]
    talk = httpx.get(svc.url + "/talk", timeout=10)
    assert talk.status_code == 200 and 'id="banner-start"' in talk.text
    assert svc.get("/api/v1/calibration")["status"] in ("queued", "running")
    run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": {"size": "4M"}})
    time.sleep(2)
    if svc.get("/api/v1/health")["status"] == "starting":  # still calibrating: the run waits behind it
        assert svc.get(f"/api/v1/runs/{run['id']}")["status"] == "queued"
    ok = subprocess.run([sys.executable, "-I", str(REPO / "scripts/healthcheck.py"), svc.url + "/api/v1/health"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.startswith(("starting", "ok")), ok
    assert "calibrating it in the background" in svc.log_text()
    assert svc.stop() == 0  # a stop cancels the calibration: nothing half-measured is kept
    svc.start()
    assert svc.get("/api/v1/health")["status"] == "starting"  # still never calibrated: it starts again
    svc.stop()


def test_the_healthcheck_fails_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-I", str(REPO / "scripts/healthcheck.py"), "http://127.0.0.1:9/api/v1/health"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("unhealthy: http://127.0.0.1:9/")
