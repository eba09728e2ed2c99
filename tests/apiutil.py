"""Helpers for the web service tests: an app on a private data dir, an SSE reader, polling."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # starlette's note about httpx2; the suite pins httpx
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from testkit import wait_for

__all__ = ["FAST", "SLOW", "client_for", "make_settings", "real_events", "serve", "sse_events", "start_run",
           "wait_final", "wait_for", "wait_phase"]

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
# About 2 s: 32 backend writes of 256k at 60 ms (8 MiB, every byte written on a zeromode=none server).
SLOW = {"size": "8M", "delay_write": "60ms", "delay_zero": "1ms"}


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "workers": 2, "queue_size": 16, "token": None,
                              "allowed_hosts": "testserver",  # the TestClient's Host
                              "run_timeout_s": 120, "sse_keepalive_s": 15}
    values.update(overrides)
    return Settings(**values)


def client_for(data_dir: Path, **overrides: Any) -> TestClient:
    """A TestClient whose `with` block runs the app's lifespan (store, manager, workers)."""
    return TestClient(create_app(make_settings(data_dir, **overrides)))


def serve(tmp_path: Path, **overrides: Any) -> Iterator[TestClient]:
    """Body of each test module's `api` fixture: the app with its lifespan, on a private data dir."""
    with client_for(tmp_path / "data", **overrides) as client:
        yield client


def wait_final(client: TestClient, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        row = client.get(f"/api/runs/{run_id}").json()
        return row if row["status"] not in ("queued", "running") else None

    return wait_for(final, timeout)


def wait_phase(client: TestClient, run_id: str, phase: str, timeout: float = 60.0) -> None:
    """Until the run has reached `phase` (its `state` event with that phase is stored): with
    LAB_FAULT=pause-at:PHASE the run is then held there."""
    store = client.app.state.manager.store  # type: ignore[attr-defined]

    def reached() -> bool:
        return any(e.type == "state" and e.data.get("phase") == phase for e in store.events_after(0, run_id=run_id))

    wait_for(reached, timeout, what=f"run {run_id} in phase {phase}")


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse an event stream into {"id", "event", "data", "comment", "retry"} dicts, one per event."""
    cur: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if cur or data:
                if data:
                    cur["data"] = json.loads("\n".join(data))
                yield cur
            cur, data = {}, []
            continue
        if line.startswith(":"):
            cur["comment"] = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name in ("id", "event", "retry"):
            cur[name] = value


def real_events(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Only events with an id (no keepalive or retry-only comments)."""
    return (e for e in events if "id" in e)


def start_run(client: TestClient, client_id: str = "qemu-img", headers: dict[str, str] | None = None,
              **server: Any) -> dict[str, Any]:
    r = client.post("/api/runs", json={"client": client_id, "server": {**FAST, **server}}, headers=headers or {})
    assert r.status_code == 202, r.text
    return r.json()
