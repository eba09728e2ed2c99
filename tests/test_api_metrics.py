"""GET /metrics: Prometheus' text format from the official client, with the figures issue 24 asks
for (runs by status, queue depth, run duration histogram, SSE streams, events published/dropped)."""

from __future__ import annotations

import pytest
from apiutil import serve, start_run, wait_final
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path, workers=1, event_queue=10)


def _scrape(api) -> dict[str, dict[tuple, float]]:
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.headers
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_follow_runs_queue_and_streams(api):
    before = _scrape(api)
    assert before["fastzero_runs"][(("status", "succeeded"),)] == 0
    assert before["fastzero_queue_depth"][()] == 0 and before["fastzero_sse_streams"][()] == 0
    assert "process_resident_memory_bytes" in before
    runs = [start_run(api) for _ in range(3)]  # one worker: two wait
    during = _scrape(api)
    assert during["fastzero_queue_depth"][()] + during["fastzero_running"][()] >= 2
    with api.stream("GET", "/api/v1/events") as stream:
        next(stream.iter_lines())
        assert _scrape(api)["fastzero_sse_streams"][()] == 1
    done = [wait_final(api, r["id"]) for r in runs]
    assert all(r["status"] == "succeeded" for r in done)
    after = _scrape(api)
    assert after["fastzero_runs"][(("status", "succeeded"),)] == 3
    assert after["fastzero_runs_finished_total"][(("status", "succeeded"),)] == 3
    assert after["fastzero_run_duration_seconds_count"][(("client", "qemu-img"),)] == 3
    total = after["fastzero_run_duration_seconds_sum"][(("client", "qemu-img"),)]
    assert total == pytest.approx(sum(r["duration_s"] for r in done))
    assert after["fastzero_events_published_total"][()] > before["fastzero_events_published_total"][()] + 10
    assert after["fastzero_sse_streams"][()] == 0


def _drain(sub) -> list[int]:
    got = []
    while batch := sub.get(timeout=0.3):
        got += [e.id for e in batch]
    sub.close()
    return got


def test_a_lagging_subscriber_counts_as_dropped_and_loses_nothing(api):
    """LAB_EVENT_QUEUE=10: a reader that does not read while runs publish falls behind; its
    dropped events are counted and it still gets every one, from the database."""
    manager = api.app.state.manager
    start = manager.last_event_id
    sub = manager.subscribe()
    for run in [start_run(api) for _ in range(3)]:
        wait_final(api, run["id"])
    got = _drain(sub)
    assert len(got) > 10 and got == _drain(manager.subscribe(after=start))
    assert _scrape(api)["fastzero_events_dropped_total"][()] >= len(got) - 10
