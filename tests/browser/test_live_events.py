"""static/js/live.js against a scripted event stream, so the order of events and where the
stream breaks between them are exact (a real stream may or may not split them).

The page, its list and the run are real (a finished run of a real `lab serve`); only
GET /api/v1/runs (the list, showing that run as still running) and the event stream are
served by Playwright. The stream ends after its events; the browser reconnects with
Last-Event-ID and gets what follows, as from the service.
"""

from __future__ import annotations

import json
import time

import pytest
from labservice import SMALL, LabService

pytestmark = pytest.mark.browser


def frame(event_id: int, type_: str, run_id: str, **fields: object) -> str:
    data = {"id": event_id, "type": type_, "ts": time.time(), "run_id": run_id, "sweep_id": None, **fields}
    return f"event: {type_}\ndata: {json.dumps(data)}\nid: {event_id}\n\n"


def test_a_final_state_shows_only_with_the_done_that_carries_the_row(service: LabService, new_page) -> None:
    """The service ends a run with `state` (status only), then `done` (the row). A history row
    made from the first alone would read 'succeeded' with no time and no check mark."""
    run = service.post("/api/runs", {"client": "qemu-img", "server": SMALL}).json()
    final = service.wait_run(run["id"])
    assert final["status"] == "succeeded" and final["verified"] is True
    running = {**final, "status": "running", "duration_s": None, "verified": None, "finished_at": None}
    frames = [frame(1, "state", run["id"], status="succeeded", phase="finished")]
    page = new_page()

    def events(route) -> None:
        after = int(route.request.headers.get("last-event-id") or -1)
        body = "retry: 100\n\n" + "".join(f for i, f in enumerate(frames, 1) if i > after)
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                      body=body)

    page.route("**/api/v1/runs?*", lambda route: route.fulfill(json={
        "runs": [running], "total": 1, "next_cursor": None, "last_event_id": 0}))
    page.route("**/api/v1/events*", events)
    page.goto(service.url + "/")  # not open_live: a stream that ends is 'live' only for a moment
    page.wait_for_function("window.lab && window.lab.store.loaded && window.lab.store.seen.state >= 1")
    page.wait_for_timeout(300)  # several reconnects: nothing more comes
    status = page.evaluate(f"window.lab.store.runs.get({json.dumps(run['id'])}).status")
    assert status == "running", "the bare final state was shown before its row"
    assert page.locator(f'#history-body tr[data-run-id="{run["id"]}"]').count() == 0

    frames.append(frame(2, "done", run["id"], status="succeeded", run=final))
    row = page.wait_for_selector(f'#history-body tr[data-run-id="{run["id"]}"][data-status="succeeded"]')
    text = row.text_content() or ""  # textContent: rows below the fold are not laid out (content-visibility)
    assert "✓" in text and "qemu-img" in text, text
    assert page.console.errors == []
