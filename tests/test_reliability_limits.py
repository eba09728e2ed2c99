"""Limits from settings: sizes and delays on every entry point, concurrent runs, per-run
timeout, and the on-disk image cache (least recently used goes first)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from apiutil import FAST, client_for, start_run, wait_final

from testkit import descendants, mentioning

MiB = 1 << 20


@pytest.mark.parametrize(("field", "value"), [("size", "32M"), ("size", 32 * MiB + 512), ("size", "1T"),
                                              ("delay_write", "60ms"), ("delay_zero", 51), ("delay_write", "1s")])
def test_size_and_delay_limits_hold_on_every_entry_point(tmp_path, field, value):
    with client_for(tmp_path / "data", max_size=16 * MiB, max_delay_ms=50, max_servers=1) as api:
        posts = [("/api/runs", {"server": {**FAST, field: value}}, ["body", "server", field]),
                 ("/api/servers", {**FAST, field: value}, ["body", field]),
                 ("/api/scenarios/reference/runs", {"server": {**FAST, field: value}}, ["body", "server", field])]
        for path, body, loc in posts:
            r = api.post(path, json=body)
            assert r.status_code == 422, (path, r.text)
            assert r.json()["errors"][0]["loc"] == loc
        assert api.get("/api/runs").json()["total"] == 0 and api.get("/api/servers").json()["servers"] == []
        assert api.get("/api/sweeps").json()["total"] == 0


def test_workers_bound_concurrent_runs(tmp_path):
    """Six runs, two workers: never more than two running, nor more than two nbdkit at once."""
    before = {p.pid for p in descendants(os.getpid())}
    with client_for(tmp_path / "data", workers=2, queue_size=8) as api:
        manager = api.app.state.manager
        # an era client: runs of a real binary (qemu-img) never start beside another
        # (lab.service.scheduler LAUNCH_QUIET_S)
        runs = [start_run(api, "qemu-4.2", delay_write="20ms") for _ in range(6)]
        most_running = most_nbdkit = 0
        while any(api.get(f"/api/runs/{r['id']}").json()["status"] in ("queued", "running") for r in runs):
            most_running = max(most_running, manager.stats()["running"])
            nbdkit = [p for p in descendants(os.getpid()) if p.pid not in before and p.name == "nbdkit"]
            most_nbdkit = max(most_nbdkit, len(nbdkit))
            time.sleep(0.02)
        assert [api.get(f"/api/runs/{r['id']}").json()["status"] for r in runs] == ["succeeded"] * 6
        assert most_running == 2 and most_nbdkit <= 2


def test_run_timeout_fails_the_run_and_stops_everything(tmp_path, monkeypatch):
    runtime = tmp_path / "run"
    monkeypatch.setenv("LAB_RUNTIME_DIR", str(runtime))
    with client_for(tmp_path / "data", run_timeout_s=1, max_delay_ms=1000) as api:
        for client in ("qemu-img", "qemu-4.2"):
            run = start_run(api, client, delay_write="500ms")  # 16 s of writes: cannot finish in 1 s
            row = wait_final(api, run["id"])
            assert row["status"] == "failed" and row["error"] == "timed out after 1 s", row
            assert row["verified"] is not True
            assert not mentioning(runtime) and not [d for d in runtime.iterdir() if d.name.startswith("srv-")]


def _entries(root: Path) -> set[str]:
    return {e.name for e in root.iterdir() if (e / "meta.json").exists()}


def _disk(root: Path) -> int:
    return sum(f.stat().st_blocks * 512 for e in root.iterdir() if e.is_dir() for f in e.iterdir() if f.is_file())


def test_image_cache_is_bounded_least_recently_used_first(tmp_path, monkeypatch):
    """LAB_IMAGE_CACHE_BYTES reaches the cache through the manager: a new recipe evicts the
    least recently used entries until it fits; an entry used since is kept."""
    cache = tmp_path / "images"
    monkeypatch.setenv("LAB_IMAGE_DIR", str(cache))
    # Each of the first two recipes takes about 4.5 MiB on disk (2 MiB of data, raw + qcow2);
    # the third is estimated at 3 MiB: 10 MiB cannot hold all three.
    budget = 10 * MiB
    with client_for(tmp_path / "data", image_cache_bytes=budget) as api:
        def run(pattern: str) -> None:
            row = wait_final(api, start_run(api, size="4M", pattern=pattern)["id"])
            assert row["status"] == "succeeded", row["error"]

        run("alternate:1M")
        run("alternate:512k")
        a, b = sorted(_entries(cache), key=lambda n: "512k" in n)
        time.sleep(0.01)  # LRU clock: mtime
        run("alternate:1M")  # a is now the more recently used
        run("alternate:1M:3M")  # a third recipe: b, least recently used, goes
        left = _entries(cache)
        assert a in left and b not in left and len(left) == 2, left
        assert _disk(cache) <= budget
