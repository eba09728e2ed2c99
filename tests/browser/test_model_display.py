"""A run against its expectation, where people look: the card, the runs table and the run page say
"expected 0.31 s (0.29-0.33)" and mark a run that fell outside, which way and the part most likely
off. The calibration is planted (this machine's fingerprint, costs a hundred times too small), so a
real copy lands above its interval whatever the machine's load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from labservice import open_live, press

from lab.domain.units import format_interval

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
REAL = {"fixed": 0.02, "wire_requests": 30e-6, "backend_requests": 5e-6, "sleeps": 90e-6, "mib": 0.75e-3,
        "warm_mib": 0.3e-3, "slept_mib": 0.1e-3}


def planted(tmp_path: Path, scale: float) -> Path:
    from lab.measure import expectation

    fits = {k: expectation.Fit(k, {**{t: v * scale for t, v in REAL.items()}, "delays": 1.0}, [], {},
                               {"delay-bound": 0.2, "per-request-bound": 0.1, "bandwidth-bound": 0.04, "abs_s": 0.003})
            for k in ("qemu-img/single", "era-q1/single", "era-qN/single", "nbdcopy/single", "era-q1/chain")}
    cal = expectation.Calibration(expectation.fingerprint(expectation.machine()), {"cpu": "planted"}, fits)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(cal.to_dict()))
    return path


@pytest.mark.parametrize("size", [(1024, 576), (390, 844)], ids=["1024x576", "390x844"])
def test_a_run_outside_its_interval_is_marked_on_the_card_the_row_and_the_run_page(service_factory, new_page,
                                                                                   tmp_path, size) -> None:
    service = service_factory(LAB_CALIBRATION_FILE=str(planted(tmp_path, 0.01)))
    page = new_page(*size)
    open_live(page, service.url + "/")
    for name, value in {"size": "16M", "delay_write": "1ms", "delay_zero": "1ms"}.items():
        page.click(f"#f-{name}", click_count=3)
        page.keyboard.type(value, delay=30)
    press(page, "#run-btn")
    page.wait_for_function("[...window.lab.store.runs.values()].length === 1")
    run = service.wait_run(service.get("/api/runs").json()["runs"][0]["id"])
    assert run["status"] == "succeeded" and run["model_verdict"] == "slower-than-model", run
    card = f'#live-list .run-card[data-run-id="{run["id"]}"]'
    expected = page.locator(f'{card} dd[data-stat="expected"]')
    expected.wait_for(state="visible")
    text = expected.inner_text()
    # the page spells it as the CLI does (lab.domain.units.format_interval), with an en dash
    assert text == format_interval(run["expected_s"], run["expected_low_s"], run["expected_high_s"]).replace(
        "-", "\u2013"), text
    assert "outside-slower" in expected.get_attribute("class")
    verdict = page.locator(f"{card} p.outside")
    verdict.wait_for(state="visible")
    assert "slower than the model" in verdict.inner_text() and "most likely short" in verdict.inner_text()
    # nothing on the card runs off its right edge, on a projector or a phone
    overflow = page.evaluate(f"(() => {{ const c = document.querySelector('{card}'); "
                             "return c.scrollWidth - c.clientWidth; })()")
    assert overflow <= 1, overflow
    verdict.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"model-card-{size[0]}x{size[1]}.png"))
    row = page.locator(f'#history-body tr[data-run-id="{run["id"]}"] .outside')
    row.first.wait_for(state="attached")
    assert "slower than model" in row.first.text_content()
    # the run page: the interval, its coverage, the verdict in words
    page.locator(f"{card} a.run-title").scroll_into_view_if_needed()
    press(page, f"{card} a.run-title")
    page.wait_for_url(f"**/runs/{run['id']}")
    got = page.locator('dd[data-stat="verdict"]')
    got.wait_for(state="visible")
    assert "slower than the model" in got.inner_text()
    assert "90% of runs" in page.locator('dd[data-stat="expected"]').inner_text()
    got.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / f"model-run-page-{size[0]}x{size[1]}.png"))
    assert page.console.errors == []
