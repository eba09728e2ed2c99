"""The `lab` console script: contract exit codes and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = str(Path(sys.executable).with_name("lab"))
FAST = ["--size", "8M", "--delay-write", "1ms", "--delay-zero", "1ms"]


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAB, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120)


@pytest.mark.parametrize(("args", "option"), [
    (["--zeromode", "bogus"], "--zeromode"),
    (["--size", "-1"], "--size"),
    (["--delay-write", "5parsecs"], "--delay-write"),
    (["--maxdata", "12"], "--maxdata"),
    (["--client", "qemu-9.9"], "--client"),
    (["--pattern", "zigzag"], "--pattern"),
    (["--queue-depth", "0"], "--queue-depth"),
])
def test_bad_arguments_exit_2_naming_the_option(args, option, no_leftovers):
    p = lab("run", *args)
    assert p.returncode == 2
    assert option in p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize(("env", "args", "says"), [
    ({"LAB_MAX_SIZE": "bogus"}, ["clients"], "lab: error: LAB_MAX_SIZE: 'bogus' is not a size"),
    ({"LAB_WORKERS": "0"}, ["run", *FAST], "lab: error: LAB_WORKERS: "),
    ({}, ["run", "--bogus"], "lab: error: unrecognized arguments: --bogus"),
])
def test_bad_settings_and_unknown_options_exit_2_naming_them(env, args, says):
    p = subprocess.run([LAB, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert p.returncode == 2 and says in p.stderr, p.stderr
    assert "Value error" not in p.stderr and p.stdout == ""


def test_unknown_scenario_exit_2():
    p = lab("scenario", "nope")
    assert p.returncode == 2 and "unknown scenario" in p.stderr


def test_run_json_contract():
    p = lab("run", *FAST, "--zeromode", "plugin", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    contract = ("id", "status", "client", "server", "duration_s", "predicted_s", "verified", "backend", "wire", "error")
    assert set(contract) <= set(d)
    assert d["status"] == "succeeded" and d["verified"] is True and d["error"] is None
    assert d["client"] == "qemu-img"
    assert d["server"] == {**d["server"], "zeromode": "plugin", "fastzeromode": "default", "size": 8 << 20,
                           "pattern": "alternate:1M", "maxdata": 262144, "delay_write": 1.0, "delay_zero": 1.0}
    assert set(d["backend"]) >= {"write_ops", "write_bytes", "zero_ops", "zero_bytes", "trim_ops", "flush_ops"}
    assert set(d["wire"]) >= {"write", "zero", "fast_zero", "fast_zero_failed", "flush"}
    assert d["backend"]["write_ops"] == 16 and d["backend"]["zero_ops"] == 4


def test_run_table_output():
    p = lab("run", *FAST)
    assert p.returncode == 0, p.stderr
    assert "SUCCEEDED" in p.stdout and "verified" in p.stdout and "write" in p.stdout


def test_listing_commands():
    p = lab("clients")
    assert p.returncode == 0 and "qemu-img" in p.stdout and "nbdcopy" in p.stdout
    p = lab("scenarios")
    assert p.returncode == 0 and "case-study" in p.stdout
