"""Every setting and every server field is documented (Datasette's rule), and read only where declared.

docs/settings.md is generated from lab/config.py and lab/domain/spec.py by scripts/settings_doc.py; adding a
setting or a field without regenerating it (or with an empty description) fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lab.config import Settings
from lab.domain import spec

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


# Where the environment may be read: the drivers, each for a reason. Everything else in lab/ and
# app/ is handed what it needs (lab.config.Settings -> lab.host.places.Core/Places, Limits, ManagerConfig).
ENV_READERS = {
    ("lab/cli/commands.py", "*"): "the `lab` driver builds Settings() from the environment",
    ("lab/config.py", "*"): "Settings itself (pydantic-settings reads LAB_*)",
    ("testkit/__init__.py", "LiveService.start"): "starts `lab serve` with an environment: the subprocess's driver",
    ("lab/host/procs.py", "child_env"): "passes the environment on to nbdkit and the clients (minus tokens); "
                                   "it reads no setting",
}

ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _env_reads(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of every os.environ / os.getenv / os.putenv use in a module."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            if (isinstance(child, ast.Attribute) and child.attr in ENV_NAMES
                    and isinstance(child.value, ast.Name) and child.value.id == "os"):
                found.append((scope, child.lineno))
            if isinstance(child, ast.ImportFrom) and child.module == "os" and any(
                    a.name in ENV_NAMES for a in child.names):
                found.append((scope, child.lineno))
            visit(child, inner)

    visit(tree, "")
    return found


def test_only_the_drivers_read_the_environment() -> None:
    reads = []
    for folder in ("lab", "app"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            for scope, line in _env_reads(f):
                if (rel, "*") not in ENV_READERS and (rel, scope) not in ENV_READERS:
                    reads.append(f"{rel}:{line} ({scope or 'module level'})")
    assert not reads, ("the core reads the environment; hand the value down from lab.config.Settings "
                       f"(lab.host.places.Core/Places, Limits, ManagerConfig) instead: {reads}")


def test_the_environment_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan above is only as good as its matcher: every spelling is caught, with its scope."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom os import getenv\nX = os.environ.get('LAB_X')\n"
                 "class C:\n    def m(self):\n        return os.getenv('LAB_Y')\n"
                 "def f():\n    return dict(os.environ)\n")
    assert _env_reads(f) == [("", 2), ("", 3), ("C.m", 6), ("f", 8)]
