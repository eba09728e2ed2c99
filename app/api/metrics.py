"""GET /metrics: the service in Prometheus' text format, with the official client (prometheus_client).

    fastzero_runs{status}                     runs in each status, over the whole history (gauge)
    fastzero_queue_depth / fastzero_running   runs waiting / being measured now (gauges), and the queue's size
    fastzero_run_duration_seconds{client}     the copy time of each run finished since the service started
                                              (histogram; failed and cancelled runs: fastzero_runs_finished_total)
    fastzero_runs_finished_total{status}      runs that finished since the service started (counter)
    fastzero_sse_streams                      event streams open now (and the cap: fastzero_sse_streams_max)
    fastzero_event_subscribers                the event bus's subscribers (streams, and readers inside the service)
    fastzero_events_published_total           events published since the service started
    fastzero_events_dropped_total             events a lagging subscriber's live queue let go: each is read
                                              again from the database, so no stream misses one
    process_*                                 the service process (CPU, memory, open files)

Runs by status and the queue are read when scraped; the histogram follows the `done` events (a
listener of the event bus: no thread, no subscriber). The registry is the app's own (not the
global one), so two apps in one process never share a series. Reads are open, like the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from lab.domain.run import STATUSES
from lab.service.manager import Manager

router = APIRouter(tags=["health"])
log = logging.getLogger("app.metrics")

# Copy times span a 1 MiB bandwidth-bound copy (a few ms) to the talk's rows (seconds) and long
# sweeps' 1 GiB rows with delays (minutes).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _Now(Collector):
    """The figures read at each scrape, from the manager and the app's stream gate."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        manager = self.metrics.manager
        if manager is None:
            return
        m = manager.metrics()
        runs = GaugeMetricFamily("fastzero_runs", "Runs in each status, over the whole history", labels=["status"])
        for status in STATUSES:
            runs.add_metric([status], m["runs"].get(status, 0))
        yield runs
        yield GaugeMetricFamily("fastzero_queue_depth", "Runs waiting in the queue", value=m["queued"])
        yield GaugeMetricFamily("fastzero_queue_size", "Runs the queue holds at most (LAB_QUEUE_SIZE)",
                                value=m["queue_size"])
        yield GaugeMetricFamily("fastzero_running", "Runs being measured now", value=m["running"])
        yield GaugeMetricFamily("fastzero_event_subscribers", "Subscribers of the event bus", value=m["subscribers"])
        yield CounterMetricFamily("fastzero_events_published", "Events published since the service started",
                                  value=m["events_published"])
        yield CounterMetricFamily("fastzero_events_dropped", "Events a lagging subscriber's live queue let go (each "
                                  "read again from the database: no stream misses one)", value=m["events_dropped"])
        streams = self.metrics.streams
        if streams is not None:
            yield GaugeMetricFamily("fastzero_sse_streams", "Event streams (SSE) open now", value=streams.open)
            yield GaugeMetricFamily("fastzero_sse_streams_max", "Event streams this service takes (LAB_MAX_STREAMS)",
                                    value=streams.cap)


class Metrics:
    """The app's registry and the thread that follows finished runs into the histogram."""

    def __init__(self, streams: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.streams = streams
        self.manager: Manager | None = None
        self.durations = Histogram("fastzero_run_duration_seconds", "Copy time of each succeeded run since the "
                                   "service started", ["client"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.finished = Counter("fastzero_runs_finished", "Runs that finished since the service started",
                                ["status"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.registry.register(_Now(self))

    def start(self, manager: Manager) -> None:
        self.manager = manager
        manager.on_event(self._event)  # from now on: the history is in fastzero_runs

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.on_event(self._event, stop=True)

    def _event(self, ev: Any) -> None:
        """In the publishing thread: only a finished run's event is read (its JSON parsed once)."""
        if ev.type == "done":
            self.observe(ev.data.get("run") or {})

    def observe(self, run: dict[str, Any]) -> None:
        status = str(run.get("status") or "unknown")
        self.finished.labels(status).inc()
        duration = run.get("duration_s")
        if status == "succeeded" and isinstance(duration, int | float):
            self.durations.labels(str(run.get("client") or "unknown")).observe(duration)

    def text(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text format 0.0.4 (prometheus_client)",
          "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    """The service's figures for Prometheus: runs by status, queue depth, run duration histogram, SSE
    streams and event subscribers, events published and dropped, the process (see app/api/metrics.py)."""
    return Response(request.app.state.metrics.text(), media_type=CONTENT_TYPE_LATEST)
