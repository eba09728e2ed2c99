"""Browser fixtures: a real `lab serve` on a free port (labservice.py) and Debian's Chromium via Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labservice import LabService

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator:
    services: list[LabService] = []

    def make(token: str | None = None, **env: str) -> LabService:
        svc = LabService(tmp_path / f"data{len(services)}", token, env).start()
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.stop()


@pytest.fixture
def service(service_factory) -> LabService:
    return service_factory()


# Module scope: sync Playwright keeps an event loop running in this thread until it
# stops, which would break asyncio.run() in the tests collected after this folder.
@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (scripts/install.sh --dev installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# The form is checked as it is typed by POST /api/v1/validate, whose answer for a wrong field is a 422
# (a problem naming each field): Chromium logs every 4xx fetch as a console error; that one is expected.
EXPECTED_4XX = (("/api/v1/validate", 422),)


class Console:
    """Console errors and uncaught exceptions of one page (not the validator's expected 422s)."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _message(self, m) -> None:
        if m.type != "error":
            return
        url = (m.location or {}).get("url", "")
        if any(url.endswith(path) and f"status of {status} " in m.text for path, status in EXPECTED_4XX):
            return
        self.errors.append(m.text)


@pytest.fixture
def new_page(browser) -> Iterator:
    contexts = []

    def make(width: int = 1280, height: int = 720):
        ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.console = Console(page)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
