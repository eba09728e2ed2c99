"""`lab sweep FILE`: a custom sweep from TOML or JSON, run here; errors name the place and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LAB = str(Path(sys.executable).with_name("lab"))

GRID = """
name = "grid"
repeats = 2
[grid]
client = ["qemu-img", "qemu-4.2"]
zeromode = ["plugin", "none"]
[server]
size = "8M"
delay_write = "1ms"
delay_zero = "1ms"
"""


def test_a_toml_grid_with_repeats(tmp_path, no_leftovers):
    f = tmp_path / "grid.toml"
    f.write_text(GRID)
    out = subprocess.run([LAB, "sweep", str(f), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert [r["key"] for r in body["rows"]] == ["qemu-img/plugin", "qemu-img/none", "qemu-4.2/plugin",
                                                "qemu-4.2/none"]
    assert all(r["succeeded"] == 2 for r in body["rows"]) and len(body["runs"]) == 8
    none = body["rows"][1]["stats"]["backend.write_ops"]
    assert none["p50"] == 32 and none["spread"] == 0
    text = subprocess.run([LAB, "sweep", str(f)], capture_output=True, text=True, timeout=300).stdout
    assert "qemu-4.2/plugin" in text and "±" in text


def test_bad_definitions_exit_2_naming_the_place(tmp_path):
    cases = {
        "a.json": ('{"rows": [{"client": "qemu-img", "server": {"delay_write": "5parsecs"}}]}',
                   "rows.0.server.delay_write"),
        "b.json": ('{"grid": {"zeromode": ["none"]}, "rows": []}', "give either rows or grid"),
        "c.toml": ("[grid]\nclient = ['qemu-9']", "grid.client.0"),
        "d.toml": ("[grid\n", "d.toml"),
    }
    for name, (text, says) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        out = subprocess.run([LAB, "sweep", str(f)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and says in out.stderr, (name, out.stderr)
    out = subprocess.run([LAB, "sweep", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "missing.json" in out.stderr


def test_the_settings_limits_hold_for_a_sweep_file(tmp_path):
    # LAB_MAX_SIZE holds at every door: `lab run`, POST /api/v1/sweeps and `lab sweep` alike.
    f = tmp_path / "big.json"
    f.write_text('{"rows": [{"client": "qemu-img", "server": {"size": "32M"}}]}')
    env = {**os.environ, "LAB_MAX_SIZE": "16M"}
    out = subprocess.run([LAB, "sweep", str(f)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "rows.0.server.size" in out.stderr and "16M" in out.stderr, out.stderr
    assert out.stdout == ""


def test_workers_out_of_range_exit_2_for_sweep_and_scenario(tmp_path):
    f = tmp_path / "one.json"
    f.write_text('{"rows": [{"client": "qemu-img"}]}')
    for argv in (["sweep", str(f), "--workers", "17"], ["scenario", "case-study", "--workers", "0"]):
        out = subprocess.run([LAB, *argv], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--workers: must be between 1 and 16" in out.stderr, (argv, out.stderr)
        assert out.stdout == ""


SLOW_ROW = '{"name": "slow", "rows": [{"client": "qemu-4.2", "server": {"size": "8M", "delay_write": "500ms"}}]}'


def test_a_sweep_honours_lab_run_timeout_s_and_timeout(tmp_path, no_leftovers):
    """A row still going after the run timeout is stopped and failed (about 8 s of sleeps, cut at 1 s):
    LAB_RUN_TIMEOUT_S by default, --timeout over it; a bad --timeout is refused before anything runs."""
    f = tmp_path / "slow.json"
    f.write_text(SLOW_ROW)
    env = {**os.environ, "LAB_RUN_TIMEOUT_S": "1"}
    out = subprocess.run([LAB, "sweep", str(f), "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, out.stderr
    [run] = json.loads(out.stdout)["runs"]
    assert run["status"] == "failed" and "timed out after 1 s" in run["error"]
    out = subprocess.run([LAB, "sweep", str(f), "--json", "--timeout", "1.5"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "timed out after 1.5 s" in json.loads(out.stdout)["runs"][0]["error"]
    for bad in ("0", "-3", "1e9"):
        out = subprocess.run([LAB, "sweep", str(f), "--timeout", bad], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--timeout" in out.stderr, (bad, out.stderr)
