"""compose.yaml's `cluster` profile, read by Debian's docker-compose without an engine: a broker and a
scalable worker from the lab's own image, the broker's password in one variable, the broker published on
127.0.0.1 unless the teacher opens it, the workers as unprivileged as the lab. (tests/test_compose.py runs
the profile for real on a private Docker engine.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
URL = "redis://:s3cret-password@redis:6379/0"


def _config(tmp_path: Path, **env: str) -> dict[str, Any]:
    import yaml

    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (scripts/install.sh --dev installs it)")
    empty = tmp_path / "empty.env"  # a developer's .env must not change the result
    empty.write_text("")
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    r = subprocess.run([compose, "--env-file", str(empty), "-f", str(ROOT / "compose.yaml"), "--profile", "cluster",
                        "config"], capture_output=True, text=True, timeout=60, env=clean, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


def test_the_cluster_profile_is_a_broker_and_workers_from_the_same_image(tmp_path: Path) -> None:
    s = _config(tmp_path, LAB_BROKER_URL=URL)
    lab, redis, worker = s["lab"], s["redis"], s["worker"]
    assert redis["profiles"] == worker["profiles"] == ["cluster"] and lab.get("profiles") is None
    assert redis["image"] == worker["image"] == lab["image"] and redis["build"] == lab["build"]
    assert redis["command"][:2] == ["lab", "broker"] and worker["command"] == ["lab", "worker"]
    # one variable: the same URL (and so the same password) for the service, the broker and each worker
    assert lab["environment"]["LAB_BROKER_URL"] == redis["environment"]["LAB_BROKER_URL"] == \
        worker["environment"]["LAB_BROKER_URL"] == URL
    assert s["lab-group2"]["environment"]["LAB_BROKER_URL"] == ""  # workers serve one service
    assert redis["ports"] == ["127.0.0.1:6379:6379/tcp"]
    assert "ports" not in worker and "volumes" not in worker  # opens no port; each replica its own /data
    for svc in (redis, worker):
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"]
        assert svc["init"] is True and "/api/v1/health" not in " ".join(svc["healthcheck"]["test"])
    assert worker["healthcheck"]["test"][-2:] == ["worker", "--alive"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert int(str(worker["stop_grace_period"]).rstrip("s")) > 20  # the worker drains for 20 s first


def test_without_a_broker_url_nothing_changes_for_the_lab(tmp_path: Path) -> None:
    s = _config(tmp_path)
    assert s["lab"]["environment"]["LAB_BROKER_URL"] == ""  # empty: embedded, as always


def test_the_teacher_can_open_the_broker_to_other_hosts(tmp_path: Path) -> None:
    s = _config(tmp_path, LAB_BROKER_URL=URL, LAB_BROKER_BIND="0.0.0.0", LAB_BROKER_PORT="6380",
                LAB_WORKER_SLOTS="3")
    assert s["redis"]["ports"] == ["0.0.0.0:6380:6379/tcp"]
    assert s["worker"]["environment"]["LAB_WORKERS"] == "3"
