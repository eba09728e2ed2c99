"""A real `lab serve` for browser tests (testkit.LiveService with httpx answers), and press(): a person's click.

It is our own child (we stop it, nothing else), with a private data dir, so a test can
stop it and start it again on the same port and data to see what the page does meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from testkit import REPO, LiveService

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


def wait_live(page, *, on_screen: bool = False) -> None:
    """The page's event stream is live and its first read is in (window.lab.store.loaded).

    `#conn` is looked for in the page, not on screen, unless `on_screen`: the kiosk view hides
    the top bar it sits in.
    """
    page.wait_for_selector('#conn[data-state="live"]', state="visible" if on_screen else "attached")
    page.wait_for_function("window.lab && window.lab.store.loaded")


def open_live(page, url: str, *, on_screen: bool = False) -> None:
    """Go to `url` and wait until the page is live (wait_live)."""
    page.goto(url)
    wait_live(page, on_screen=on_screen)


def press(page, selector: str, hold_ms: int = 150) -> None:
    """A person's click: the pointer moves there, goes down, stays `hold_ms`, comes up.

    The target is centred (clear of the sticky top bar) until its box settles: rows below the
    fold take their size only when shown (content-visibility), so the first box can be stale.
    What is under the pointer must be the target, as a person would see it uncovered.
    """
    target = page.locator(selector)
    box = None
    for _ in range(20):
        target.evaluate("e => e.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'})")
        page.wait_for_timeout(50)
        now = target.bounding_box()
        if now == box:
            break
        box = now
    assert box, f"{selector} is not on screen"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hit = target.evaluate("(e, [x, y]) => { const h = document.elementFromPoint(x, y); return !!h && e.contains(h); }",
                          [x, y])
    assert hit, f"{selector} is covered at the point a person would press"
    page.mouse.move(x, y, steps=4)
    page.mouse.down()
    page.wait_for_timeout(hold_ms)
    page.mouse.up()
