"""The dashboard in a real browser (Debian's Chromium) against a real `lab serve`.

Small fast runs only (8 MiB, 1 ms delays), except one talk act at the talk's geometry.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from functools import partial
from pathlib import Path

import labservice
import pytest
from labservice import SMALL, LabService

pytestmark = pytest.mark.browser

PAGES = ("/", "/results", "/talk")
# No kiosk view here: the top bar, and the connection state in it, is on screen on every page.
open_live = partial(labservice.open_live, on_screen=True)
wait_live = partial(labservice.wait_live, on_screen=True)


def test_pages_load_without_console_errors(service: LabService, new_page) -> None:
    page = new_page()
    for path in PAGES:
        open_live(page, service.url + path)
        assert page.title().startswith("fastzero-lab")
    assert page.console.errors == []


def test_pages_fit_a_phone(service: LabService, new_page) -> None:
    page = new_page(390, 844)
    run = service.post("/api/runs", {"client": "qemu-4.2", "server": {"zeromode": "emulate"}}).json()  # ~8 s
    for path in PAGES:
        open_live(page, service.url + path)
        if path == "/":
            page.wait_for_selector('#live-list .run-card[data-status="running"]')
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a 390px phone"
    service.post(f"/api/runs/{run['id']}/cancel")
    assert page.console.errors == []


def test_flags_are_probed_before_running(service: LabService, new_page) -> None:
    page = new_page()
    open_live(page, service.url + "/")
    page.click('[data-preset="A"]')
    page.wait_for_selector("#flags .flag-yes:text('can_zero')")
    page.wait_for_selector("#flags .flag-yes:text('can_fast_zero')")
    page.select_option("#f-zeromode", "none")
    page.wait_for_selector("#flags .flag-no:text('can_zero')")
    # each probe's server is deleted again right after
    deadline = time.monotonic() + 10
    while service.get("/api/servers").json()["servers"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.get("/api/servers").json()["servers"] == []


def test_run_from_the_form_shows_live_progress_then_a_history_row(service: LabService, new_page) -> None:
    page = new_page()
    open_live(page, service.url + "/")
    # Record what the live card shows over time (statuses and bar values), whatever the frame rate.
    page.evaluate("""() => {
      window.seenCards = [];
      new MutationObserver(() => {
        for (const card of document.querySelectorAll('#live-list .run-card')) {
          const bar = card.querySelector('[role=progressbar]');
          window.seenCards.push({status: card.dataset.status, label: card.querySelector('.status').textContent,
                                 value: bar ? Number(bar.getAttribute('aria-valuenow')) : null});
        }
      }).observe(document.getElementById('live-list'), {subtree: true, childList: true, attributes: true});
    }""")
    page.select_option("#f-client", "qemu-4.2")
    page.click('[data-preset="A"]')
    for name, value in SMALL.items():
        page.fill(f"#f-{name}", value)
    page.click("#run-btn")
    row = page.wait_for_selector('#history-body tr[data-status="succeeded"]')
    text = row.text_content()  # (a row far below the fold is not laid out: content-visibility, so no innerText)
    assert "qemu-4.2" in text and "plugin / default" in text and "✓" in text
    seen = page.evaluate("window.seenCards")
    statuses = [s["status"] for s in seen]
    assert any(s in ("queued", "running") for s in statuses), statuses  # shown while it went
    assert statuses[-1] == "succeeded"
    assert page.evaluate("window.lab.store.seen.progress") >= 1
    card = page.locator("#live-list .run-card").first
    assert card.get_attribute("data-status") == "succeeded"
    assert "verified" in card.inner_text()
    # the row agrees with the API
    run = service.get("/api/runs").json()["runs"][0]
    assert str(run["backend"]["write_ops"]) in text
    assert page.console.errors == []


def test_cancel_from_the_live_card(service: LabService, new_page) -> None:
    page = new_page()
    open_live(page, service.url + "/")
    run = service.post("/api/runs", {"client": "qemu-img", "server": {"zeromode": "emulate"}}).json()  # ~8 s
    page.click(f'#live-list .run-card[data-run-id="{run["id"]}"] [data-cancel]')
    page.wait_for_selector(f'#history-body tr[data-run-id="{run["id"]}"][data-status="cancelled"]')
    assert service.get(f"/api/runs/{run['id']}").json()["status"] == "cancelled"
    assert page.console.errors == []


def test_bad_field_is_named_and_marked(service: LabService, new_page) -> None:
    page = new_page()
    open_live(page, service.url + "/")
    page.fill("#f-size", "lots")
    page.click("#run-btn")
    page.wait_for_selector("#err-size:not([hidden])")
    assert "lots" in page.inner_text("#err-size")
    assert page.get_attribute("#f-size", "aria-invalid") == "true"
    assert service.get("/api/runs").json()["total"] == 0


def test_chart_fills_live_and_exports(service: LabService, new_page, tmp_path: Path) -> None:
    page = new_page()
    open_live(page, service.url + "/results")
    page.wait_for_selector('#chart svg g.bar[data-row="ref-plugin-default"]')
    # A sweep started elsewhere (a script on the API) fills the open chart.
    r = service.post("/api/scenarios/case-study/runs",
                     {"only": ["ref-plugin-default", "ref-emulate-default"], "server": SMALL})
    assert r.status_code == 202, r.text
    page.wait_for_selector('#chart svg g.bar[data-row="ref-plugin-default"][data-state="done"]')
    page.wait_for_selector('#chart svg g.bar[data-row="ref-emulate-default"][data-state="done"]')
    assert "2 of 19 rows measured" in page.inner_text("#sweep-status")
    assert page.locator('#rows-body tr[data-row="ref-plugin-default"]').inner_text().count("✓") == 1
    # 2019's figure is a marker on a row not measured yet, and none beside a run at another size
    markers = page.evaluate("""(rows) => rows.map((r) => [...document.querySelectorAll(
        `#chart svg g.bar[data-row="${r}"] title`)].filter((t) => t.textContent.includes('2019 reference')).length)""",
                            ["ref-emulate-none", "ref-plugin-default"])
    assert markers == [1, 0], markers

    with page.expect_download() as dl:
        page.click("#export-svg")
    svg = Path(dl.value.path()).read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and 'data-row="ref-emulate-default"' in svg
    with page.expect_download() as dl:
        page.click("#export-png")
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with page.expect_download() as dl:
        page.click("#dl-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert {r["label"] for r in rows} == {"ref-plugin-default", "ref-emulate-default"}
    assert all(r["status"] == "succeeded" for r in rows)
    with page.expect_download() as dl:
        page.click("#dl-json")
    assert '"rows"' in Path(dl.value.path()).read_text()
    assert page.console.errors == []


def test_one_click_case_study_fills_the_chart_in_two_browsers(service: LabService, new_page) -> None:
    """The presenter's click; a second browser (the audience) sees the same bars fill in."""
    presenter, audience = new_page(), new_page(390, 844)
    for page in (presenter, audience):
        open_live(page, service.url + "/results")
    presenter.select_option("#sweep-geometry", "quick")
    presenter.click("#run-case-study")
    # live: some bar is drawn running or queued before the sweep is over, on both screens
    for page in (presenter, audience):
        page.wait_for_selector('#chart svg g.bar[data-state="running"], #chart svg g.bar[data-state="queued"]')
    for page in (presenter, audience):
        page.wait_for_function("document.querySelector('#sweep-status').textContent.startsWith('19 of 19')",
                               timeout=120_000)
        assert page.locator('#chart svg g.bar[data-state="done"]').count() == 19
    assert "16M" in presenter.inner_text("#chart-sub")
    assert presenter.console.errors == [] and audience.console.errors == []


def test_queue_full_is_said_plainly(service_factory, new_page) -> None:
    service = service_factory(LAB_QUEUE_SIZE="4")
    page = new_page()
    open_live(page, service.url + "/results")
    page.click("#run-case-study")  # 19 rows do not fit in 4 slots: nothing is queued
    page.wait_for_selector('#banner-msg[data-kind="error"]:not([hidden])')
    said = page.inner_text("#banner-msg")  # an idle service: not "full", but never room for 19
    assert "19 runs" in said and "at most 4" in said and "never fit" in said, said
    assert service.get("/api/runs").json()["total"] == 0


def test_failed_run_is_red_with_its_error(service_factory, new_page) -> None:
    service = service_factory(LAB_RUN_TIMEOUT_S="1")
    page = new_page()
    open_live(page, service.url + "/")
    run = service.post("/api/runs", {"client": "qemu-img", "server": {"zeromode": "emulate"}}).json()
    row = page.wait_for_selector(f'#history-body tr.is-failed[data-run-id="{run["id"]}"]', timeout=60_000)
    assert "timed out" in row.text_content()
    card = page.locator(f'#live-list .run-card[data-run-id="{run["id"]}"]')
    assert "is-failed" in card.get_attribute("class") and "timed out" in card.inner_text()
    assert page.is_visible('#banner-msg[data-kind="error"]')
    # the error text is painted red
    red, green, _ = (int(v) for v in re.findall(r"\d+", row.evaluate(
        "r => getComputedStyle(r.querySelector('.err')).color"))[:3])
    assert red > 150 and green < 130


def test_audience_sees_no_run_controls_and_presenter_signs_in(service_factory, new_page) -> None:
    service = service_factory(token="s3cret-token")
    page = new_page()
    for path, control in (("/results", "#run-case-study"), ("/talk", "#act-run"), ("/", "#run-form")):
        open_live(page, service.url + path)
        assert page.is_hidden(control), f"{control} is shown to the audience on {path}"
    assert "Watching" in page.inner_text("#role")
    assert "s3cret-token" not in page.content()

    page.click("#role")
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#token-error:not([hidden])")
    assert page.is_hidden("#run-form")
    page.fill("#token-input", "s3cret-token")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#run-form", state="visible")
    assert "Presenter" in page.inner_text("#role")

    for name, value in SMALL.items():
        page.fill(f"#f-{name}", value)
    page.click("#run-btn")  # sends the bearer token
    page.wait_for_selector('#history-body tr[data-status="succeeded"]')

    # another tab of the audience still watches, read-only
    other = new_page()
    open_live(other, service.url + "/")
    assert other.is_hidden("#run-form")
    other.wait_for_selector('#history-body tr[data-status="succeeded"]')


def test_audience_talk_follows_the_act_being_run(service_factory, new_page) -> None:
    service = service_factory(token="s3cret-token")
    page = new_page(390, 844)
    open_live(page, service.url + "/talk")
    page.wait_for_selector("#act-count:text('Act 1 ·')")
    assert page.is_hidden("#act-run")
    # the presenter (here: a script with the token) runs act 3's two rows, quick geometry
    for key, zeromode in (("act3-A", "plugin"), ("act3-B", "emulate")):
        r = service.post("/api/runs", {"client": "qemu-3.1", "label": key,
                                       "server": {"zeromode": zeromode, "fastzeromode": "none", **SMALL}})
        assert r.status_code == 202, r.text
    page.wait_for_function("document.querySelector('#act-count').textContent.startsWith('Act 3 ·')")
    page.wait_for_selector('#outcome[data-state="done"]')
    assert page.locator('#lanes .lane[data-state="done"]').count() == 2
    assert page.console.errors == []


def test_page_shows_a_dead_service_and_recovers_after_restart(service: LabService, new_page) -> None:
    run = service.post("/api/runs", {"client": "qemu-img", "server": SMALL}).json()
    service.wait_run(run["id"])
    page = new_page()
    open_live(page, service.url + "/")
    page.wait_for_selector(f'#history-body tr[data-run-id="{run["id"]}"]')

    service.stop()
    page.wait_for_selector("#banner-conn", state="visible")
    assert page.get_attribute("#conn", "data-state") == "reconnecting"
    assert page.locator("#history-body tr").count() == 1  # what was there stays

    service.start()
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector("#banner-conn", state="hidden")
    assert page.locator(f'#history-body tr[data-run-id="{run["id"]}"]').count() == 1
    # the stream is live again: a run started now appears without a reload
    again = service.post("/api/runs", {"client": "nbdcopy", "server": SMALL}).json()
    page.wait_for_selector(f'#history-body tr[data-run-id="{again["id"]}"][data-status="succeeded"]')
    assert page.locator("#history-body tr").count() == 2


def test_talk_keys(service: LabService, new_page) -> None:
    page = new_page()
    open_live(page, service.url + "/talk")
    page.wait_for_selector("#act-count:text('Act 1 ·')")
    page.keyboard.press("ArrowRight")
    assert page.text_content("#act-count").startswith("Act 2 ·")
    assert page.locator("#lanes .lane").count() == 2
    page.keyboard.press("ArrowLeft")
    assert page.text_content("#act-count").startswith("Act 1 ·")
    page.keyboard.press("End")
    assert page.text_content("#act-count") == "Summary"
    page.wait_for_selector("#talk-chart .summary")
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert page.is_hidden("#help")
    assert page.console.errors == []


def test_screenshots(service: LabService, new_page) -> None:
    """Screenshots at a projector's and a phone's size (test-artifacts/, or LAB_SCREENSHOT_DIR)."""
    out = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    run = service.post("/api/runs", {"client": "qemu-4.2", "server": {"zeromode": "plugin", **SMALL}}).json()
    service.wait_run(run["id"])
    for width, height in ((1280, 720), (390, 844)):
        page = new_page(width, height)
        for path, name in (("/", "lab"), ("/results", "case-study"), ("/talk", "talk")):
            open_live(page, service.url + path)
            page.wait_for_timeout(300)  # let the first frame settle
            target = out / f"{name}-{width}x{height}.png"
            page.screenshot(path=str(target))
            assert target.stat().st_size > 10_000
        assert page.console.errors == []
