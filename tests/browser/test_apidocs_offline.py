"""/docs and /redoc render in a classroom without internet: every non-loopback request is blocked.

The browser's requests go through a route that lets only 127.0.0.1 through and records the
rest; the page must render its operations and must not have tried to reach anything else.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from labservice import LabService

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _offline(page) -> list[str]:
    blocked: list[str] = []

    def route(r) -> None:
        host = urlsplit(r.request.url).hostname
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    return blocked


@pytest.mark.parametrize(("path", "rendered"), [
    # Swagger UI: one block per operation; ReDoc: one section per operation (sidebar and body)
    ("/docs", ".swagger-ui .opblock"),
    ("/redoc", '[data-section-id^="operation/"]'),
])
def test_api_docs_render_with_the_network_cut(service: LabService, new_page, path: str, rendered: str) -> None:
    page = new_page()
    blocked = _offline(page)
    page.goto(service.url + path)
    page.locator(rendered).nth(9).wait_for(state="attached", timeout=30_000)  # ten operations at least
    if path == "/docs":  # Swagger UI works, not just draws: open an operation
        page.locator(".opblock-summary-path[data-path='/api/v1/health']").first.click()
        page.wait_for_selector(".opblock.is-open >> text=Try it out")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"apidocs{path.replace('/', '-')}-offline.png"))
    assert blocked == [], f"{path} tried to reach the network: {blocked}"
    # The one thing the page's CSP refuses (so no request is made): ReDoc's hard-wired CDN logo.
    errors = [e for e in page.console.errors if not (LOGO in e and "Content Security Policy" in e)]
    assert errors == [], errors
