"""The import contract (pyproject.toml [tool.importlinter], issue 23) holds, and it would catch a break.

Layers low to high: domain < config < host < nbd < measure < service < cli; lab/ never imports app/;
app/ reaches the core through the service facade only; no cycles between siblings. import-linter
(grimp) counts every import statement, function-level and TYPE_CHECKING ones too, so moving an
import into a function does not hide a cycle from it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under `root`, found there first (not through the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_contract_holds() -> None:
    assert LINT.exists(), f"{LINT} is missing: bash scripts/install.sh --dev installs import-linter"
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_every_ignored_import_still_exists() -> None:
    """pyproject's ignore_imports lists the violations still to untangle: one that is gone leaves the list."""
    gone = [line.strip("- ") for line in lint(ROOT).stdout.splitlines() if "No matches for ignored import" in line]
    assert not gone, "remove these from pyproject.toml's ignore_imports: " + "; ".join(gone)


SERVICE_PUBLIC = {"lab.service.manager", "lab.service.export", "lab.service.jobs"}  # see pyproject.toml


def test_every_service_module_is_public_or_closed_to_app() -> None:
    """A new lab.service module is either added to the public surface (here and in pyproject's comment)
    or forbidden to app/ (pyproject's app-through-facade contract): nobody forgets to decide."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    [facade] = [c for c in contracts if c["id"] == "app-through-facade"]
    closed = {m for m in facade["forbidden_modules"] if m.startswith("lab.service.")}
    modules = {f"lab.service.{p.stem}" for p in (ROOT / "lab" / "service").glob("*.py") if p.stem != "__init__"}
    modules |= {f"lab.service.{p.name}" for p in (ROOT / "lab" / "service").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert not closed & SERVICE_PUBLIC
    assert modules == closed | SERVICE_PUBLIC, (f"undecided: {sorted(modules - closed - SERVICE_PUBLIC)}; "
                                                f"gone: {sorted((closed | SERVICE_PUBLIC) - modules)}")


# What app/ may use of the Manager: its methods and the facade objects it hands out for this (history,
# idempotency, config); not the parts it is made of.
MANAGER_INSIDES = ("store", "pool", "bus", "scheduler", "sweeps", "servers", "faults", "retention", "reaper",
                   "machine")


def test_app_does_not_reach_into_the_manager() -> None:
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MANAGER_INSIDES and \
                    isinstance(node.value, ast.Name) and node.value.id == "manager":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: manager.{node.attr}")
    assert not found, "app/ reaches past the facade (add a Manager or History method):\n" + "\n".join(found)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages and the contract, copied: a planted import must not touch the real tree."""
    for name in ("lab", "app"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint(tmp_path).returncode == 0  # the copy passes as it is: the plant is what breaks it
    return tmp_path


def plant(path: Path, line: str, in_function: bool = False) -> None:
    text = path.read_text()
    if in_function:  # the dodge the contract must still see
        line = "\n\ndef _planted() -> None:\n    " + line + "\n"
    path.write_text(text + "\n" + line + "\n")


@pytest.mark.parametrize(("module", "line", "in_function", "says"), [
    ("lab/domain/units.py", "from lab.service import manager  # noqa", False,
     "lab.domain is not allowed to import lab.service"),
    ("lab/host/procs.py", "from lab.nbd import servers  # noqa", True,
     "lab.host is not allowed to import lab.nbd"),
    ("lab/domain/units.py", "import app.main  # noqa", True,
     "lab is not allowed to import app"),
    ("app/api/health.py", "from lab.host import procs  # noqa", False,
     "app is not allowed to import lab.host"),
    ("lab/domain/units.py", "from lab.domain import run  # noqa", True,
     "No cycles are allowed in lab.domain"),
])
def test_a_planted_import_breaks_it(copy: Path, module: str, line: str, in_function: bool, says: str) -> None:
    plant(copy / module, line, in_function)
    out = lint(copy)
    assert out.returncode != 0
    assert "BROKEN" in out.stdout
    assert says in " ".join(out.stdout.split()), out.stdout
