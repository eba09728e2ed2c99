"""Event streams: a cap on how many are open (503 + Retry-After past LAB_MAX_STREAMS, each place
given back when a stream ends), and an opening that no common client reads as an event."""

from __future__ import annotations

import httpx_sse
import pytest
from apiutil import FAST, serve, start_run, wait_final

B = "/api/v1"


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path, max_streams=2, sse_keepalive_s=0.2)


def _first_line(resp) -> str:
    return next(resp.iter_lines())


def test_past_max_streams_a_stream_is_503_with_retry_after(api):
    gate = api.app.state.streams
    with api.stream("GET", f"{B}/events") as a, api.stream("GET", f"{B}/events") as b:
        assert a.status_code == b.status_code == 200
        _first_line(a), _first_line(b)
        assert gate.open == 2
        refused = api.get(f"{B}/events")
        assert refused.status_code == 503 and refused.json()["code"] == "too-many-streams"
        assert refused.headers["retry-after"].isdigit()
        run = start_run(api)  # a run's own stream is counted too
        assert api.get(f"{B}/runs/{run['id']}/events").status_code == 503
        assert api.get(f"{B}/health").status_code == 200  # everything else still answers
    assert gate.open == 0, "a stream that ended gives its place back"
    with api.stream("GET", f"{B}/runs/{run['id']}/events") as c:
        assert c.status_code == 200
    wait_final(api, run["id"])
    assert gate.open == 0


def test_a_finished_stream_and_a_head_take_no_place(api):
    run = wait_final(api, start_run(api)["id"])
    last = api.get(f"{B}/runs/{run['id']}").json()
    with httpx_sse.connect_sse(api, "GET", f"{B}/runs/{run['id']}/events") as source:
        done = list(source.iter_sse())[-1]
    assert done.event == "done" and last["id"] == run["id"]
    assert api.get(f"{B}/runs/{run['id']}/events", headers={"Last-Event-ID": done.id}).status_code == 204
    assert api.head(f"{B}/events").status_code == 200
    assert api.app.state.streams.open == 0


def test_httpx_sse_sees_only_real_events(api):
    """The opening block is a comment; `retry:` rides on the first event, so a client that makes an
    event of any block with a field (httpx-sse) never gets an empty one."""
    run = start_run(api, **FAST)
    with httpx_sse.connect_sse(api, "GET", f"{B}/runs/{run['id']}/events") as source:
        events = list(source.iter_sse())
    assert events and all(e.event != "message" and e.data for e in events), [(e.event, e.data[:20]) for e in events]
    assert events[0].retry == 2000 and all(e.retry is None for e in events[1:])
    assert events[-1].event == "done" and events[-1].json()["run"]["status"] == "succeeded"
