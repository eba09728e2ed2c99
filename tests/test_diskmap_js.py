"""The page replays a run's trace with the service's painting rule: static/js/cells.js's Cells under
Node against lab.nbd.diskmap.Cells, on the talk's layouts and on random traces."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.nbd import diskmap

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
KINDS = ("data", "zero-write", "prezero-write", "zero", "prezero", "trim", "refused", "status")


def _traces() -> list[tuple[int, list[dict]]]:
    out = []
    for size in (32 * MiB, 64 * MiB, 128 * MiB):  # the block-status act: data, then a zero per 64 KiB hole
        ext = 64 * 1024
        out.append((size, [{"kind": k, "offset": o + (ext if k == "zero" else 0), "count": ext}
                           for o in range(0, size, 2 * ext) for k in ("data", "zero")]))
    rnd = random.Random(22)
    for _ in range(20):
        size = rnd.choice((8 * MiB, 100 * MiB, 1 << 30))
        rows = []
        for _ in range(rnd.randint(1, 60)):
            off = rnd.randrange(0, size)
            rows.append({"kind": rnd.choice(KINDS), "offset": off, "count": rnd.randint(1, size - off)})
        out.append((size, rows))
    return out


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's module")
def test_js_cells_paint_like_the_service(tmp_path: Path) -> None:
    module = tmp_path / "cells.mjs"
    module.write_text((ROOT / "static" / "js" / "cells.js").read_text())
    traces = _traces()
    (tmp_path / "traces.json").write_text(json.dumps(traces))
    script = (f"import {{ Cells }} from {json.dumps(module.as_uri())};\n"
              f"import {{ readFileSync }} from 'node:fs';\n"
              f"const traces = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'traces.json'))}, 'utf8'));\n"
              "console.log(JSON.stringify(traces.map(([size, rows]) => { const c = new Cells(size);"
              " for (const r of rows) c.paint(r); const l = c.layers();"
              " return [l.cells.join(''), l.under.join(''), l.marks.join('')]; })));")
    r = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    for (size, rows), got in zip(traces, js, strict=True):
        assert got == list(diskmap.paint_cells(rows, size).layers()), size
