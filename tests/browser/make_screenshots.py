"""Screenshots of the dashboard for docs/screenshots/: a 720p projector minus browser chrome, a phone, a tablet.

    .venv/bin/python tests/browser/make_screenshots.py [--url http://127.0.0.1:8000] [--out docs/screenshots]

Without --url it starts its own `lab serve` on a temporary data dir. It makes sure the
case study and the acts have been measured at the talk's geometry (that takes a few
minutes the first time), then shoots the lab with two runs live, the case-study chart,
one act with its outcome and disk maps (A beside B), act 3b's six lanes in kiosk mode,
the talk's summary, the talk in kiosk mode while an act runs, one run's page (its disk
map replayed from the trace), and every act of the talk at 1024x576 in kiosk mode (--talk:
those alone).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # testkit/, beside lab/
from conftest import CHROMIUM, CHROMIUM_ARGS
from labservice import ROOT, LabService

SIZES = ((1280, 640), (390, 844), (768, 1024))


def wait_sweep(url: str, sweep_id: str) -> None:
    while True:
        sweep = httpx.get(f"{url}/api/v1/sweeps/{sweep_id}", timeout=30).json()
        print(f"  {sweep['name']}: {sweep['finished']}/{sweep['total']}", file=sys.stderr)
        if sweep["status"] not in ("queued", "running"):
            return
        time.sleep(5)


def ensure_measured(url: str, headers: dict[str, str], names: tuple[str, ...] = ("case-study", "acts")) -> None:
    done = {s["name"] for s in httpx.get(f"{url}/api/v1/sweeps?status=succeeded", timeout=30).json()["sweeps"]}
    for name in names:
        if name in done:
            continue
        print(f"running the {name} sweep", file=sys.stderr)
        r = httpx.post(f"{url}/api/v1/scenarios/{name}/runs", headers=headers, timeout=30)
        r.raise_for_status()
        wait_sweep(url, r.json()["id"])


ACTS = ("baseline", "write-zeroes", "block-status", "pre-zero", "no-fallback", "fast-zero", "summary")


def shoot_acts(browser, url: str, out: Path) -> None:
    """Every act of the talk (and its summary) as a 1024x576 projector shows it in kiosk mode."""
    page = browser.new_page(viewport={"width": 1024, "height": 576})
    page.goto(url + "/talk?kiosk#baseline")
    page.wait_for_function("window.lab && window.lab.store.loaded")
    for key in ACTS:
        page.evaluate(f"location.hash = '#{key}'")
        page.wait_for_selector("#talk-chart .summary" if key == "summary" else '#outcome[data-state="done"]')
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / f"talk-act-{key}-1024x576.png"))
    page.close()


def shoot(url: str, out: Path, headers: dict[str, str], token: str | None, only_talk: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        shoot_acts(browser, url, out)
        if only_talk:
            browser.close()
            return
        for width, height in SIZES:
            page = browser.new_page(viewport={"width": width, "height": height})
            if token:  # the presenter's view
                page.goto(url + "/")
                page.evaluate("t => sessionStorage.setItem('lab-token', t)", token)
            suffix = f"{width}x{height}"

            page.goto(url + "/results")
            page.wait_for_selector("#chart svg")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / f"case-study-{suffix}.png"))

            page.goto(url + "/talk#pre-zero")
            page.wait_for_selector('#outcome[data-state="done"]')
            page.screenshot(path=str(out / f"talk-{suffix}.png"))

            if width >= 1280:  # act 3b: six lanes on a projector, kiosk
                page.goto(url + "/talk?kiosk#block-status")
                page.wait_for_selector('#outcome[data-state="done"]')
                page.wait_for_timeout(300)
                page.screenshot(path=str(out / f"talk-kiosk-block-status-{suffix}.png"))
                page.goto(url + "/")  # leave kiosk

            page.goto(url + "/talk#summary")
            page.wait_for_selector("#talk-chart .summary")
            page.wait_for_timeout(300)
            page.screenshot(path=str(out / f"talk-summary-{suffix}.png"))

            # one run's own page: act 3 on server B, its pre-zero pass written over the whole disk
            runs = httpx.get(f"{url}/api/v1/runs?label=act3-B&status=succeeded&limit=1", timeout=30).json()["runs"]
            if runs:
                page.goto(url + f"/runs/{runs[0]['id']}")
                page.wait_for_selector("#trace-body tr")
                page.wait_for_timeout(300)
                page.screenshot(path=str(out / f"run-{suffix}.png"))

            # last, so the two runs it starts show nowhere else
            page.goto(url + "/")
            page.wait_for_selector('#conn[data-state="live"]')
            ids = []
            for group, zeromode in (("A", "plugin"), ("B", "emulate")):
                r = httpx.post(f"{url}/api/v1/runs", headers=headers, timeout=30,
                               json={"client": "qemu-4.2", "server": {"zeromode": zeromode}, "label": f"act5-{group}"})
                ids.append(r.json()["id"])
            page.wait_for_selector('#live-list .run-card[data-status="running"] dd[data-stat="writes"]')
            page.wait_for_timeout(2500)
            page.screenshot(path=str(out / f"lab-{suffix}.png"))
            if width >= 1280:  # the same race, as the talk shows it in kiosk mode
                page.goto(url + "/talk?kiosk#fast-zero")
                page.wait_for_selector('.lane[data-state="running"]')
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / f"talk-kiosk-running-{suffix}.png"))
            for run_id in ids:  # let them finish before the next size
                while httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=30).json()["status"] in ("queued", "running"):
                    time.sleep(0.5)
            page.close()
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running lab (default: start one on a temporary data dir)")
    ap.add_argument("--token", help="LAB_TOKEN of that lab, if it has one")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--talk", action="store_true", help="only the talk's acts at 1024x576 (measures the acts only)")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    service = None
    url = args.url
    if url is None:
        service = LabService(Path(tempfile.mkdtemp(prefix="fzl-shots-")) / "data").start()
        url = service.url
    try:
        ensure_measured(url, headers, ("acts",) if args.talk else ("case-study", "acts"))
        shoot(url, args.out, headers, args.token, only_talk=args.talk)
    finally:
        if service is not None:
            service.stop()
    print(f"screenshots in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
