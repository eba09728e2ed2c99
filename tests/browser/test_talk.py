"""The talk on stage (/talk), used as a presenter and an audience use it: keys and held pointer
presses, a projector at 1024x576, 1280x640, 1280x720 and 1920x1080 (kiosk or not), a phone at
390x844 following the presenter. Every act: the outcome whole on screen and uncovered, the
2019 time marked, the text big enough for the back of the room, nothing moving at the payoff;
a cancel that says cancelled; keys that start many runs ask first; a lost connection stops the
clocks. Screenshots of every act at 1024x576 go to test-artifacts/ (make_screenshots.py puts
them in docs/screenshots/).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labservice import SMALL, LabService, open_live, press

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
NONE = "\u2013"  # the en dash a lane shows for "no time"
ACTS = ["baseline", "write-zeroes", "block-status", "pre-zero", "no-fallback", "fast-zero"]
WITH_2019 = {"baseline", "write-zeroes", "pre-zero", "fast-zero"}  # the talk ran these on stage

# The stage, measured in the page: the outcome's box (inside the viewport, and what is under each
# of its corners, inset by its rounded border, is the outcome or inside it), its words inside it,
# the controls on screen, nothing to scroll, the smallest visible text, the lanes' times.
STAGE = """() => {
  const vw = innerWidth, vh = innerHeight, out = {};
  const o = document.querySelector('#outcome');
  const r = o.getBoundingClientRect();
  out.outcomeShown = r.width > 0 && r.height > 0;
  if (out.outcomeShown) {
    const k = parseFloat(getComputedStyle(o).borderTopLeftRadius) + 1;
    out.outcomeInside = r.top >= 0 && r.left >= 0 && r.bottom <= vh && r.right <= vw;
    const hit = ([x, y]) => { const h = document.elementFromPoint(x, y); return !!h && o.contains(h); };
    out.outcomeUncovered = [[r.left + k, r.top + k], [r.right - k, r.top + k], [r.left + k, r.bottom - k],
      [r.right - k, r.bottom - k]].every(hit);
    out.outcomeWhole = o.scrollHeight <= o.clientHeight + 1;
    out.outcomeBox = [r.top, r.bottom];
  }
  const race = document.querySelector('#race');
  out.raceWhole = !race.offsetHeight || race.scrollHeight <= race.clientHeight + 1;
  out.navBottom = document.querySelector('.talk-nav').getBoundingClientRect().bottom;
  out.scroll = [document.documentElement.scrollWidth - vw, document.documentElement.scrollHeight - vh];
  let min = 1e9, where = '';
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const t = walk.currentNode, el = t.parentElement;
    if (!t.textContent.trim() || !el || el.closest('dialog:not([open])')) continue;
    const b = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (!b.width || !b.height || b.bottom < 0 || b.top > vh || cs.visibility === 'hidden') continue;
    const fs = parseFloat(cs.fontSize);
    if (fs < min) { min = fs; where = `${el.className}: ${t.textContent.trim().slice(0, 40)}`; }
  }
  out.minFont = min; out.minWhere = where;
  out.times = [...document.querySelectorAll('.lane-secs')].map((e) => parseFloat(getComputedStyle(e).fontSize));
  out.refMarks = document.querySelectorAll('.lane .mark-ref:not([hidden])').length;
  out.lanes = document.querySelectorAll('#lanes .lane').length;
  return out;
}"""


@pytest.fixture(scope="module")
def acted(tmp_path_factory) -> Iterator[LabService]:
    """A service where every act has run once at the talk's geometry (about a minute of runs)."""
    svc = LabService(tmp_path_factory.mktemp("acted") / "data").start()
    try:
        r = svc.post("/api/v1/scenarios/acts/runs", {})
        assert r.status_code == 202, r.text
        for run in r.json()["runs"]:
            assert svc.wait_run(run["id"], timeout=300)["status"] == "succeeded", run
        yield svc
    finally:
        svc.stop()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def watch_shifts(page) -> None:
    """Record every layout shift the browser counts (CLS) from the page's start in `window.shifts`; a shift
    right after a person's input (hadRecentInput) is the input's, not the page's."""
    page.add_init_script("""window.shifts = [];
      new PerformanceObserver((l) => { for (const e of l.getEntries()) if (!e.hadRecentInput) window.shifts.push(
        {t: e.startTime, v: e.value, who: e.sources.map((s) => (s.node && (s.node.id || s.node.className)) || '?')
          .join(',')}); })
        .observe({type: 'layout-shift', buffered: true});""")


def fail_first_reads_of_the_acts(page, reads: int = 2) -> dict[str, int]:
    """The network drops the page's first `reads` of the acts (the request helper itself tries twice);
    returns the count of drops left."""
    failures = {"left": reads}

    def flaky(route) -> None:
        if failures["left"]:
            failures["left"] -= 1
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/api/v1/scenarios/acts", flaky)
    return failures


def show(page, key: str) -> None:
    page.evaluate(f"location.hash = '#{key}'")
    page.wait_for_function(f"document.querySelector('.act-dots [aria-current]') && "
                           f"location.hash === '#{key}'")
    page.wait_for_timeout(200)


SIZES = [(w, h, kiosk) for w, h in ((1024, 576), (1280, 640), (1280, 720), (1920, 1080)) for kiosk in (True, False)]


@pytest.mark.parametrize("width,height,kiosk", SIZES, ids=[f"{w}x{h}{'-kiosk' if k else ''}" for w, h, k in SIZES])
def test_every_act_fits_the_stage_with_its_outcome_whole_and_uncovered(acted: LabService, new_page, width, height,
                                                                       kiosk) -> None:
    page = new_page(width, height)
    open_live(page, acted.url + f"/talk{'?kiosk' if kiosk else ''}#baseline")
    for key in ACTS:
        show(page, key)
        page.wait_for_selector('#outcome[data-state="done"]')
        s = page.evaluate(STAGE)
        where = f"{key} at {width}x{height}{' kiosk' if kiosk else ''}"
        assert s["outcomeShown"] and s["outcomeInside"] and s["outcomeUncovered"], (where, s)
        assert s["outcomeWhole"], f"{where}: the outcome's words overflow its box"
        assert s["raceWhole"], f"{where}: the lanes overflow their column"
        assert s["navBottom"] <= height + 0.5 and s["scroll"] == [0, 0], (where, s)
        # the 2019 time is marked on every lane of an act the talk ran, after it ran here
        assert s["refMarks"] == (s["lanes"] if key in WITH_2019 else 0), (where, s)
        if kiosk and width == 1280:
            assert s["minFont"] >= 20, f"{where}: {s['minFont']} px ({s['minWhere']})"
            assert s["times"] and min(s["times"]) >= 48, (where, s["times"])
        if (width, height) == (1024, 576) and kiosk:
            shot(page, f"talk-act-{key}-1024x576.png")
    show(page, "summary")
    s = page.evaluate(STAGE)
    assert s["scroll"] == [0, 0] and s["navBottom"] <= height + 0.5, s
    if kiosk and width == 1280:
        assert s["minFont"] >= 20, s
    if (width, height) == (1024, 576) and kiosk:
        shot(page, "talk-summary-1024x576.png")
    assert page.console.errors == []


def test_the_block_status_maps_show_data_and_zero_in_a_cell_that_holds_both(acted: LabService, new_page) -> None:
    """At 64 and 128 MiB a cell covers a 64 KiB data extent and a 64 KiB hole: it shows both, and each
    lane says how many BLOCK_STATUS questions it asked and how long they took (its big number)."""
    page = new_page(1280, 640)
    open_live(page, acted.url + "/talk?kiosk#block-status")
    page.wait_for_selector('#outcome[data-state="done"]')
    for size, cells_per_extent in (("32M", 1), ("64M", 0), ("128M", 0)):
        for g in "AB":
            canvas = page.locator(f'.lane[data-row="act-bs-{g}-{size}"] canvas')
            cells, under = canvas.get_attribute("data-cells"), canvas.get_attribute("data-under")
            if cells_per_extent:  # one cell per extent: data and zero cells alternate
                assert set(cells) == {"D", "Z"} and under is None, (size, g)
            else:
                assert set(cells) == {"D"} and set(under) == {"Z"}, (size, g, cells[:20], (under or "")[:20])
            state = page.inner_text(f'.lane[data-row="act-bs-{g}-{size}"] .lane-state')
            asked = {"32M": 256, "64M": 512, "128M": 1024}[size]
            assert f"{asked} asked" in state, state
    run = acted.get("/api/v1/results.json?label=act-bs-A-128M").json()["rows"][0]
    secs = page.inner_text('.lane[data-row="act-bs-A-128M"] .lane-secs')
    assert secs == f"{run['wire']['block_status_s']:.2f}", (secs, run["wire"])
    assert "Asking grew" in page.inner_text("#outcome .verdict")


def test_act5_shows_b_beside_its_act3_result_and_its_refused_fast_zero_stays(acted: LabService, new_page) -> None:
    page = new_page(1024, 576)
    open_live(page, acted.url + "/talk?kiosk#fast-zero")
    page.wait_for_selector('#outcome[data-state="done"]')
    act3 = acted.get("/api/v1/results.json?label=act3-B").json()["rows"][0]["duration_s"]
    lane = '.lane[data-row="act5-B"]'
    assert page.is_visible(f"{lane} .mark-beside")
    assert f"act 3: {act3:.2f} s" in page.inner_text(f"{lane} .lane-marks")
    assert f"B took {act3:.2f} s in act 3" in page.inner_text("#outcome .verdict")
    # the refused fast zero: a counter on the lane, a mark kept on the finished map
    assert page.inner_text(f"{lane} .refused-count") == "1 refused"
    assert "R" in page.get_attribute(f"{lane} canvas", "data-marks")
    assert page.get_attribute('.lane[data-row="act5-A"] canvas', "data-marks") is None
    # A and B named in words on every lane
    assert page.text_content('.lane[data-row="act5-A"] .lane-name') == "A: zeroing is metadata"
    assert page.text_content(f"{lane} .lane-name") == "B: zeroing falls back to writes"


def test_reset_clears_the_act_for_this_tab_and_holds_across_a_reload(acted: LabService, new_page) -> None:
    page = new_page(1280, 640)
    open_live(page, acted.url + "/talk?kiosk#write-zeroes")
    page.wait_for_selector('#outcome[data-state="done"]')
    page.keyboard.press("r")
    page.wait_for_selector('#outcome[data-state="idle"]')
    assert page.eval_on_selector_all("#lanes .lane", "ns => ns.map(n => n.dataset.state)") == ["ready", "ready"]
    assert page.inner_text(".lane-secs >> nth=0") == NONE
    page.reload()
    open_live(page, page.url)
    page.wait_for_selector('#outcome[data-state="idle"]')
    assert page.is_visible(".lane .mark-ref"), "the 2019 time stays marked: the race has its target"


def test_a_phone_follows_the_presenter_read_only_with_the_outcome_in_the_first_screen(acted: LabService,
                                                                                      new_page) -> None:
    phone = new_page(390, 844)
    open_live(phone, acted.url + "/talk?follow")
    presenter = new_page(1280, 640)
    open_live(presenter, acted.url + "/talk?kiosk#baseline")
    assert phone.is_hidden("#act-run") and phone.is_hidden("#act-reset") and phone.is_visible("#follow-pill")
    for key in ACTS:
        if key != "baseline":
            presenter.keyboard.press("ArrowRight")
        phone.wait_for_function(f"location.hash === '#{key}'", timeout=10_000)
        phone.wait_for_selector('#outcome[data-state="done"]')
        s = phone.evaluate(STAGE)
        assert s["outcomeShown"] and s["outcomeInside"] and s["outcomeUncovered"] and s["outcomeWhole"], (key, s)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390, key
        shot(phone, f"talk-follow-{key}-390x844.png")
    # read-only: Enter starts nothing, whatever the tab holds
    total = acted.get("/api/v1/runs").json()["total"]
    phone.keyboard.press("Enter")
    phone.wait_for_timeout(500)
    assert acted.get("/api/v1/runs").json()["total"] == total
    assert phone.console.errors == [] and presenter.console.errors == []


def test_the_talk_loads_on_a_phone_with_nothing_moving_under_a_finger(acted: LabService, new_page) -> None:
    """Until the acts are read only the heading shows (here the first reads fail, so that state lasts the
    2 s before the page tries again); from then on the page stays where it was first drawn: the layout
    shift of the whole load, as the browser counts it, stays under 0.02. It was 0.19: the empty boxes and
    the controls were drawn first in other places, the Run button beside the arrows, then below the act
    numbers, where a finger that had aimed at it met another act's button."""
    page = new_page(390, 844)
    watch_shifts(page)
    fail_first_reads_of_the_acts(page)
    page.goto(acted.url + "/talk")
    page.wait_for_selector("#banner-msg:not([hidden])")
    assert page.is_visible("#act-title") and "Loading" in page.inner_text("#act-title")
    assert page.is_hidden("#act-run") and page.is_hidden("#act-next") and page.is_hidden("#race")
    shot(page, "talk-loading-390x844.png")
    page.wait_for_selector(".act-dots [aria-current]", timeout=30_000)
    page.wait_for_selector('#outcome[data-state="done"]')  # the acted service's last run of act 1, drawn
    page.wait_for_timeout(1000)
    assert page.is_visible("#act-run") and page.is_visible("#race")
    shifts = page.evaluate("window.shifts")
    assert sum(s["v"] for s in shifts) < 0.02, shifts


@pytest.mark.parametrize("kiosk", [True, False], ids=["kiosk", "top-bar"])
def test_the_projector_page_loads_without_a_jump(service: LabService, new_page, kiosk: bool) -> None:
    """At 1024x576 the stage keeps its place from the first paint. ?kiosk is drawn without the top bar
    from the start (the stage jumped up by the bar's height once the script hid it: 0.07-0.09 of layout
    shift at 1024x576 to 1920x1080); with the bar, its height is measured before the first paint (it
    wrapped to two rows at the first root size, the script then shrank the root and the bar took one
    row: 0.082)."""
    page = new_page(1024, 576)
    watch_shifts(page)
    open_live(page, service.url + ("/talk?kiosk#pre-zero" if kiosk else "/talk#pre-zero"))
    page.wait_for_selector("#talk.is-ready")
    page.wait_for_timeout(800)
    assert page.is_hidden(".topbar") == kiosk
    shifts = page.evaluate("window.shifts")
    assert sum(s["v"] for s in shifts) < 0.02, shifts


def test_x_mid_act_says_cancelled_and_never_shows_an_earlier_success(service: LabService, new_page) -> None:
    # an earlier success of both lanes (quick), as the presenter's rehearsal left it
    for key, zeromode in (("act2-A", "plugin"), ("act2-B", "emulate")):
        run = service.post("/api/runs", {"client": "qemu-2.8", "label": key,
                                         "server": {"zeromode": zeromode, "fastzeromode": "none", **SMALL}}).json()
        assert service.wait_run(run["id"])["status"] == "succeeded"
    page = new_page(1024, 576)
    open_live(page, service.url + "/talk?kiosk#write-zeroes")
    page.wait_for_selector('#outcome[data-state="done"]')
    page.keyboard.press("Enter")
    page.wait_for_selector('.lane[data-state="running"]')
    page.wait_for_timeout(3000)
    page.keyboard.press("x")
    # from the press on, no lane and no outcome claims a verified result
    seen = page.evaluate("""async () => {
      const seen = [];
      for (let i = 0; i < 40; i++) {
        seen.push(document.querySelector('#lanes').innerText + ' | ' + document.querySelector('#outcome').innerText);
        await new Promise((r) => setTimeout(r, 50));
      }
      return seen;
    }""")
    assert not [s for s in seen if "verified" in s.lower() or "faster" in s], seen
    page.wait_for_function("[...document.querySelectorAll('#lanes .lane')].every(l => l.dataset.state === 'cancelled')",
                           timeout=20_000)
    page.wait_for_selector('#outcome[data-state="cancelled"]')
    states = page.eval_on_selector_all("#lanes .lane-state", "ns => ns.map(n => n.innerText)")
    assert all(s.upper().startswith("CANCELLED") for s in states), states
    assert page.eval_on_selector_all(".lane-secs", "ns => ns.map(n => n.textContent)") == [NONE, NONE]
    marks = page.inner_text("#lanes")
    assert "last run," in marks and "ago" in marks, "the earlier result is only ever labelled as such"
    for run in service.get("/api/runs?limit=10").json()["runs"][:2]:
        assert run["status"] == "cancelled"
    shot(page, "talk-cancelled-1024x576.png")
    assert page.console.errors == []


def test_keys_that_start_many_runs_ask_first_and_enter_alone_never_confirms(service: LabService, new_page) -> None:
    page = new_page(1280, 640)
    open_live(page, service.url + "/talk?kiosk#summary")
    page.wait_for_selector("#act-count:text('Summary')")
    runs = lambda: service.get("/api/runs").json()["total"]  # noqa: E731
    page.keyboard.press(" ")  # Space is the browser's, never "run"
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Enter")  # the focus is on "Not now"
    page.wait_for_selector("#confirm-dialog", state="hidden")
    page.keyboard.press("c")
    page.wait_for_selector("#confirm-dialog[open]")
    assert "case study" in page.inner_text("#confirm-text")
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    assert runs() == 0, "Enter alone queued runs"
    page.keyboard.press("ArrowLeft")  # an act: Space still starts nothing
    page.keyboard.press(" ")
    page.wait_for_timeout(300)
    assert runs() == 0
    page.keyboard.press("End")
    press(page, "#act-run")  # the button too asks first; the pointer confirms
    page.wait_for_selector("#confirm-dialog[open]")
    press(page, "#confirm-yes")
    page.wait_for_function("document.querySelector('#banner-msg .banner-text').textContent.includes('queued')")
    sweeps = service.get("/api/v1/sweeps").json()["sweeps"]
    assert [s["name"] for s in sweeps] == ["acts"]
    service.post(f"/api/v1/sweeps/{sweeps[0]['id']}/cancel")
    assert page.console.errors == []


def test_a_lost_connection_stops_the_clocks_and_a_restart_says_interrupted(service: LabService, new_page) -> None:
    page = new_page(1280, 640)
    open_live(page, service.url + "/talk?kiosk#write-zeroes")
    page.keyboard.press("Enter")
    page.wait_for_function("[...document.querySelectorAll('.lane-secs')].every(n => parseFloat(n.textContent) >= 1)",
                           timeout=30_000)
    service.stop()  # the service interrupts its runs and goes away
    page.wait_for_selector('#conn[data-state="reconnecting"]', state="attached")
    page.wait_for_timeout(2500)  # past the clock's allowance after the last event
    before = page.eval_on_selector_all(".lane-secs", "ns => ns.map(n => n.textContent)")
    page.wait_for_timeout(1500)
    assert page.eval_on_selector_all(".lane-secs", "ns => ns.map(n => n.textContent)") == before, "the clocks ran on"
    assert "no news" in page.inner_text("#lanes").lower()
    service.start()
    page.wait_for_function(
        "[...document.querySelectorAll('#lanes .lane')].every(l => l.dataset.state === 'interrupted')", timeout=30_000)
    assert page.get_attribute("#outcome", "data-state") == "failed"
    assert "interrupted" in page.inner_text("#outcome")


def test_a_failed_act_shows_its_error_not_why_and_keeps_the_counts(service_factory, new_page) -> None:
    service = service_factory(LAB_RUN_TIMEOUT_S="3")
    # a good result first (small), then the act at the talk's geometry times out
    for key, zeromode in (("act2-A", "plugin"), ("act2-B", "emulate")):
        good = service.post("/api/runs", {"client": "qemu-2.8", "label": key,
                                          "server": {"zeromode": zeromode, "fastzeromode": "none", **SMALL}}).json()
        service.wait_run(good["id"])
    page = new_page(1280, 640)
    open_live(page, service.url + "/talk?kiosk#write-zeroes")
    page.wait_for_selector('#outcome[data-state="done"] .why')
    run_box = page.locator("#act-run").bounding_box()
    page.keyboard.press("Enter")
    page.wait_for_selector('#outcome[data-state="failed"]', timeout=30_000)
    outcome = page.inner_text("#outcome")
    assert "timed out" in outcome and "Why" not in outcome
    assert "last run," in outcome and "ago" in outcome
    state = page.inner_text('.lane[data-row="act2-B"] .lane-state')
    assert "timed out" in state and "write" in state, "a failed lane keeps its counts"
    page.wait_for_selector("#banner-msg:not([hidden])", timeout=10_000)  # the banner floats: nothing moved
    assert page.locator("#act-run").bounding_box()["y"] == run_box["y"]
    shot(page, "talk-failed-1280x640.png")


@pytest.mark.slow
def test_no_act_jumps_at_its_payoff(service: LabService, new_page) -> None:
    """Every act run at the talk's geometry in kiosk at 1280x640, keys only: the layout shift from
    the press of Enter to the outcome (CLS, as the browser counts it) stays under 0.02."""
    page = new_page(1280, 640)
    watch_shifts(page)
    open_live(page, service.url + "/talk?kiosk#baseline")
    for i, key in enumerate(ACTS):
        if i:
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"location.hash === '#{key}'")
        page.wait_for_timeout(600)
        t0 = page.evaluate("performance.now()")
        page.keyboard.press("Enter")
        page.wait_for_selector('#outcome[data-state="done"]', timeout=120_000)
        page.wait_for_timeout(600)
        shifts = page.evaluate(f"window.shifts.filter(s => s.t >= {t0})")
        cls = sum(s["v"] for s in shifts)
        assert cls < 0.02, (key, cls, shifts)
    assert page.console.errors == []


def test_results_count_the_talks_runs_in_their_rows_and_the_export_says_so(acted: LabService, new_page,
                                                                           tmp_path: Path) -> None:
    """The case study's rows that the acts measure (the service's one rule: same client and server)
    count the talk's runs: qemu-2.8, 3.1 and 4.0 on A and B, and qemu 4.2's two fast-zero rows."""
    page = new_page(1280, 720)
    open_live(page, acted.url + "/results?scenario=case-study")
    page.wait_for_function("document.querySelector('#sweep-status').textContent.includes('rows measured')")
    status = page.inner_text("#sweep-status")
    assert status.startswith("8 of 19 rows measured"), status
    for key in ("qemu-2.8-A", "qemu-3.1-B", "qemu-4.0-A", "ref-plugin-default", "ref-emulate-default"):
        assert page.get_attribute(f'#chart svg g.bar[data-row="{key}"]', "data-state") == "done", key
    # the 2019 marker stays on a measured reference row at its own geometry
    titles = page.eval_on_selector_all('#chart svg g.bar[data-row="ref-plugin-default"] title',
                                       "ns => ns.map(n => n.textContent)")
    assert any("2019 reference" in t for t in titles), titles
    with page.expect_download() as dl:
        page.click("#export-svg")
    svg = Path(dl.value.path()).read_text()
    assert "8 of 19 rows measured" in svg and "own geometry" in svg, svg[:2000]
    assert "Measured with fastzero-lab: Measured" not in svg
    page.goto(acted.url + "/results?scenario=acts")
    page.wait_for_function("document.querySelector('#sweep-status').textContent.includes('rows measured')")
    assert page.inner_text("#sweep-status").startswith("15 of 15 rows measured")


def test_a_contended_run_is_marked_wherever_its_time_is_shown(service: LabService, new_page) -> None:
    """Two busy processes of ours (the machine's other work) during a run: the service marks it
    contended, and the talk lane, the /results row and chart, /runs/{id} and the CSV all say so."""
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        run = service.post("/api/runs", {"client": "qemu-2.8", "label": "act2-A", "server": {
            "zeromode": "plugin", "fastzeromode": "none", **SMALL, "delay_write": "20ms"}}).json()
        done = service.wait_run(run["id"])
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if not done.get("contended"):
        pytest.skip(f"the run was not contended (contention {done.get('contention')})")
    page = new_page(1280, 640)
    open_live(page, service.url + "/talk?kiosk#write-zeroes")
    page.wait_for_selector('.lane[data-row="act2-A"][data-state="done"]')
    assert page.inner_text('.lane[data-row="act2-A"] .lane-flag') == "⚠"
    assert "contended" in page.inner_text('.lane[data-row="act2-A"] .lane-marks')
    page.goto(service.url + "/results?scenario=acts")
    page.wait_for_selector('#rows-body tr[data-row="act2-A"] .contended')
    assert "⚠" in page.text_content('#chart svg g.bar[data-row="act2-A"]')
    assert "1 contended" in page.inner_text("#sweep-status")
    page.goto(service.url + f"/runs/{run['id']}")
    page.wait_for_selector("#run-contended .contended")
    assert "⚠" in page.inner_text('#run-counts dd[data-stat="time"]')
    [row] = csv.DictReader(io.StringIO(service.get("/api/v1/results.csv?label=act2-A").text))
    assert row["contended"] == "true"


def test_the_models_expected_time_is_marked_on_the_lane_with_its_interval(service_factory, new_page,
                                                                          tmp_path: Path) -> None:
    """With this machine calibrated (a planted calibration of realistic costs), a finished lane marks the
    model's expected time on its axis and says it as the cards do: "expected 0.31 s (0.29 to 0.33)"."""
    from test_model_display import planted

    from lab.domain.units import format_interval

    service = service_factory(LAB_CALIBRATION_FILE=str(planted(tmp_path, 1.0)))
    run = service.post("/api/runs", {"client": "qemu-2.8", "label": "act2-A",
                                     "server": {"zeromode": "plugin", "fastzeromode": "none", **SMALL}}).json()
    run = service.wait_run(run["id"])
    assert run["expected_s"] is not None, run
    page = new_page(1280, 640)
    open_live(page, service.url + "/talk?kiosk#write-zeroes")
    lane = '.lane[data-row="act2-A"]'
    page.wait_for_selector(f"{lane}[data-state='done'] .mark-exp:not([hidden])")
    words = format_interval(run["expected_s"], run["expected_low_s"], run["expected_high_s"]).replace("-", "\u2013")
    assert page.inner_text(f"{lane} .mark-expected").endswith(f"expected {words}")
    assert page.is_visible(f"{lane} .mark-band"), "the interval is drawn as a band on the axis"
    shot(page, "talk-expected-1280x640.png")


def test_a_talk_whose_acts_cannot_be_read_yet_tries_again(service: LabService, new_page) -> None:
    """A projector set up before the lab answers: the first reads of the acts fail (the network drops
    them), the page says so and tries again, and the act comes up without a reload."""
    page = new_page(1024, 576)
    failures = fail_first_reads_of_the_acts(page)
    page.goto(service.url + "/talk?kiosk#pre-zero")
    page.wait_for_selector("#banner-msg:not([hidden])")
    assert "Trying again" in page.inner_text("#banner-msg")
    page.wait_for_selector("#act-count:text('Act 3 ·')", timeout=30_000)
    assert failures["left"] == 0 and page.locator("#lanes .lane").count() == 2
