"""A newcomer at / on a 1440x900 laptop: two sentences say what this is, Run is on screen without
scrolling, pressing it (a held pointer press) brings the new run's live card into view, and the
form's "Server advertises" line is not red for a server that merely does not advertise a flag."""

from __future__ import annotations

import re

import pytest
from labservice import LabService, open_live, press

pytestmark = pytest.mark.browser


def test_a_newcomer_reads_what_this_is_presses_run_and_sees_the_run(service: LabService, new_page) -> None:
    page = new_page(1440, 900)
    open_live(page, service.url + "/")
    intro = page.inner_text("#intro p")
    assert len(re.findall(r"[.!?](\s|$)", intro)) == 2, intro
    page.wait_for_selector("#flags .flag-no")  # the default server (no write-zeroes) lacks can_zero
    bad = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bad').trim()")
    colours = page.eval_on_selector_all("#flags .flag", "ns => ns.map(n => getComputedStyle(n).color)")
    red = page.evaluate("c => { const d = document.createElement('div'); d.style.color = c; document.body.append(d);"
                        " const v = getComputedStyle(d).color; d.remove(); return v; }", bad)
    assert red not in colours, colours
    run = page.locator("#run-btn").bounding_box()
    assert run["y"] >= 0 and run["y"] + run["height"] <= 900, run
    assert page.evaluate("scrollY") == 0
    press(page, "#run-btn")
    page.wait_for_selector("#live-list .run-card")
    run_id = page.get_attribute("#live-list .run-card", "data-run-id")
    page.wait_for_timeout(800)  # the card scrolls in smoothly when it must
    box = page.locator(f'#live-list .run-card[data-run-id="{run_id}"]').bounding_box()
    assert box["y"] >= -1 and box["y"] + box["height"] <= 901, box
    service.post(f"/api/runs/{run_id}/cancel")
    assert page.console.errors == []


PHONE_PAGES = ("/", "/results", "/talk", "/talk?follow", "/class", "/audits", "/runs/none")


def test_the_top_bar_fits_a_phone_on_every_page(service: LabService, new_page) -> None:
    """390x844: the top bar wraps onto lines and never overflows; the theme and help buttons and the
    connection pill are on screen on every page."""
    page = new_page(390, 844)
    for path in PHONE_PAGES:
        page.goto(service.url + path)
        page.wait_for_selector("#conn", state="attached")
        page.wait_for_timeout(300)
        bar = page.eval_on_selector(".topbar", "t => [t.scrollWidth, t.clientWidth]")
        assert bar[0] <= bar[1], (path, bar)
        for sel in ("#theme-toggle", "#help-open", "#conn", ".brand"):
            box = page.locator(sel).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (path, sel, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    page.click("#help-open")
    assert page.is_visible("#help")
