"""A queued run's card says where it stands: its place in line and about when it starts, kept
current as the queue moves (read again after the events that move it, not polled)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labservice import LabService, open_live, press

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
HOLD = {"size": "8M", "delay_write": "400ms", "delay_zero": "1ms"}  # about 7 s: the one worker stays busy


@pytest.mark.parametrize("size", [(1024, 576), (390, 844)], ids=["1024x576", "390x844"])
def test_a_queued_card_shows_its_place_and_when_it_may_start(service_factory, new_page, size) -> None:
    service: LabService = service_factory(LAB_WORKERS="1")
    page = new_page(*size)
    open_live(page, service.url + "/")
    first = service.post("/api/v1/runs", {"client": "qemu-4.2", "server": HOLD}).json()
    second = service.post("/api/v1/runs", {"client": "qemu-4.2", "server": HOLD}).json()
    press(page, "#run-btn")  # a person's run queues behind both
    page.wait_for_function("[...window.lab.store.runs.values()].length >= 3")
    mine = page.evaluate("ids => [...window.lab.store.runs.values()].find(r => !ids.includes(r.id)).id",
                         [first["id"], second["id"]])
    state = f'#live-list .run-card[data-run-id="{mine}"] dd[data-stat="state"]'
    page.wait_for_function(f"(document.querySelector('{state}') || {{}}).textContent?.startsWith('#2 in line')")
    text = page.inner_text(state)
    assert "about" in text and ("s" in text or "min" in text), text
    page.locator(state).scroll_into_view_if_needed()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"lab-queued-{size[0]}x{size[1]}.png"))
    # the first run ends (cancelled): the queue moves and the card says so without a reload
    service.post(f"/api/v1/runs/{first['id']}/cancel")
    page.wait_for_function(f"document.querySelector('{state}')?.textContent?.startsWith('next in line')")
    service.post(f"/api/v1/runs/{second['id']}/cancel")
    service.post(f"/api/v1/runs/{mine}/cancel")
    assert page.console.errors == []
