"""The page spells sizes, delays and byte counts exactly as lab.domain.units does (it parses none itself).

static/js/format.js only formats numbers the service normalised; this runs its size(), delay()
and bytes() under Node beside lab.domain.units' format_size, format_delay and human_bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.domain.run import PART_WORDS, VERDICT_WORDS
from lab.domain.units import format_delay, format_interval, format_size, human_bytes
from lab.domain.vocabulary import vocabulary

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0, 512, 1000, 4096, 262144, 1 << 20, 100 << 20, 3 << 30, 1 << 40, 1536 * 1024, (1 << 30) + 512]
DELAYS = [0.0, 1.0, 5.0, 20.0, 1000.0]
BYTES = [0, 1, 1023, 1024, 1536, 10 * 1024 * 1024, 123456789, 5 << 30, 3 << 40]
INTERVALS = [[3.27, 3.1, 3.44], [0.0644, 0.064, 0.0694], [8.3, 8.29, 8.33], [12.23, 12.1, 12.4], [0.1503, 0.02, 0.31],
             [1.0, None, None]]


# The page's embedded config (templates/base.html) carries the vocabulary; Node has no document of its own.
_DOCUMENT = ("globalThis.document = {getElementById: () => ({textContent: "
             f"{json.dumps(json.dumps({'vocabulary': vocabulary()}))}}})}};")


def _page_modules(tmp_path: Path) -> Path:
    """format.js and what it imports, as ES modules Node loads; returns format.js's path."""
    for name in ("format.js", "vocabulary.js"):
        (tmp_path / name).write_text((ROOT / "static" / "js" / name).read_text())
    (tmp_path / "package.json").write_text('{"type": "module"}')
    return tmp_path / "format.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_js_formats_like_python(tmp_path: Path) -> None:
    module = _page_modules(tmp_path)
    script = (f"{_DOCUMENT}\nconst f = await import({json.dumps(module.as_uri())});\n"
              f"console.log(JSON.stringify({{size: {SIZES}.map(f.size), delay: {DELAYS}.map(f.delay), "
              f"bytes: {BYTES}.map(f.bytes), interval: {json.dumps(INTERVALS)}.map((a) => f.interval(...a))}}));")
    r = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert js["size"] == [format_size(n) for n in SIZES]
    assert js["delay"] == [format_delay(ms) for ms in DELAYS]
    assert js["bytes"] == [human_bytes(n) for n in BYTES]
    # an expectation's interval: the same digits, an en dash between the bounds on the page
    assert js["interval"] == [format_interval(*a).replace("-", "\u2013") for a in INTERVALS]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_a_verdict_is_said_in_the_domains_words(tmp_path: Path) -> None:
    module = _page_modules(tmp_path)
    runs = [{"model_verdict": v, "model_term": t} for v in VERDICT_WORDS for t in (None, *PART_WORDS)]
    script = (f"{_DOCUMENT}\nconst f = await import({json.dumps(module.as_uri())});\n"
              f"console.log(JSON.stringify({json.dumps(runs)}.map(f.outsideText)));")
    r = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    said = json.loads(r.stdout)
    for run, text in zip(runs, said, strict=True):
        if run["model_verdict"] == "within":
            assert text == ""
        else:
            assert text.startswith(VERDICT_WORDS[run["model_verdict"]])
            assert ("part most likely" in text) == (run["model_term"] is not None)
            assert run["model_term"] is None or PART_WORDS[run["model_term"]] in text
