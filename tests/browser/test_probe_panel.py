"""The fast-zero probe panel and the kind/storage fields of the form, in Debian's Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labservice import LabService, press

from lab.host import storage

pytestmark = pytest.mark.browser


def test_probe_a_qemu_nbd_server_from_the_form(service: LabService, new_page) -> None:
    page = new_page()
    page.goto(service.url + "/")
    page.wait_for_selector('#conn[data-state="live"]')
    press(page, '[data-preset="A"]')  # zeromode=plugin: zeroing passed through to the server as it is
    page.select_option("#f-kind", "qemu-nbd")
    if storage.availability()["tmpfs"]["available"]:
        page.select_option("#f-storage", "tmpfs")
    # the advertised flags follow the kind: qemu-nbd passes fast zero through the proxy
    page.wait_for_selector("#flags .flag-yes:text('can_fast_zero')")
    press(page, "#probe-btn")
    page.wait_for_selector("#probe-verdict b", timeout=120_000)
    verdict = page.inner_text("#probe-verdict b")
    assert verdict in ("fast", "advertised-but-slow")  # advertised and accepted: which one is a timing
    rows = page.locator("#probe-rows tr")
    assert rows.count() == 9  # 4 fresh, 4 written, one big zero
    assert "✗" not in page.inner_text("#probe-rows")  # every zeroed range read back as zeroes
    out = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    page.locator(".probe-panel").screenshot(path=str(out / "probe-panel.png"))
    assert page.console.errors == []


def test_unavailable_storage_is_disabled_with_its_reason(service: LabService, new_page) -> None:
    page = new_page()
    page.goto(service.url + "/")
    page.wait_for_selector('#conn[data-state="live"]')
    for name, a in storage.availability().items():
        opt = page.locator(f'#f-storage option[value="{name}"]')
        assert opt.is_disabled() == (not a["available"])
        if not a["available"]:
            assert opt.get_attribute("title") == a["reason"]
    ext = page.locator('#f-kind option[value="external"]')
    assert ext.is_disabled() and "LAB_EXTERNAL_TARGETS" in ext.get_attribute("title")
