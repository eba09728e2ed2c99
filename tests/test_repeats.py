"""Repeats where they matter: a sweep's rows without delays run at least BANDWIDTH_REPEATS times, and `lab run
--repeat N` reports the median and spread (lab.domain.sweepspec, lab.cli)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.domain.sweepspec import BANDWIDTH_REPEATS, MAX_RUNS, DefinitionError, plan

LAB = str(Path(sys.executable).with_name("lab"))


def test_a_sweep_runs_its_bandwidth_bound_rows_at_least_five_times_in_rounds():
    planned = plan({"grid": {"delay_write": ["0ms", "2ms"]}, "server": {"size": "8M", "delay_zero": "0ms"}})
    labels = [r.label for r in planned.runs()]
    assert labels.count("0ms") == BANDWIDTH_REPEATS == 5 and labels.count("2ms") == 1
    assert labels == ["0ms", "2ms", "0ms", "0ms", "0ms", "0ms"]  # rounds: every row once, then those that run again
    more = plan({"grid": {"delay_write": ["0ms", "2ms"]}, "server": {"size": "8M", "delay_zero": "0ms"},
                 "repeats": 7})
    assert [r.label for r in more.runs()].count("0ms") == 7  # asking for more is never cut down


def test_the_runs_limit_counts_the_extra_repeats_and_says_why():
    rows = [{"key": f"r{i}", "server": {"delay_write": "0ms", "delay_zero": "0ms"}}
            for i in range(MAX_RUNS // BANDWIDTH_REPEATS + 1)]
    with pytest.raises(DefinitionError) as e:
        plan({"rows": rows, "server": {"size": "8M"}})
    assert "rows without delays run at least 5 times" in str(e.value) and e.value.loc == ["rows"]


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LAB, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def test_lab_run_repeat_reports_median_and_spread(no_leftovers):
    p = lab("run", "--client", "qemu-2.8", "--size", "8M", "--delay-write", "1ms", "--delay-zero", "1ms",
            "--repeat", "3", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    times = [r["duration_s"] for r in out["runs"]]
    assert len(times) == 3 and len({r["id"] for r in out["runs"]}) == 3
    d = out["repeat"]["duration_s"]
    assert d["n"] == 3 and d["p50"] == sorted(times)[1] and d["min"] == min(times) and d["max"] == max(times)
    assert out["repeat"]["median_run"] in {r["id"] for r in out["runs"]}
    text = lab("run", "--client", "qemu-2.8", "--size", "8M", "--delay-write", "1ms", "--delay-zero", "1ms",
               "--repeat", "2")
    assert text.returncode == 0 and "repeats" in text.stdout and "median" in text.stdout
    assert "run 2/2: succeeded" in text.stderr


@pytest.mark.parametrize("n", ["0", "21", "x"])
def test_lab_run_repeat_out_of_range_exits_2(n, no_leftovers):
    p = lab("run", "--size", "8M", "--repeat", n)
    assert p.returncode == 2 and "--repeat" in p.stderr and p.stdout == ""


def test_a_sweep_row_carries_its_expectation_and_warns_of_runs_outside_it():
    from lab.domain.sweepspec import group_rows

    def run(i: int, t: float, verdict: str) -> dict:
        return {"id": f"r{i}", "label": "row", "status": "succeeded", "duration_s": t, "expected_s": 0.5,
                "expected_low_s": 0.45, "expected_high_s": 0.55, "model_verdict": verdict}

    [row] = group_rows([run(0, 0.5, "within"), run(1, 0.7, "slower-than-model"), run(2, 0.52, "within")])
    assert row["stats"]["expected_s"]["p50"] == 0.5 and row["stats"]["expected_high_s"]["p50"] == 0.55
    [warning] = [w for w in row["warnings"] if w["type"] == "outside-model"]
    assert warning["message"].startswith("1 of 3 succeeded runs fell outside") and "1 slower, 0 faster" in warning[
        "message"]
