"""Shape as a review note, not a wall: functions in lab/ and app/ above radon complexity 15 and
classes above 200 lines are printed at the end of a test session ("shape notes", tests/conftest.py)
or by `python tests/test_code_shape.py`, for a reviewer to read. Code is not bent to a number: a
class cut at 199 lines, or a helper moved out of the class whose privates it needs, reads worse
than the long class (issue 23)."""

from __future__ import annotations

import ast

from radon.complexity import cc_visit
from radon.visitors import Function

from testkit import REPO

MAX_COMPLEXITY = 15
MAX_CLASS_LINES = 200


def _sources() -> list[tuple[str, str]]:
    files = sorted(p for d in ("lab", "app") for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)
    return [(str(p.relative_to(REPO)), p.read_text()) for p in files]


def _complexity() -> dict[str, int]:
    out = {}
    for name, text in _sources():
        for block in cc_visit(text):
            for b in [block, *getattr(block, "methods", [])]:
                if isinstance(b, Function):  # a class's own score is its methods', counted apart
                    out[f"{name}:{b.classname}.{b.name}" if b.classname else f"{name}:{b.name}"] = b.complexity
    return out


def _class_lines() -> dict[str, int]:
    out = {}
    for name, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                out[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def notes() -> list[str]:
    scores, lines = _complexity(), _class_lines()
    return [*(f"{k}: complexity {v} (over {MAX_COMPLEXITY})" for k, v in sorted(scores.items()) if v > MAX_COMPLEXITY),
            *(f"{k}: {v} lines (over {MAX_CLASS_LINES})" for k, v in sorted(lines.items()) if v > MAX_CLASS_LINES)]


def test_the_measure_sees_a_complex_function():
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(MAX_COMPLEXITY + 1))
    (block,) = cc_visit(f"def f(x):\n{body}    return -1\n")
    assert isinstance(block, Function) and block.complexity > MAX_COMPLEXITY


if __name__ == "__main__":
    print("\n".join(notes()) or "nothing to note")
