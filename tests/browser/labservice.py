"""A real `lab serve` for browser tests: lab.testing.LiveService with httpx answers.

It is our own child (we stop it, nothing else), with a private data dir, so a test can
stop it and start it again on the same port and data to see what the page does meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from lab.testing import REPO, LiveService

ROOT = REPO
SMALL = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}


class LabService:
    """The browser tests' handle on a LiveService; stop() and start() keep the port and the data dir."""

    def __init__(self, data_dir: Path, token: str | None = None, env: dict[str, str] | None = None) -> None:
        self.live = LiveService(data_dir.parent, env={"LAB_WORKERS": "2", **(env or {})}, token=token,
                                data_dir=data_dir, log_level="warning")
        self.url, self.port, self.data_dir, self.token = self.live.url, self.live.port, data_dir, token

    def start(self) -> LabService:
        self.live.start(timeout=30)
        return self

    def stop(self) -> None:
        """SIGTERM (the service interrupts its runs and stops its servers), SIGKILL if it hangs."""
        self.live.stop()

    def headers(self) -> dict[str, str]:
        return self.live.headers()

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers(), timeout=30)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def wait_run(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/runs/{run_id}").json()
            if run["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
                return run
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not finish in {timeout} s")
