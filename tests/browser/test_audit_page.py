"""The zero audit page (/audits) in Debian's Chromium: a person starts an audit of nbd-server on tmpfs,
watches it run, reads `unsafe` with the stale cells and the reproducer, at 1024x576, 1280x640 and 390x844."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labservice import LabService, press

from lab.host import storage

pytestmark = pytest.mark.browser
OUT = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))


def test_a_person_audits_nbd_server_and_reads_unsafe(service: LabService, new_page) -> None:
    if not storage.availability()["tmpfs"]["available"]:
        pytest.skip("tmpfs unavailable here")
    page = new_page(1024, 576)
    page.goto(service.url + "/audits")
    page.wait_for_selector('#a-storage option[value="tmpfs"]:not([disabled])', state="attached")
    assert page.locator("#a-plugin").is_visible()  # nbdkit is the default kind: its plugin is asked
    page.select_option("#a-kind", "nbd-server")
    assert not page.locator("#a-plugin").is_visible() and page.locator("#a-storage").is_visible()
    page.select_option("#a-storage", "tmpfs")
    page.select_option("#a-sizes", "edges")
    page.locator("#a-inflight").fill("")
    page.locator("#a-inflight").type("1", delay=60)  # a person types it
    press(page, "#audit-start")
    page.wait_for_selector("#audit-rows tr")
    page.wait_for_selector("#audit-verdict.bad", timeout=300_000)
    assert page.inner_text("#audit-verdict") == "unsafe"
    assert "64M into the request" in page.inner_text("#audit-why")
    assert "STALE" in page.inner_text("#audit-matrix")
    assert "nbdsh" in page.inner_text("#audit-repro pre")
    OUT.mkdir(parents=True, exist_ok=True)
    for w, h in ((1024, 576), (1280, 640), (390, 844)):
        page.set_viewport_size({"width": w, "height": h})
        page.locator("#audit-verdict").scroll_into_view_if_needed()
        verdict = page.locator("#audit-verdict").bounding_box()
        assert verdict is not None and verdict["x"] >= 0 and verdict["x"] + verdict["width"] <= w
        page.screenshot(path=str(OUT / f"audit-{w}x{h}.png"))
    # compare: tick the finished audit, the link opens the side-by-side page
    press(page, "#audit-rows input[type=checkbox]")
    href = page.get_attribute("#audit-compare", "href")
    assert href.startswith("/api/v1/audits/report.html?ids=")
    report = page.context.new_page()
    report.goto(service.url + href)
    assert "STALE +64M" in report.content()
    report.screenshot(path=str(OUT / "audit-report.png"), full_page=False)
    assert page.console.errors == []


def test_a_runs_page_shows_its_latency_per_request(service: LabService, new_page) -> None:
    run = service.post("/api/runs", {"client": "qemu-img", "server": {
        "size": "8M", "delay_write": "2ms", "delay_zero": "1ms", "zeromode": "plugin"}}).json()
    done = service.wait_run(run["id"])
    assert done["status"] == "succeeded" and done["request_stats"]["latency"]["Zero"]["n"] == 4
    page = new_page(1024, 576)
    page.goto(service.url + f"/runs/{run['id']}")
    page.wait_for_selector("#run-latency table")
    text = page.inner_text("#run-latency").lower()  # the table's headings are set in capitals
    assert "write" in text and "zero" in text and "p99" in text and "zero request sizes: ≤1m: 4" in text
    page.locator("#run-latency").scroll_into_view_if_needed()
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "run-latency-1024x576.png"))
    assert page.console.errors == []
