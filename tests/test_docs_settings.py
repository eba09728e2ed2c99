"""Every setting and every server field is documented (Datasette's rule), and read only where declared.

docs/settings.md is generated from lab/config.py and lab/spec.py by scripts/settings_doc.py; adding a
setting or a field without regenerating it (or with an empty description) fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lab import spec
from lab.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _docs() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_settings_page_is_what_the_models_say() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings_doc.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_every_setting_and_server_field_is_documented() -> None:
    docs = _docs()
    missing = [f"LAB_{n.upper()}" for n in Settings.model_fields if f"`LAB_{n.upper()}`" not in docs]
    missing += [n for n in spec.SERVER_FIELDS if f"`{n}`" not in docs]
    assert not missing, f"not in README.md or docs/*.md: {missing} (run python scripts/settings_doc.py)"
    undescribed = [n for n, f in Settings.model_fields.items() if not f.description]
    undescribed += [n for n, f in spec.SERVER_FIELDS.items() if not f.help]
    assert not undescribed, f"declared without the sentence that documents it: {undescribed}"


def test_every_environment_variable_the_code_names_is_a_declared_setting() -> None:
    declared = {f"LAB_{n.upper()}" for n in Settings.model_fields}
    named = set()
    for folder in ("lab", "app"):
        for f in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r"\bLAB_[A-Z][A-Z0-9_]*\b", f.read_text()))
    assert named <= declared, f"LAB_ names in lab/ or app/ that lab.config.Settings does not declare: " \
                              f"{sorted(named - declared)}"
