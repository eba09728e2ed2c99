"""The dashboard used as a person uses it: real pointer presses held 150 ms, real typing, a
projector at 1280x640, a phone at 390x844, a tablet at 768x1024; the disk map checked
against the trace; long tasks measured with the performance API; axe-core on every page.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from labservice import SMALL, LabService, open_live, press

from lab.nbd import diskmap

pytestmark = pytest.mark.browser

PROJECTOR, PHONE, TABLET = (1280, 640), (390, 844), (768, 1024)
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SHOTS = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name))


def external_requests(page) -> list[str]:
    seen: list[str] = []
    page.on(
        "request",
        lambda r: seen.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None,
    )
    return seen


@pytest.mark.parametrize("size", [PROJECTOR, PHONE, TABLET], ids=["1280x640", "390x844", "768x1024"])
def test_cancel_pressed_and_held_cancels_and_the_card_shows_how_far_it_got(service: LabService, new_page, size) -> None:
    page = new_page(*size)
    open_live(page, service.url + "/")
    run = service.post("/api/runs", {"client": "qemu-img", "server": {"zeromode": "emulate"}}).json()  # ~8 s
    card = f'#live-list .run-card[data-run-id="{run["id"]}"]'
    page.wait_for_selector(f'{card} dd[data-stat="writes"]')
    page.wait_for_function(f"Number(document.querySelector('{card} dd[data-stat=\"writes\"]').textContent) > 20")
    page.locator(f"{card} [data-cancel]").scroll_into_view_if_needed()
    button = page.locator(f"{card} [data-cancel]").element_handle()
    press(page, f"{card} [data-cancel]")
    assert service.wait_run(run["id"], timeout=20)["status"] == "cancelled"
    # the button pressed was never replaced under the pointer
    assert button.evaluate("b => b.isConnected")
    page.wait_for_selector(f'{card}[data-status="cancelled"] dd[data-stat="reached"]')
    reached = page.inner_text(f'{card} dd[data-stat="reached"]')
    writes = int(page.inner_text(f'{card} dd[data-stat="writes"]'))
    api = service.get(f"/api/runs/{run['id']}").json()
    assert reached == f"{round(api['reached']['fraction'] * 100)}%" and 0 < api["reached"]["fraction"] < 1
    assert writes == api["backend"]["write_ops"] > 0
    row = page.wait_for_selector(f'#history-body tr[data-run-id="{run["id"]}"]')
    assert "cancelled at" in row.text_content()
    shot(page, f"lab-cancelled-{size[0]}x{size[1]}.png")
    assert page.console.errors == []


def test_typing_is_checked_as_you_type_in_plain_words(service: LabService, new_page) -> None:
    page = new_page(*TABLET)
    open_live(page, service.url + "/")
    page.click("#f-size", click_count=3)
    page.keyboard.type("abc", delay=60)
    page.wait_for_selector("#err-size:not([hidden])")
    text = page.inner_text("#err-size")
    assert "abc" in text and "Value error" not in text and "server." not in text
    assert page.get_attribute("#f-size", "aria-invalid") == "true"
    page.click("#f-delay_write", click_count=3)
    page.keyboard.type("-5ms", delay=60)
    page.wait_for_selector("#err-delay_write:not([hidden])")
    assert "Value error" not in page.inner_text("#err-delay_write")
    # one message per field, the form's general line stays empty
    assert page.locator(".field-error:not([hidden])").count() == 2
    assert page.is_hidden("#form-error")
    # Run with errors sends nothing and puts the cursor on the first wrong field
    press(page, "#run-btn")
    page.wait_for_timeout(400)
    assert service.get("/api/runs").json()["total"] == 0
    assert page.evaluate("document.activeElement.id") == "f-size"
    # an empty size is an error that names the default
    page.keyboard.press("Control+a")
    page.keyboard.press("Backspace")
    page.wait_for_function("document.querySelector('#err-size').textContent.includes('empty')")
    assert "100M" in page.inner_text("#err-size")
    page.keyboard.type("8M", delay=60)
    page.wait_for_selector("#err-size", state="hidden")
    shot(page, "lab-validation-768x1024.png")
    assert page.console.errors == []


def test_every_wrong_field_is_named_at_once_even_a_folded_one(service: LabService, new_page) -> None:
    """The validator (POST /api/v1/validate) names every wrong field of the form in one answer, the rules
    between fields too; a wrong field folded under "More server fields" is unfolded, not left hidden."""
    page = new_page(*PROJECTOR)
    open_live(page, service.url + "/")
    page.select_option("#f-plugin", "file")
    page.select_option("#f-storage", "datadir")
    press(page, ".more-fields summary")  # a person opens the fold, sets a reused disk, folds it again
    page.select_option("#f-disk_init", "data")
    press(page, ".more-fields summary")
    assert page.get_attribute(".more-fields", "open") is None
    page.click("#f-size", click_count=3)
    page.keyboard.type("abc", delay=60)
    page.wait_for_selector("#err-size:not([hidden])")
    assert page.locator(".field-error:not([hidden])").count() == 1  # plugin file on datadir, reused disk: fine
    # back to the memory plugin: the storage and the reused disk no longer fit it, both named beside their field
    page.select_option("#f-plugin", "memory")
    page.wait_for_selector("#err-disk_init:not([hidden])")
    assert page.locator(".field-error:not([hidden])").count() == 3
    assert page.inner_text("#err-storage").startswith("The memory plugin keeps its disk in RAM")
    assert page.inner_text("#err-disk_init").startswith("data applies to a raw file-backed disk")
    assert "abc" in page.inner_text("#err-size")
    assert page.get_attribute(".more-fields", "open") is not None and page.is_visible("#err-disk_init")
    assert page.is_hidden("#form-error")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the whole page from its top: the form is taller than 640
    page.screenshot(path=str(SHOTS / "lab-every-field-1280x640.png"), full_page=True)
    press(page, "#run-btn")
    page.wait_for_timeout(400)
    assert service.get("/api/runs").json()["total"] == 0
    assert page.evaluate("document.activeElement.id") == "f-size"
    page.select_option("#f-plugin", "file")  # the rule is met again: only the mistyped size is left
    page.wait_for_selector("#err-storage", state="hidden")
    assert page.is_hidden("#err-disk_init") and page.locator(".field-error:not([hidden])").count() == 1
    assert page.console.errors == []


@pytest.mark.parametrize("size", [PROJECTOR, PHONE, TABLET], ids=["1280x640", "390x844", "768x1024"])
def test_editing_then_clicking_run_sends_exactly_one_run(service: LabService, new_page, size) -> None:
    page = new_page(*size)
    open_live(page, service.url + "/")
    page.wait_for_selector("#flags .flag-yes, #flags .flag-no")
    for name, value in SMALL.items():
        page.click(f"#f-{name}", click_count=3)
        page.keyboard.type(value, delay=30)
    page.select_option("#f-zeromode", "emulate")
    page.click("#f-maxdata", click_count=3)
    page.keyboard.type("128k", delay=30)  # the focus is still in a field that re-probes the flags on leaving
    page.locator("#run-btn").scroll_into_view_if_needed()
    page.evaluate("""() => { window.runAt = [];
      for (const type of ['mousedown', 'mouseup']) document.addEventListener(type,
        () => window.runAt.push(document.querySelector('#run-btn').getBoundingClientRect().y), true); }""")
    press(page, "#run-btn")  # leaving the field and pressing Run are the same gesture
    down, up = page.evaluate("window.runAt")
    assert abs(down - up) < 1, f"Run moved under the pointer: {down} -> {up}"
    page.wait_for_function("[...window.lab.store.runs.values()].length === 1")
    page.wait_for_timeout(800)
    runs = service.get("/api/runs").json()
    assert runs["total"] == 1
    assert runs["runs"][0]["server"]["maxdata"] == 128 * 1024 and runs["runs"][0]["server"]["zeromode"] == "emulate"
    assert page.get_attribute('[data-preset="B"]', "aria-pressed") == "true", "the active preset is shown"
    assert page.console.errors == []


def test_lab_form_comes_first_on_a_phone_and_counts_are_whole_on_a_tablet(service: LabService, new_page) -> None:
    phone = new_page(*PHONE)
    open_live(phone, service.url + "/")
    assert phone.locator("#run-form").bounding_box()["y"] < phone.locator("#live-title").bounding_box()["y"]
    assert phone.locator("#run-form").bounding_box()["y"] < 200
    tablet = new_page(*TABLET)
    run = service.post(
        "/api/runs", {"client": "qemu-4.2", "label": "act5-A", "server": {"zeromode": "plugin", **SMALL}}
    ).json()
    service.wait_run(run["id"])
    open_live(tablet, service.url + "/talk#fast-zero")
    counts = tablet.locator('.lane[data-row="act5-A"] .lane-state')
    tablet.wait_for_function(
        "document.querySelector('.lane[data-row=\"act5-A\"] .lane-state').textContent.includes('zero')"
    )
    assert counts.evaluate("n => n.scrollWidth <= n.clientWidth + 1"), "the lane's counts are cut"
    assert "zero" in counts.inner_text() and "fast" in counts.inner_text()
    shot(tablet, "talk-768x1024.png")


def test_talk_enter_means_run_this_act_once(service: LabService, new_page) -> None:
    page = new_page(*PROJECTOR)
    open_live(page, service.url + "/talk?kiosk#1")
    page.wait_for_selector("#act-count:text('Act 1 ·')")
    press(page, "#act-next")  # the focus is now on the → button
    assert page.text_content("#act-count").startswith("Act 2 ·")
    assert page.evaluate("document.activeElement.id") == "act-next"
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # a second press before the first answered
    page.wait_for_selector('.lane[data-state="running"]')
    page.keyboard.press("Enter")  # and one while the act runs
    page.wait_for_timeout(500)
    assert page.text_content("#act-count").startswith("Act 2 ·"), "Enter pressed the focused arrow"
    runs = service.get("/api/runs").json()["runs"]
    assert sorted(r["label"] for r in runs) == ["act2-A", "act2-B"], runs
    # each lane says what it is doing, and draws the disk as it is written
    page.wait_for_selector('.lane[data-phase="copy"] .state-word:text("copying")')
    page.wait_for_function("document.querySelector('.lane[data-row=\"act2-B\"] canvas').dataset.cells.includes('D')")
    # kiosk: no top bar, the controls on screen
    assert page.is_hidden(".topbar")
    nav = page.locator(".talk-nav").bounding_box()
    assert nav["y"] + nav["height"] <= 640
    shot(page, "talk-running-1280x640.png")
    # cancel inside the talk
    press(page, "#act-cancel")
    for r in runs:
        assert service.wait_run(r["id"], timeout=20)["status"] == "cancelled"
    page.wait_for_selector("#act-run:not([disabled])")
    assert page.console.errors == []


def test_disk_map_of_a_finished_run_is_its_trace_and_act3_b_prezeroes_the_whole_disk(
    service: LabService, new_page
) -> None:
    page = new_page(*PROJECTOR)
    open_live(page, service.url + "/talk#pre-zero")
    # every state the B lane's map goes through, as drawn
    page.evaluate("""() => {
      window.seenB = [];
      const watch = () => {
        const c = document.querySelector('.lane[data-row="act3-B"] canvas');
        if (!c) return setTimeout(watch, 20);
        new MutationObserver(() => window.seenB.push(c.dataset.cells))
          .observe(c, {attributes: true, attributeFilter: ['data-cells']});
      };
      watch();
    }""")
    slow = {**SMALL, "delay_write": "20ms"}  # the pre-zero pass takes ~0.6 s: long enough to be seen
    run = service.post(
        "/api/runs",
        {"client": "qemu-3.1", "label": "act3-B", "server": {"zeromode": "emulate", "fastzeromode": "none", **slow}},
    ).json()
    done = service.wait_run(run["id"])
    assert done["status"] == "succeeded"
    page.wait_for_selector('.lane[data-row="act3-B"][data-state="done"]')
    seen = page.evaluate("window.seenB")
    assert any(s and set(s) == {"P"} for s in seen), "the pre-zero pass, written out over the whole disk, was shown"
    final = page.get_attribute('.lane[data-row="act3-B"] canvas', "data-cells")
    assert set(final) == {"D", "P"}

    # the run's own page: the map drawn from the trace equals the trace painted, and the trace is the wire log
    page.goto(service.url + f"/runs/{run['id']}")
    page.wait_for_selector("#trace-body tr")
    rows = [json.loads(line) for line in service.get(f"/api/runs/{run['id']}/trace").text.splitlines()]
    cells = page.get_attribute("#run-map canvas", "data-cells")
    assert cells == diskmap.paint(rows, done["server"]["size"])
    writes = [r for r in rows if r["op"] == "Write"]
    assert (
        len(writes) == done["server_log"]["write"]
        and sum(r["count"] for r in writes) == done["server_log"]["write_bytes"]
    )
    assert page.locator("#trace-body tr").count() == len(rows)
    assert "verified" in page.inner_text("#run-counts")
    # a replay paints the same cells again, request by request
    page.evaluate("""() => { window.replayed = [];
      new MutationObserver(() => window.replayed.push(document.querySelector('#run-map canvas').dataset.cells))
        .observe(document.querySelector('#run-map canvas'), {attributes: true, attributeFilter: ['data-cells']}); }""")
    page.select_option("#replay-speed", "5")
    press(page, "#replay-play")
    page.wait_for_function("document.querySelector('#replay-play').textContent === 'Replay'", timeout=20_000)
    replayed = page.evaluate("window.replayed")
    assert replayed[-1] == cells and any(set(s) == {"P"} for s in replayed)
    shot(page, "run-detail-1280x640.png")
    assert page.console.errors == []


def seed_history(data_dir: Path, n: int, template: dict) -> None:
    from lab.service.store import Store

    store = Store(data_dir, recover=False)
    try:
        t = template["created_at"] - n
        for i in range(n):
            store.save_run({**template, "id": uuid.uuid4().hex[:12], "created_at": t + i, "finished_at": t + i + 1})
    finally:
        store.close()


def test_history_of_1000_runs_pages_and_a_burst_costs_no_long_task(service_factory, new_page, tmp_path) -> None:
    first = service_factory()
    run = first.post("/api/runs", {"client": "qemu-img", "server": SMALL}).json()
    template = first.wait_run(run["id"])
    first.stop()
    seed_history(first.data_dir, 999, template)
    first.start()
    page = new_page(*PROJECTOR)
    listed: list[str] = []
    page.on("request", lambda r: listed.append(r.url) if "/runs?" in r.url else None)
    open_live(page, first.url + "/")
    assert page.locator("#history-body tr").count() == 100
    assert "of 1000" in page.inner_text("#history-more")
    press(page, "#history-more")
    page.wait_for_function("document.querySelectorAll('#history-body tr').length >= 199")
    page.evaluate("""() => { window.longTasks = [];
      new PerformanceObserver((l) => { for (const e of l.getEntries()) window.longTasks.push(e.duration); })
        .observe({type: 'longtask', buffered: false}); }""")
    browser = page.context.browser
    browser.start_tracing(page=page, categories=["devtools.timeline", "disabled-by-default-devtools.timeline"])
    seen0 = page.evaluate("window.lab.store.seen.state + window.lab.store.seen.done + window.lab.store.seen.progress")
    ids = [first.post("/api/runs", {"client": "nbdcopy", "server": SMALL}).json()["id"] for _ in range(6)]
    for i in ids:
        first.wait_run(i)
    page.wait_for_function(
        f"window.lab.store.seen.state + window.lab.store.seen.done + window.lab.store.seen.progress >= {seen0 + 40}"
    )
    page.wait_for_timeout(500)
    trace = json.loads(browser.stop_tracing())
    long_tasks = page.evaluate("window.longTasks")
    # The page's own work per task: thread time of the renderer's tasks (what it costs the CPU,
    # whatever else the machine runs), and the performance API's wall-clock long tasks.
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"
    }
    cpu = sorted(
        e.get("tdur", 0) / 1000
        for e in events
        if e.get("name") == "RunTask" and e.get("ph") == "X" and (e["pid"], e["tid"]) in main
    )
    assert cpu, "the trace has the page's tasks"
    worst_cpu = cpu[-1] if cpu else 0
    print(
        f"\nburst of >=40 events, 1000 runs: performance API long tasks {long_tasks or 'none'}, "
        f"worst task {worst_cpu:.1f} ms of main-thread CPU, load average {os.getloadavg()[0]:.1f}"
    )
    assert worst_cpu < 50, f"a task took {worst_cpu:.0f} ms of main-thread time"
    if os.getloadavg()[0] < (os.cpu_count() or 1):  # on a quiet machine wall-clock time is the page's own
        assert not [d for d in long_tasks if d > 50], f"long tasks during the burst: {long_tasks}"
    assert page.locator("#history-body tr").count() >= 204
    assert len(listed) == 2, f"the history was read page by page, not again: {listed}"
    # a reconnect resumes after the last event instead of reading the history again
    first.stop()
    page.wait_for_selector('#conn[data-state="reconnecting"]')
    first.start()
    page.wait_for_selector('#conn[data-state="live"]')
    again = first.post("/api/runs", {"client": "qemu-img", "server": SMALL}).json()
    page.wait_for_selector(f'#history-body tr[data-run-id="{again["id"]}"][data-status="succeeded"]')
    assert len(listed) == 2, listed


def test_talk_reads_only_what_its_acts_need(service: LabService, new_page) -> None:
    for _ in range(3):
        service.wait_run(service.post("/api/runs", {"client": "qemu-img", "server": SMALL}).json()["id"])
    page = new_page(*PROJECTOR)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    open_live(page, service.url + "/talk")
    assert not [u for u in urls if "/api/runs" in u], urls
    assert any("/scenarios/acts/rows" in u for u in urls)
    assert page.evaluate("window.lab.store.runs.size") == 0  # none of those runs belongs to an act


PAGES = ["/", "/results", "/talk#1", "/talk#summary", "RUN"]


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_axe_finds_nothing_on_any_page(service: LabService, new_page, theme: str) -> None:
    run = service.post(
        "/api/runs", {"client": "qemu-4.2", "label": "act5-B", "server": {"zeromode": "emulate", **SMALL}}
    ).json()
    service.wait_run(run["id"])
    page = new_page(*PROJECTOR)
    outside = external_requests(page)
    page.goto(service.url + "/")
    page.evaluate(f"localStorage.setItem('lab-theme', '{theme}')")
    for path in PAGES:
        open_live(page, service.url + (f"/runs/{run['id']}" if path == "RUN" else path))
        page.wait_for_timeout(400)
        assert page.get_attribute("html", "data-theme") == theme
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        found = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
        assert found == [], f"{path} ({theme}): {found}"
    assert outside == [], f"requests outside the lab: {outside}"
    assert page.console.errors == []


def test_every_page_at_every_size_has_no_sideways_scroll(service: LabService, new_page) -> None:
    run = service.post(
        "/api/runs",
        {"client": "qemu-3.1", "label": "act3-B", "server": {"zeromode": "emulate", "fastzeromode": "none", **SMALL}},
    ).json()
    service.wait_run(run["id"])
    for size in (PROJECTOR, PHONE, TABLET):
        page = new_page(*size)
        for path, name in (
            ("/", "lab"),
            ("/results", "case-study"),
            ("/talk#pre-zero", "talk"),
            (f"/runs/{run['id']}", "run"),
        ):
            open_live(page, service.url + path)
            page.wait_for_timeout(300)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {size}"
            shot(page, f"{name}-{size[0]}x{size[1]}.png")
        assert page.console.errors == []
    time.sleep(0)


def test_act5_on_server_b_flashes_the_refused_fast_zero_live(service: LabService, new_page) -> None:
    page = new_page(*PROJECTOR)
    open_live(page, service.url + "/talk#fast-zero")
    run = service.post(
        "/api/runs",
        {"client": "qemu-4.2", "label": "act5-B", "server": {"zeromode": "emulate", **SMALL, "delay_write": "20ms"}},
    ).json()
    page.wait_for_selector('.lane[data-row="act5-B"] canvas[data-flashed="R"]')
    assert service.wait_run(run["id"])["wire"]["fast_zero_failed"] == 1
    page.wait_for_selector('.lane[data-row="act5-B"][data-state="done"]')
    assert set(page.get_attribute('.lane[data-row="act5-B"] canvas', "data-cells")) == {"D", "W"}


def test_two_lanes_race_on_one_axis_on_a_projector_and_a_phone(service: LabService, new_page) -> None:
    """A above B, their bars on the same scale: the two tracks start and end at the same x."""
    for w, h in (PROJECTOR, PHONE, TABLET):
        page = new_page(w, h)
        page.goto(service.url + "/talk#pre-zero")
        page.wait_for_selector('.lane[data-row="act3-B"] canvas')
        a = page.locator('.lane[data-row="act3-A"]').bounding_box()
        b = page.locator('.lane[data-row="act3-B"]').bounding_box()
        assert a["y"] + a["height"] <= b["y"], (a, b)
        ta = page.locator('.lane[data-row="act3-A"] .lane-track').bounding_box()
        tb = page.locator('.lane[data-row="act3-B"] .lane-track').bounding_box()
        axis = page.locator("#axes .axis").bounding_box()
        assert (ta["x"], ta["width"]) == (tb["x"], tb["width"]) == (axis["x"], axis["width"]), (ta, tb, axis)
        page.close()


def test_a_run_on_the_slow_copy_path_says_so_on_its_card_and_row(service_factory, new_page, tmp_path) -> None:
    """A calibration that expects almost no CPU (planted, with this machine's fingerprint): a real copy
    without delays burns far more, so the service marks it and the page says so where the run is shown."""
    from lab.measure import expectation

    cal = expectation.Calibration(expectation.fingerprint(expectation.machine()), {"cpu": "planted"}, {
        k: expectation.Fit(k, {"fixed": 0.01, "mib": 1e-3, "delays": 1.0}, [], {"fixed": 1e-4})
        for k in ("qemu-img/single", "era-q1/single", "era-qN/single", "nbdcopy/single", "era-q1/chain")})
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(cal.to_dict()))
    service = service_factory(LAB_CALIBRATION_FILE=str(path))
    page = new_page(*PROJECTOR)
    open_live(page, service.url + "/")
    for name, value in {"size": "128M", "delay_write": "0ms", "delay_zero": "0ms"}.items():
        page.click(f"#f-{name}", click_count=3)
        page.keyboard.type(value, delay=30)
    press(page, "#run-btn")
    page.wait_for_function("[...window.lab.store.runs.values()].length === 1")
    run = service.wait_run(service.get("/api/runs").json()["runs"][0]["id"])
    assert run["status"] == "succeeded" and run["contention"]["slow_copy_path"] is True, run["contention"]
    note = page.locator(".contended-slot p.contended", has_text="slow copy path:")
    note.wait_for(state="visible")  # beside a "contended" note if others also used the CPU meanwhile
    assert f"{run['contention']['own_cpu_s']:.2f} s of CPU" in note.inner_text()
    shot(page, "slow-copy-path-card.png")
    hint = page.locator("tr .hint.contended")  # the run's row in the history below the cards
    hint.first.wait_for(state="attached")
    assert hint.first.text_content() in ("slow path", "contended, slow path")
    assert page.console.errors == []
