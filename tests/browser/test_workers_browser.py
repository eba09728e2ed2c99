"""The Workers page of a cluster, as a teacher uses it: the tab is there only in cluster mode, each worker's
row says it is ready, a running copy shows in its worker's row and leads to the run, a worker killed
disappears. At a projector's 1024x576 and a phone's 390x844 (screenshots in test-artifacts/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labservice import press

from testkit import wait_for
from testkit.cluster import Cluster

pytestmark = pytest.mark.browser
OUT = Path(os.environ.get("LAB_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts"))
# ~80 s: still running when the test, having looked around (slowly on a loaded machine), kills its worker
SLOW = {"size": "64M", "delay_write": "300ms", "delay_zero": "5ms"}


def test_the_workers_tab_shows_each_worker_its_runs_and_who_left(service_factory, new_page, tmp_path) -> None:
    embedded = service_factory()
    page = new_page(1024, 576)
    page.goto(embedded.url + "/")
    assert page.locator("nav.tabs a[href='/workers']").count() == 0  # no cluster, no tab

    with Cluster(tmp_path / "cluster", n=2, slots=2) as c:
        svc = service_factory(LAB_BROKER_URL=c.url, LAB_AUTO_CALIBRATE="0")
        page = new_page(1024, 576)
        page.goto(svc.url + "/")
        press(page, "nav.tabs a[href='/workers']")
        page.wait_for_url("**/workers")
        for w in c.workers:
            page.wait_for_selector(f"#workers-body tr[data-worker='{w.name}'][data-state='ready']")
        assert page.inner_text("#workers-count") == "2 workers"
        row = page.locator(f"#workers-body tr[data-worker='{c.workers[0].name}']")
        assert "not calibrated" in row.inner_text() and "nbdkit" in row.inner_text()

        run = svc.post("/api/v1/runs", {"client": "qemu-img", "server": SLOW}).json()
        link = page.locator(f"#workers-body a[href='/runs/{run['id']}']")
        link.wait_for(timeout=30_000)
        held = link.element_handle()  # the table is read again every 2 s: the link stays the same element
        page.wait_for_timeout(2500)
        assert held.evaluate("e => e.isConnected"), "the running run's link was rebuilt under the pointer"
        OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUT / "workers-1024x576.png"))
        phone = new_page(390, 844)
        phone.goto(svc.url + "/workers")
        phone.locator(f"#workers-body a[href='/runs/{run['id']}']").wait_for(timeout=30_000)
        phone.screenshot(path=str(OUT / "workers-390x844.png"), full_page=True)

        busy = next(w for w in c.workers if page.locator(f"#workers-body tr[data-worker='{w.name}'] a").count())
        lab = new_page(1024, 576)  # the run's card on the lab page says where it runs
        lab.goto(svc.url + "/")
        lab.wait_for_selector(f".run-spec:has-text('on {busy.name}')", timeout=30_000)
        lab.locator(f".run-card:has(.run-spec:has-text('on {busy.name}'))").first.screenshot(
            path=str(OUT / "run-card-on-a-worker.png"))
        press(page, f"#workers-body a[href='/runs/{run['id']}']")
        page.wait_for_url(f"**/runs/{run['id']}")
        page.go_back()
        busy.kill9()
        page.wait_for_selector(f"#workers-body tr[data-worker='{busy.name}']", state="detached", timeout=30_000)
        assert page.inner_text("#workers-count") == "1 worker"
        assert wait_for(lambda: svc.get(f"/api/v1/runs/{run['id']}").json()["status"] == "interrupted", 30)
        assert page.console.errors == [] and phone.console.errors == [] and lab.console.errors == []
