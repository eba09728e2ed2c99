"""How long a queued job should hold its worker, for `estimated_start_s` (lab.service.scheduler).

A run of the same client, depth and server fields finished before is the best guess: the median
time its recent runs held a worker (setup + copy + verify). Without one, a floor from the request
x delay model on the source's layout (every data byte written in maxdata pieces, one zero per hole)
plus a start-up allowance; CPU-bound runs without delays at a modest copy rate. An estimate, said
as one: it orders nothing, it only tells a student roughly when.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from lab.domain.layout import pattern_counts
from lab.domain.run import Run
from lab.domain.spec import ServerSpec

# A run's own CPU (its server, its client, the lab's watchers), measured here on runs of 64 x 256 KiB
# writes and 64 zeroes at 1, 5 and 20 ms delays: 0.17-0.18 s whatever the delay, most of it the start
# of the server and the client; the rest about half a millisecond per request.
START_CPU_S = 0.12
REQUEST_CPU_S = 0.0005
START_UP_S = 0.6  # image, server and client start, and the verify of a small copy (measured: 0.3-0.8 s)
BYTES_PER_S = 400e6  # a copy without delays, roughly, on a small machine
OTHER_JOB_S = 30.0  # a probe or a calibration point
SAMPLES = 5  # recent runs the median is taken over
CACHE_S = 30.0


def floor_s(spec: ServerSpec) -> float:
    """The request x delay floor of a copy of `spec`'s source, plus start-up (see the module doc)."""
    try:
        extents, data, writes = pattern_counts(spec.pattern, spec.size, spec.maxdata)
    except ValueError:
        return START_UP_S
    holes = extents + 1 if data < spec.size else 0
    sleeps = (writes * spec.delay_write + holes * spec.delay_zero) / 1000.0
    return round(START_UP_S + sleeps + data / BYTES_PER_S, 3)


def requests(spec: ServerSpec) -> int:
    """Backend requests a copy of `spec`'s source makes, at least: its data in maxdata pieces, a zero per hole."""
    try:
        extents, data, writes = pattern_counts(spec.pattern, spec.size, spec.maxdata)
    except ValueError:
        return 0
    return writes + (extents + 1 if data < spec.size else 0)


def held_s(row: dict[str, Any]) -> float | None:
    """How long a finished run held its worker."""
    parts = [row.get("setup_s"), row.get("duration_s"), row.get("verify_s")]
    return sum(p for p in parts if p) if row.get("duration_s") else None


class Estimator:
    """estimate(job) for the scheduler; `recent(client)` gives the newest finished runs of a client
    (the store's), looked at once per key and CACHE_S."""

    def __init__(self, recent: Callable[[str], list[dict[str, Any]]]) -> None:
        self._recent = recent
        self._cache: dict[str, tuple[float, float | None, float | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(run: Run) -> str:
        return f"{run.client}/{run.queue_depth}/{run.server.model_dump_json()}"

    def learned(self, run: Run) -> None:
        """A run finished: the next estimate of its kind looks at the history again."""
        with self._lock:
            self._cache.pop(self._key(run), None)

    def _history(self, run: Run) -> tuple[float | None, float | None]:
        """(median time held, median own cores) of the recent runs like `run`, None where there are none."""
        key = self._key(run)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or now - hit[0] > CACHE_S:
            same = [r for r in self._recent(run.client)
                    if r.get("status") == "succeeded" and r.get("queue_depth", 1) == run.queue_depth
                    and r.get("server") == run.server.to_dict()][:SAMPLES]
            times = [t for r in same if (t := held_s(r))]
            cores = [c for r in same if (c := (r.get("contention") or {}).get("own_cores")) is not None]
            hit = (now, statistics.median(times) if times else None, statistics.median(cores) if cores else None)
            with self._lock:
                self._cache[key] = hit
        return hit[1], hit[2]

    def __call__(self, job: Any) -> float:
        run: Run | None = getattr(job, "run", None)
        if run is None:
            return OTHER_JOB_S
        held, _cores = self._history(run)
        return held if held is not None else floor_s(run.server)

    def cores(self, job: Any) -> float:
        """The CPU a job should use while it runs, in cores: a CPU-bound one a whole core; a run like
        earlier ones what they used (their `own_cores`); else its start and requests' CPU over its time."""
        run: Run | None = getattr(job, "run", None)
        if getattr(job, "alone", False) or run is None:
            return 1.0
        _held, cores = self._history(run)
        if cores is not None:
            return cores
        took = max(self(job), 0.1)
        return round(min(1.0, (START_CPU_S + requests(run.server) * REQUEST_CPU_S) / took), 3)
