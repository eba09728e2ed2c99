"""A request body read once before routing: UTF-8 JSON text (400 otherwise), and no lone surrogate.

JSON may carry `"\\ud800"`: an escape that decodes to half of a UTF-16 pair, which is not a
character, cannot be stored as UTF-8 text and cannot be echoed back in a UTF-8 answer. Such a
value is refused as a 422 naming where it is (RFC 8259 8.2 leaves its meaning undefined), before
any route sees it. A pair (`"\\ud83d\\ude00"`) is one character and passes.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A \uD800-\uDFFF escape in the JSON text: only then can a string hold a lone surrogate
# (strict UTF-8 decoding refuses an encoded one).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE = re.compile("[\ud800-\udfff]")


def escaped(text: str) -> str:
    """`text` with every lone surrogate written as its escape (\\ud800): safe to encode as UTF-8."""
    if _LONE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class BodyProblem(Exception):
    """Why a body is refused: code (bad-request or invalid-request), detail, and the errors[] items."""

    def __init__(self, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.errors = code, detail, errors or []


def check(body: bytes) -> None:
    """Raise BodyProblem when `body` (non-empty) is not UTF-8 JSON text, or holds a lone surrogate."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyProblem("bad-request", f"the body is not UTF-8 text (byte {e.start}): send JSON") from None
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise BodyProblem("bad-request", "the body is not JSON this service reads: nested too deeply") from None
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise BodyProblem("bad-request", f"the body is not JSON: {msg}{where}") from None
    if _SURROGATE_ESCAPE.search(text) is None:
        return
    found = _first_lone(value, ["body"])
    if found is not None:
        loc, what, sent = found
        message = f"{what} holds a lone surrogate ({_LONE.findall(sent)[0].encode('unicode_escape').decode()}): " \
                  "half of a UTF-16 pair is not a character; send the pair or the character itself"
        raise BodyProblem("invalid-request", f"{'.'.join(map(str, loc))}: {message}", [
            {"loc": loc, "message": message, "code": "string_unicode", "value": escaped(sent)}])


def _not_json(name: str) -> Any:
    """NaN and Infinity: Python's json reads them, JSON (RFC 8259) has no such numbers."""
    raise ValueError(f"{name} is not a JSON number")


def _first_lone(node: Any, loc: list[str | int]) -> tuple[list[str | int], str, str] | None:
    """(where, "the text" or "a key", the text) of the first string holding a lone surrogate."""
    stack: list[tuple[Any, list[str | int]]] = [(node, loc)]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, str):
            if _LONE.search(node):
                return loc, "the text", node
        elif isinstance(node, dict):
            for key in node:
                if _LONE.search(key):
                    return loc, "a key", key
            stack += [(v, [*loc, k]) for k, v in reversed(node.items())]
        elif isinstance(node, list):
            stack += [(v, [*loc, i]) for i, v in reversed(list(enumerate(node)))]
    return None
