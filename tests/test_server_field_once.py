"""Adding a server field is one line in lab.domain.spec.ServerSpec: the proof.

A copy of the code gets one hypothetical field (`frobnicate`, a size) added to ServerSpec and
nothing else; in that copy the field must show up in the API's request schema (with bounds from
the settings), `lab run --help`, GET /api/v1/config (with its layer), the run form, POST
/api/v1/validate (parsed, bounded, a bad value named by its loc, and named among the other wrong
fields of the same form, one problem each), the CLI's error naming `--frobnicate`, and the CSV columns.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = "    def to_dict(self) -> dict[str, Any]:\n        return self.model_dump()"
FIELD = ('    frobnicate: Annotated[int, ServerField(\n'
         '        "size", "a hypothetical field", low=4096, high="max_maxdata", multiple=512,\n'
         '        layer="backend")] = 65536\n\n')

PROBE = r'''
import io, json
from contextlib import redirect_stderr, redirect_stdout
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
from lab.cli import commands
from lab.service import export

out = {}
app = create_app(Settings(data_dir="data", max_maxdata="1M"))
with TestClient(app, base_url="http://localhost") as c:
    schemas = c.get("/openapi.json").json()["components"]["schemas"]
    # every variant of the server union (app/schemas/serverunion.py) and a sweep's plain server fields
    props = [schemas[r["$ref"].rsplit("/", 1)[1]]["properties"] for r in schemas["ServerFields"]["oneOf"]]
    props.append(schemas["SweepServerFields"]["properties"])
    same = all(p.get("frobnicate") == props[0].get("frobnicate") for p in props)
    out["schema"] = props[0].get("frobnicate") if same else "differs between the variants"
    cfg = c.get("/api/v1/config").json()
    out["config"] = [f for f in cfg["server_fields"] if f["name"] == "frobnicate"]
    out["form"] = 'id="f-frobnicate"' in c.get("/").text
    out["valid"] = c.post("/api/v1/validate", json={"frobnicate": "128k"}).json()["server"].get("frobnicate")
    bad = c.post("/api/v1/validate", json={"frobnicate": "2M"})
    out["bad"] = [bad.status_code, bad.json()["errors"][0]["loc"]]
    # every wrong field at once, the new one among them, each named with its value as sent
    both = c.post("/api/v1/validate", json={"size": "abc", "frobnicate": "", "kind": "qemu-nbd", "storage": "nope"})
    out["each"] = [[e["loc"], e.get("value"), e["message"]] for e in both.json()["errors"]]
help_text = io.StringIO()
with redirect_stdout(help_text):
    try:
        commands.main(["run", "--help"])
    except SystemExit:
        pass
out["help"] = [ln.strip() for ln in help_text.getvalue().splitlines() if "frobnicate" in ln]
err = io.StringIO()
with redirect_stderr(err):
    out["cli_rc"] = commands.main(["run", "--frobnicate", "1"])
out["cli_err"] = err.getvalue().strip()
out["csv"] = "server.frobnicate" in export.COLUMNS
print(json.dumps(out))
'''


def test_a_field_added_to_the_model_alone_reaches_every_door(tmp_path: Path) -> None:
    for folder in ("lab", "app", "templates", "static", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec_py = tmp_path / "lab" / "domain" / "spec.py"
    text = spec_py.read_text()
    assert ANCHOR in text, "ServerSpec.to_dict moved: update the anchor of this test"
    spec_py.write_text(text.replace(ANCHOR, FIELD + ANCHOR))
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path),
                            "TMPDIR": str(tmp_path)})  # the default runtime dir too: nothing left in /tmp
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    ints = [s for s in out["schema"]["anyOf"][0]["anyOf"] if s["type"] == "integer"]
    assert (ints[0]["minimum"], ints[0]["maximum"], ints[0]["multipleOf"]) == (4096, 1 << 20, 512)
    assert out["config"][0]["default_text"] == "64k" and out["config"][0]["max_text"] == "1M"
    assert out["form"] is True
    assert out["valid"] == 131072
    assert out["bad"] == [422, ["body", "frobnicate"]]
    each = {loc[1]: (value, message) for loc, value, message in out["each"]}
    assert set(each) == {"size", "frobnicate", "storage"}, out["each"]
    assert each["frobnicate"] == ("", "frobnicate is empty: type one, such as 64k.")
    assert each["size"][0] == "abc" and each["storage"][0] == "nope"
    assert out["config"][0]["layer"] == "backend"
    assert any(ln.startswith("--frobnicate") for ln in out["help"]), out["help"]
    assert out["cli_rc"] == 2 and out["cli_err"].startswith("lab: error: --frobnicate: must be between 4k and 32M")
    assert out["csv"] is True
