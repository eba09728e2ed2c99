"""The case-study page's Saved sweeps card: a custom sweep listed, re-run with a real press."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from labservice import press

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def settled(page, selector: str, quiet_ms: int = 600) -> None:
    """Until `selector` has not moved for `quiet_ms` (30 s at most)."""
    last, still, waited = None, 0, 0
    while still < quiet_ms and waited < 30_000:
        box = page.locator(selector).bounding_box()
        still = still + 100 if box == last else 0
        last = box
        page.wait_for_timeout(100)
        waited += 100


def test_a_saved_sweep_is_rerun_from_the_page(service, new_page):
    body = {"name": "grid from a script", "grid": {"zeromode": ["plugin", "none"]},
            "server": {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}, "repeats": 2}
    first = httpx.post(f"{service.url}/api/v1/sweeps", json=body, timeout=30).json()
    httpx.get(f"{service.url}/api/v1/sweeps/{first['id']}", params={"wait": 60}, timeout=70)
    page = new_page()
    page.goto(service.url + "/results")
    row = page.locator(f'#sweeps-body tr[data-sweep="{first["id"]}"]')
    row.wait_for()
    assert "grid from a script" in row.inner_text() and "custom" in row.inner_text()
    assert "4 (\u00d72 per row)" in row.inner_text()
    settled(page, "#sweeps-card")  # a person presses once the page stops moving (the chart above draws first)
    press(page, f'#sweeps-body tr[data-sweep="{first["id"]}"] button')
    page.locator("#sweeps-status").filter(has_text="Queued grid from a script again").wait_for()
    sweeps = httpx.get(f"{service.url}/api/v1/sweeps", timeout=10).json()
    assert sweeps["total"] == 2 and sweeps["sweeps"][0]["definition"] == first["definition"]
    page.locator('#sweeps-body tr').nth(1).wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#sweeps-card").screenshot(path=str(ARTIFACTS / "saved-sweeps.png"))
    assert not page.console.errors, page.console.errors
    again = sweeps["sweeps"][0]["id"]
    done = httpx.get(f"{service.url}/api/v1/sweeps/{again}", params={"wait": 60}, timeout=70).json()
    assert done["status"] == "succeeded"
    # the row follows the event stream to the sweep's end (no timer reads the list)
    page.locator(f'#sweeps-body tr[data-sweep="{again}"]').filter(has_text="succeeded").wait_for(timeout=10_000)
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/api/v1/sweeps?" in r.url else None)
    page.wait_for_timeout(6000)  # a quiet service: nothing changes, so nothing is read
    assert reads == [], reads
