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
from functools import lru_cache
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
    if len(" ".join(raw.split())) > MAX_NAME:  # as typed (NFC may compose or, rarely, expand)
        raise SpecError(field, f"at most {MAX_NAME} characters")
    if any(unicodedata.category(c) in FORBIDDEN for c in name):
        raise SpecError(field, "must not contain control or format characters")
    return name


# What a name may not hold: control (Cc), format (Cf: bidi overrides, zero-width joiners, soft
# hyphens) and surrogate (Cs) characters. Unassigned and private-use code points are left to fonts.
FORBIDDEN = frozenset({"Cc", "Cf", "Cs"})


@lru_cache(maxsize=1)
def name_pattern() -> str:
    """The JSON Schema pattern of a name: clean_name's character rule and at least one character
    that is not a space, made from the same Unicode tables (so a schema-valid name is accepted)."""
    ranges: list[list[int]] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # no JSON text holds a lone surrogate (the API refuses one with 422)
        if unicodedata.category(chr(cp)) in FORBIDDEN:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])

    def char(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)

    bad = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[^{bad}]*[^\\s{bad}][^{bad}]*$"


# Letters that look like Latin ones (Unicode TR39's confusables for Cyrillic and Greek, the ones a
# keyboard or a copy-paste hands a student), folded before the case, so "Ana" with a Cyrillic A is "ana":
# Latin letter -> the Cyrillic and Greek letters (and Latin script g) that look like it.
_LOOKALIKE_OF = {
    "A": "\u0391\u0410", "a": "\u03b1\u0430", "B": "\u0392\u0412", "b": "\u0432\u044c", "C": "\u0421",
    "c": "\u0441", "D": "\u0500", "d": "\u0501", "E": "\u0395\u0415", "e": "\u03b5\u0435", "g": "\u0261",
    "H": "\u0397\u041d", "h": "\u043d\u04bb", "I": "\u0399\u0406\u04c0", "i": "\u03b9\u0456", "J": "\u0408",
    "j": "\u0458", "K": "\u039a\u041a", "k": "\u03ba\u043a", "l": "\u04cf", "M": "\u039c\u041c", "m": "\u043c",
    "N": "\u039d", "n": "\u03b7", "O": "\u039f\u041e", "o": "\u03bf\u043e", "P": "\u03a1\u0420",
    "p": "\u03c1\u0440", "Q": "\u051a", "q": "\u051b", "S": "\u0405", "s": "\u0455", "T": "\u03a4\u0422",
    "t": "\u03c4\u0442", "u": "\u03c5", "v": "\u03bd", "W": "\u051c", "w": "\u03c9\u051d", "X": "\u03a7\u0425",
    "x": "\u03c7\u0445", "Y": "\u03a5\u0423\u04ae", "y": "\u03b3\u0443\u04af", "Z": "\u0396",
}
_LOOKALIKES = str.maketrans({c: latin for latin, cs in _LOOKALIKE_OF.items() for c in cs})


def canonical(name: str) -> str:
    """Who a display name is, for telling students apart: NFKC, accents dropped, Cyrillic and Greek
    look-alikes folded to Latin, case-folded, anything but letters and digits dropped (spaces too).
    "Ana", "ana", "Ana." and "Ana" with a Cyrillic A are one student; "" when nothing is left."""
    text = unicodedata.normalize("NFKC", name).translate(_LOOKALIKES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFKC", text.translate(_LOOKALIKES)).casefold()
    return "".join(c for c in text if c.isalnum())


def clean_student(raw: Any, field: str = "student") -> tuple[str, str]:
    """(display, canonical) of a name a student typed; SpecError when no letter or digit is left."""
    display = clean_name(raw, field)
    key = canonical(display)
    if not key:
        raise SpecError(field, "must contain a letter or a digit")
    return display, key


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
