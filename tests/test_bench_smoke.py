"""The bench scripts still work: each runs in --quick mode (tiny sizes, seconds) and prints a table.

No timing is asserted here (speed targets live in the scripts' own PASS/MISS columns).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = ["overhead", "fidelity", "sweep_speed", "throughput", "chain_hop", "streaming", "sse_layer", "footprint",
           "load", "cancel", "block_status", "cluster", "audit_matrix", "control_pairing"]


def _tables(text: str) -> list[str]:
    """Markdown table header rules in the output (one per table)."""
    return [line for line in text.splitlines() if line.startswith("|-") or line.startswith("|:")]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_quick_prints_a_table(name, no_leftovers):
    p = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick"], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=180, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert _tables(p.stdout), p.stdout
    assert "PASS" in p.stdout or "MISS" in p.stdout  # every figure comes with its verdict


def test_run_all_quick_runs_every_script(no_leftovers):
    p = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "overhead,footprint"],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=180, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "## overhead" in p.stdout and "## footprint" in p.stdout
    assert "Time taken" in p.stdout
