"""Regular expressions for whole numbers within bounds, so the OpenAPI document can say which
unit strings ("16M", "20ms") this instance accepts: exactly those, no more, no fewer."""

from __future__ import annotations

# The unit suffixes of the API's spellings (lab.domain.spec API_SIZE_PATTERN, API_DELAY_PATTERN), as regex.
SIZE_UNITS = {"[kK]": 1 << 10, "[mM]": 1 << 20, "[gG]": 1 << 30}
DELAY_UNITS = {"ms": 1, "s": 1000}


def _same_length(a: str, b: str) -> list[str]:
    """Alternatives matching every number from a to b (strings of one length, a <= b)."""
    if a == b:
        return [a]
    if len(a) == 1:
        return [f"[{a}-{b}]"]
    n = len(a) - 1
    if a[0] == b[0]:
        return [a[0] + x for x in _same_length(a[1:], b[1:])]
    if a[1:] == "0" * n and b[1:] == "9" * n:
        return [f"[{a[0]}-{b[0]}][0-9]{{{n}}}"]
    out = [a[0] + x for x in _same_length(a[1:], "9" * n)]
    if int(a[0]) + 1 <= int(b[0]) - 1:
        out.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}][0-9]{{{n}}}")
    out += [b[0] + x for x in _same_length("0" * n, b[1:])]
    return out


def number_range(lo: int, hi: int) -> str | None:
    """A regex group matching the decimal integers lo..hi (no leading zeros); None when empty."""
    lo = max(lo, 0)
    if lo > hi:
        return None
    parts: list[str] = []
    while lo <= hi:
        top = min(hi, 10 ** len(str(lo)) - 1)
        parts += _same_length(str(lo), str(top))
        lo = top + 1
    return "(?:" + "|".join(parts) + ")"


def with_units(lo: float, hi: float, units: dict[str, float], step: float = 1) -> str:
    """^...$ for `<n><unit>` strings whose value n * unit lies in [lo, hi] (and is a multiple of `step`:
    true of every unit here, as each is a multiple of it)."""
    alts = []
    for suffix, factor in units.items():
        r = number_range(int(-(-lo // factor)), int(hi // factor))
        if r is not None:
            alts.append(r + suffix)
    return "^(?:" + "|".join(alts) + ")$" if alts else "^(?!)$"
