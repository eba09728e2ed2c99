"""The request-count x delay model: what a copy should cost on a sleep-bound server.

Each backend request sleeps its delay in the delay filter; a client with one request in
flight pays them in series, so the sum is the prediction. A parallel client overlaps them:
for it the serial sum is an upper bound, and the ratio shows what parallelism bought.
"""

from __future__ import annotations

from lab.domain.counts import BackendCounts
from lab.domain.spec import ServerSpec


def predict_seconds(spec: ServerSpec, backend: BackendCounts) -> float:
    ms = backend.write_ops * spec.delay_write + backend.zero_ops * spec.delay_zero
    return round(ms / 1000.0, 6)


def model_kind(parallel: bool) -> str:
    return "serial-upper-bound" if parallel else "serial"
