"""Parsing and formatting of sizes and delays, shared by the CLI, the API and the core.

Sizes use binary units (k = KiB, M = MiB, ...), as nbdkit and qemu-img do.
Delays are kept as milliseconds (float) internally.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_DELAY_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001, "ns": 0.000001}

_AMOUNT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")  # a number, then a unit (or none)


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


def _spelling(units: dict[str, object], digits: int) -> str:
    """A number and one of `units`, as a JSON Schema regex (no flags there, so case is spelled out)."""
    names = sorted((u for u in units if u), key=len, reverse=True)
    return rf"\d{{1,{digits}}}(\.\d{{1,6}})?\s*({'|'.join(_any_case(u) for u in names)})?"


# What parse_size / parse_delay accept, for API schemas (generated from the unit tables above).
SIZE_SPELLING = _spelling(_SIZE_UNITS, 15)
SIZE_PATTERN = rf"^\s*{SIZE_SPELLING}\s*$"
DELAY_PATTERN = rf"^\s*{_spelling(_DELAY_UNITS, 12)}\s*$"


def _amount(text: str, units: dict[str, int] | dict[str, float], what: str, spellings: str, names: str) -> float:
    """`text` (a number and one of `units`, any case) times its unit; errors name `what` it should be."""
    m = _AMOUNT_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a {what}: use {spellings}")
    unit = m.group(2).lower()
    if unit not in units:
        raise ValueError(f"{text!r}: unknown {what} unit {m.group(2)!r} (use {names})")
    return float(m.group(1)) * units[unit]


def parse_size(value: int | str) -> int:
    """Return a size in bytes from an integer or a string such as '256k' or '100M'."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '16M', not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative (got {value})")
        return value
    if not isinstance(value, str):
        raise ValueError(f"a size must be an integer or a string like '16M' (got {type(value).__name__})")
    result = _amount(value, _SIZE_UNITS, "size", "bytes or a unit such as 512k, 16M, 1G", "k, M, G or T")
    if not math.isfinite(result) or result != int(result):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(result)


def parse_delay(value: int | float | str) -> float:
    """Return a delay in milliseconds from a number (ms) or a string such as '20ms' or '0.5s'."""
    if isinstance(value, bool):
        raise ValueError("a delay must be a number of milliseconds or a string like '20ms', not a boolean")
    if isinstance(value, int | float):
        ms = float(value)
    elif isinstance(value, str):
        ms = _amount(value, _DELAY_UNITS, "delay", "a number with ms or s, such as 20ms or 0.5s", "ms or s")
    else:
        raise ValueError(f"a delay must be a number or a string like '20ms' (got {type(value).__name__})")
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"delay must be a finite, non-negative time (got {value!r})")
    if ms != int(ms):
        # nbdkit's delay filter counts whole milliseconds.
        raise ValueError(f"delay must be a whole number of milliseconds (got {value!r})")
    return float(ms)


def format_size(n: int) -> str:
    """Shortest exact binary-unit spelling: 1048576 -> '1M', 262144 -> '256k', 1000 -> '1000'."""
    for suffix, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n and n % mult == 0:
            return f"{n // mult}{suffix}"
    return str(n)


def format_delay(ms: float) -> str:
    """nbdkit's delay filter takes whole 'NNms'."""
    return f"{int(ms)}ms"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def format_interval(expected_s: float | None, low_s: float | None, high_s: float | None) -> str:
    """An expectation with its interval, "3.3 s (3.1-3.5)": two significant digits at least, more (up
    to 4 decimals) until the bounds differ from the middle. static/js/format.js `interval` spells it
    alike (with an en dash)."""
    if expected_s is None:
        return "-"
    if low_s is None or high_s is None:
        return f"{expected_s:.2f} s"
    digits = max(1, 1 - math.floor(math.log10(expected_s))) if expected_s > 0 else 1
    while digits < 4 and len({f"{v:.{digits}f}" for v in (low_s, expected_s, high_s)}) < 3:
        digits += 1
    return f"{expected_s:.{digits}f} s ({low_s:.{digits}f}-{high_s:.{digits}f})"
