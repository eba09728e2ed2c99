"""The words the service and the pages share, defined once (lab.domain.run) and served to the JS in
GET /api/config's `vocabulary` (and in every page's embedded config): run statuses and which of them are
final, the model's verdicts and the parts of its breakdown in words, the event stream's event types."""

from __future__ import annotations

from typing import Any

from lab.domain.run import ACTIVE, FINAL, PART_WORDS, STATUSES, VERDICT_WORDS

EVENT_TYPES = ("state", "progress", "done", "sweep", "sweep_done", "server")


def vocabulary() -> dict[str, Any]:
    return {"run_statuses": list(STATUSES), "active_statuses": list(ACTIVE),
            "final_statuses": list(FINAL), "model_verdicts": dict(VERDICT_WORDS),
            "model_parts": dict(PART_WORDS), "event_types": list(EVENT_TYPES)}
