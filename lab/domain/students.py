"""Students and their predictions: who ran what, and what they expected before it ran.

A student is a short display name typed once (no password: the token, when set, still guards
the teacher's controls). Runs and sweeps carry it; a per-student limit on unfinished runs
keeps one student from filling the queue for everyone.

A prediction is a guess made before a run (or before an act of the talk): any of the copy
time in seconds and the backend write and zero requests. It is stored with the run and
exported with it; the pages put it beside the measurement and the model.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from lab.domain.spec import SpecError

MAX_NAME = 40
PREDICTION_FIELDS = ("duration_s", "write_ops", "zero_ops")
MAX_DURATION_S = 86_400.0
MAX_OPS = 10_000_000


def clean_name(raw: Any, field: str = "student") -> str:
    """The display name as stored: trimmed, inner whitespace collapsed, NFC; 1-40 printable characters."""
    if not isinstance(raw, str):
        raise SpecError(field, "must be a string (a short display name)")
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not name:
        raise SpecError(field, "must not be empty")
    if len(name) > MAX_NAME:
        raise SpecError(field, f"at most {MAX_NAME} characters")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise SpecError(field, "must not contain control or format characters")
    return name


def clean_prediction(raw: Any, field: str = "prediction") -> dict[str, float]:
    """A guess with any of duration_s (seconds), write_ops and zero_ops (whole numbers), at least one."""
    if not isinstance(raw, dict):
        raise SpecError(field, f"must be an object with any of {', '.join(PREDICTION_FIELDS)}")
    unknown = sorted(set(raw) - set(PREDICTION_FIELDS))
    if unknown:
        raise SpecError(f"{field}.{unknown[0]}", f"unknown field; use {', '.join(PREDICTION_FIELDS)}")
    out: dict[str, float] = {}
    for key in PREDICTION_FIELDS:
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise SpecError(f"{field}.{key}", "must be a number")
        if key == "duration_s":
            if not 0 <= value <= MAX_DURATION_S:
                raise SpecError(f"{field}.{key}", f"must be between 0 and {MAX_DURATION_S:g} seconds")
            out[key] = round(float(value), 3)
        else:
            if value != int(value) or not 0 <= value <= MAX_OPS:
                raise SpecError(f"{field}.{key}", f"must be a whole number between 0 and {MAX_OPS}")
            out[key] = int(value)
    if not out:
        raise SpecError(field, f"give at least one of {', '.join(PREDICTION_FIELDS)}")
    return out
