"""Contention: what the machine did beside a run, from /proc (no timing asserted, only accounting)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.host import procs
from lab.measure import contention
from lab.measure.execute import execute, outside_note


def test_a_process_of_the_run_is_its_own_cpu_not_others():
    busy = procs.spawn([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        w = contention.Window().start((busy.pid,))
        time.sleep(0.6)
        c = w.finish(None)
    finally:
        procs.stop(busy)
    assert c["own_cores"] > 0.05  # the spinning child got some CPU, and it is counted as the run's
    assert c["machine_cores"] >= c["own_cores"] - 0.05
    if c["others_cores"] > 0:
        assert c["machine_cores"] - c["own_cores"] == pytest.approx(c["others_cores"], abs=0.02)
    assert c["contended"] == (c["others_cores"] > contention.CONTENDED_CORES)


def test_cpu_bound_is_parallel_deep_or_undelayed():
    sleepy, free = build_spec({}), build_spec({"delay_write": "0ms", "delay_zero": "0ms"})
    assert not contention.cpu_bound(False, 1, sleepy)
    assert contention.cpu_bound(True, 1, sleepy) and contention.cpu_bound(False, 16, sleepy)
    assert contention.cpu_bound(False, 1, free)


@pytest.mark.parametrize("client", ["qemu-img", "qemu-2.8"])
def test_every_run_says_whether_it_was_contended(client, no_leftovers):
    run = execute(Run(client=client, server=build_spec({"size": "4M", "delay_write": "1ms", "delay_zero": "1ms"})))
    assert run.status == "succeeded"
    c = run.contention
    assert set(c) - {"expected_own_cpu_s", "slow_copy_path"} == {
        "machine_cores", "own_cores", "own_cpu_s", "others_cores", "stolen_cores", "limit_cores", "client_cpu_known",
        "contended"}
    assert 0 <= c["stolen_cores"] <= c["others_cores"]  # the hypervisor's share of others' CPU
    assert c["own_cpu_s"] > 0  # nbdkit and the client did work
    assert c["client_cpu_known"] is True  # the client's CPU came from its exit's rusage
    assert run.contended is c["contended"] and run.to_dict()["contended"] is run.contended


@pytest.mark.parametrize(("own", "expected", "slow"), [
    (0.50, 0.30, True),     # 1.67x and 0.2 s more
    (0.35, 0.30, False),    # 1.17x: within the spread of normal runs
    (0.06, 0.03, False),    # 2x, but 30 ms: the noise of a short copy
    (0.50, None, None),     # no CPU calibration: not judged
])
def test_slow_copy_path_is_judged_against_the_calibrated_cpu(own, expected, slow):
    c = {"own_cpu_s": own, "client_cpu_known": True}
    note = contention.slow_copy_path(c, expected)
    assert c.get("slow_copy_path") is slow
    assert (note is not None) is bool(slow)
    if slow:
        assert "0.500 s of CPU" in note and "0.300 s" in note


def test_a_sleeping_run_outside_its_interval_names_others_cpu_below_the_contended_line():
    """Beside 0.2-0.5 cores of others a sleeping copy's variable part ran 1.5-2.3x (measured): a run outside
    its interval says so though it is not contended, and which share the hypervisor took."""

    def run_with(others: float, stolen: float) -> Run:
        run = Run(client="qemu-img", server=build_spec({"size": "4M", "delay_write": "5ms"}))
        run.duration_s, run.expected_s, run.expected_low_s, run.expected_high_s = 4.3, 3.86, 3.79, 3.93
        run.expected_coverage, run.model_verdict, run.model_term = 0.9, "slower-than-model", "per_request_s"
        run.breakdown = {"delays_s": 3.58, "per_request_s": 0.19, "per_byte_s": 0.06, "fixed_s": 0.02}
        run.contention = {"others_cores": others, "stolen_cores": stolen,
                          "contended": others > contention.CONTENDED_CORES}
        run.contended = run.contention["contended"]
        return run

    disturbed = outside_note(run_with(0.25, 0.2))
    assert "others used 0.25 cores during the copy, 0.20 of them taken by the hypervisor" in disturbed
    assert "wake-ups wait for them" in disturbed
    assert "others used" not in outside_note(run_with(0.05, 0.0))  # below DISTURBS_SLEEPS_CORES: not a cause
    assert "wake-ups" not in outside_note(run_with(0.5, 0.0))  # contended says it already
