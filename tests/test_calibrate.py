"""The calibrated expectation: the fit, the cache and its fingerprint, and a run that carries it.

Timings are not asserted here (bench/fidelity.py measures how close expected_s lands); what is
tested is that the arithmetic, the cache rules and the plumbing are right.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import threading
import time
from pathlib import Path

import pytest

from lab.domain.counts import BackendCounts, WireCounts
from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.host import places
from lab.host.places import Core, Places
from lab.measure import calibration, drift, expectation, fitting
from lab.measure.execute import execute
from lab.service.export import COLUMNS, to_csv

TRUE = {"fixed": 0.040, "wire_requests": 80e-6, "backend_requests": 15e-6, "sleeps": 250e-6, "mib": 0.7e-3,
        "warm_mib": 0.4e-3, "slept_mib": 0.3e-3}


def _point(wire: float, backend: float, sleeps: float, mib: float, delays: float, coef=TRUE, d=1.0) -> dict:
    f = {"fixed": 1.0, "wire_requests": wire, "backend_requests": backend, "sleeps": sleeps, "mib": mib,
         "warm_mib": min(mib, expectation.WARM_MIB), "slept_mib": mib if sleeps else 0.0, "delays": delays}
    t = d * delays + sum(coef[k] * f[k] for k in coef)
    return {"features": f, "measured_s": t}


# the shape of the calibration plan: small copies, one large one, bytes behind sleeps
POINTS = [_point(48, 48, 0, 48, 0), _point(96, 192, 0, 192, 0), _point(32, 64, 64, 64, 0.064),
          _point(4, 2048, 0, 8, 0), _point(192, 96, 0, 6, 0), _point(12, 192, 192, 12, 0.192),
          _point(1, 8, 0, 2, 0)]


def test_fit_recovers_known_coefficients_and_keeps_the_floor_fixed():
    coef = fitting.fit(POINTS, expectation.TERMS, {"delays": 1.0})
    assert coef["delays"] == 1.0
    for k, v in TRUE.items():
        assert coef[k] == pytest.approx(v, rel=1e-3), k


def test_the_plan_measures_each_per_byte_term_where_it_dominates():
    """The steady per-MiB rate comes from a copy many times longer than the warm-up, measured once
    more than the others; bytes behind sleeps from a copy whose 1 MiB writes each sleep."""
    from lab.domain.units import parse_size

    def mib(p: calibration.Point) -> float:
        return parse_size(p.size) / expectation.MiB

    full_speed = [p for p in calibration.PLAN_SERIAL if p.pattern == "full" and not p.delay_write_ms + p.delay_zero_ms]
    steady = max(full_speed, key=mib)
    assert mib(steady) >= 8 * expectation.WARM_MIB and steady.repeat > calibration.REPEAT
    assert any(p.delay_write_ms and p.pattern == "full" and mib(p) > expectation.WARM_MIB
               for p in calibration.PLAN_SERIAL)
    assert any(mib(p) < expectation.WARM_MIB / 4 for p in calibration.PLAN_SERIAL)  # and the fixed cost from a tiny one
    assert set(calibration.PLAN_SERIAL) < set(calibration.PLAN_PARALLEL)


def test_fit_of_a_parallel_client_finds_its_delay_factor():
    pts = [_point(48, 48, 0, 48, 0, d=0.2), _point(96, 192, 0, 192, 0, d=0.2), _point(32, 64, 64, 64, 0.064, d=0.2),
           _point(4, 2048, 0, 8, 0, d=0.2), _point(192, 96, 0, 6, 0, d=0.2), _point(12, 192, 192, 12, 0.192, d=0.2),
           _point(1, 8, 0, 2, 0, d=0.2), _point(12, 192, 192, 12, 0.96, d=0.2)]
    coef = fitting.fit(pts, expectation.TERMS, {})
    assert coef["delays"] == pytest.approx(0.2, rel=1e-3)


def test_fit_never_returns_a_negative_cost():
    pts = [dict(p) for p in POINTS]
    pts[1] = {**pts[1], "measured_s": pts[1]["measured_s"] * 0.5}  # a run faster than its requests allow
    coef = fitting.fit(pts, expectation.TERMS, {"delays": 1.0})
    assert all(v >= 0 for v in coef.values()), coef


def test_features_come_from_exact_counts():
    """Bytes are counted where the plugin stores them: here 50 MiB of client writes plus 50 MiB of
    zeroes the server wrote out itself (server B), all behind a 20 ms write delay."""
    spec = build_spec({"delay_write": "20ms", "delay_zero": "0ms"})
    backend = BackendCounts(write_ops=400, write_bytes=100 << 20, zero_ops=4, flush_ops=1)
    log = WireCounts(write=50, write_bytes=50 << 20, zero=4, flush=1)
    f = expectation.features(spec, backend, log, 8.0)
    assert f == {"fixed": 1.0, "wire_requests": 55.0, "backend_requests": 405.0, "sleeps": 400.0, "short_sleeps": 0.0,
                 "long_sleeps": 400.0, "mib": 100.0, "warm_mib": float(expectation.WARM_MIB), "grown_mib": 0.0,
                 "slept_mib": 100.0, "zero_mib": 0.0, "delays": 8.0}
    small = expectation.features(build_spec({"delay_write": "0ms", "delay_zero": "5ms"}),
                               BackendCounts(write_ops=8, write_bytes=8 << 20, zero_ops=2), log, 0.01)
    assert (small["mib"], small["warm_mib"], small["slept_mib"], small["sleeps"]) == (8.0, 8.0, 0.0, 2.0)
    assert (small["long_sleeps"], small["short_sleeps"]) == (0.0, 0.0)  # 5 ms: neither long nor short
    mixed = expectation.features(build_spec({"delay_write": "1ms", "delay_zero": "10ms"}),
                                 BackendCounts(write_ops=8, write_bytes=8 << 20, zero_ops=2), log, 0.028)
    assert (mixed["short_sleeps"], mixed["long_sleeps"], mixed["sleeps"]) == (8.0, 2.0, 10.0)


def test_a_model_fitted_on_the_plan_extrapolates_to_a_bandwidth_bound_gigabyte():
    """The issue-12 miss: a per-MiB cost fitted on small copies alone over-predicted 1 GiB copies.
    With the warm-up term and the plan's large copy, a 1 GiB copy is predicted from the steady rate."""
    coef = fitting.fit(POINTS, expectation.TERMS, {"delays": 1.0})
    big = _point(513, 1025, 0, 1024, 0)
    predicted = sum(coef.get(k, 0.0) * v for k, v in big["features"].items())
    assert predicted == pytest.approx(big["measured_s"], rel=1e-3)
    one_rate = fitting.fit([{**p, "features": {**p["features"], "warm_mib": 0.0}} for p in POINTS[:1] + POINTS[3:]],
                           expectation.TERMS, {"delays": 1.0, "warm_mib": 0.0, "slept_mib": 0.0})
    old = sum(one_rate.get(k, 0.0) * v for k, v in big["features"].items() if k != "warm_mib")
    assert old > 1.1 * big["measured_s"]  # what the old plan and model did: fitted small, predicted too slow


def _calibration(fp: str) -> expectation.Calibration:
    fits = {k: expectation.Fit(k, {**TRUE, "delays": 1.0}) for k in
            ("qemu-img/single", "era-q1/single", "era-q1/chain", "nbdcopy/single", "era-qN/single")}
    return expectation.Calibration(fp, {"cpu": "test"}, fits)


@pytest.fixture
def data_dir(tmp_path):
    expectation.forget()
    yield tmp_path
    expectation.forget()


def _places(data_dir: Path) -> Places:
    """The session's places with this test's calibration file (handed down, as a driver would)."""
    return dataclasses.replace(places.current(), calibration_file=data_dir / "calibration.json")


def test_cache_is_tied_to_the_machine_and_tools(data_dir):
    where = _places(data_dir)
    assert expectation.load(places=where) is None
    expectation.save(_calibration("another-machine"), where)
    assert expectation.load(places=where) is None  # made elsewhere (or with other tool versions): not used
    now = expectation.fingerprint(expectation.machine())
    expectation.save(_calibration(now), where)
    expectation.forget()
    cal = expectation.load(places=where)
    assert cal is not None and cal.fingerprint == now
    assert json.loads((data_dir / "calibration.json").read_text())["fingerprint"] == now
    assert expectation.load(places=_places(data_dir / "elsewhere")) is None  # per calibration file


def test_a_new_calibration_is_used_at_once(data_dir):
    where = _places(data_dir)
    now = expectation.fingerprint(expectation.machine())
    expectation.save(_calibration(now), where)
    assert expectation.load(places=where).machine == {"cpu": "test"}
    newer = dataclasses.replace(_calibration(now), machine={"cpu": "newer"})
    expectation.save(newer, where)
    assert expectation.load(places=where).machine == {"cpu": "newer"}  # not the one loaded before


def test_a_new_calibration_replaces_the_one_this_process_loaded(data_dir):
    """A recalibration (CLI, API, bench --recalibrate) is used at once, not the copy its own runs loaded."""
    now = expectation.fingerprint(expectation.machine())
    expectation.save(_calibration(now))
    assert expectation.load().fits["era-q1/single"].coef["mib"] == TRUE["mib"]
    newer = _calibration(now)
    newer.fits["era-q1/single"].coef["mib"] = 0.5e-3
    expectation.save(newer)
    assert expectation.load().fits["era-q1/single"].coef["mib"] == 0.5e-3


def test_breakdown_sums_to_the_expectation_and_includes_the_floor(data_dir):
    cal = _calibration("x")
    f = {"fixed": 1.0, "wire_requests": 55.0, "backend_requests": 405.0, "sleeps": 400.0, "mib": 50.0,
         "warm_mib": 32.0, "slept_mib": 50.0, "delays": 8.0}
    e = cal.expect("qemu-4.2", 1, "chain", f)
    assert e.calibration == "era-q1/chain"
    assert e.breakdown["delays_s"] == 8.0
    assert sum(e.breakdown.values()) == pytest.approx(e.expected_s, abs=1e-3)
    assert e.expected_s >= 8.0
    assert cal.expect("qemu-img", 1, "chain", f).calibration == "qemu-img/single"  # no chain fit: falls back


def test_a_run_carries_expected_and_breakdown_when_calibrated(data_dir, no_leftovers):
    spec = build_spec({"size": "4M", "zeromode": "plugin", "delay_write": "1ms", "delay_zero": "1ms"})
    core = Core(places=_places(data_dir))
    run = execute(Run(client="qemu-2.8", server=spec), core=core)
    assert run.status == "succeeded" and run.expected_s is None and run.breakdown is None  # not calibrated yet
    expectation.save(_calibration(expectation.fingerprint(expectation.machine())), core.places)
    expectation.forget()
    run = execute(Run(client="qemu-2.8", server=spec), core=core)
    assert run.status == "succeeded" and run.calibration == "era-q1/single"
    assert run.breakdown["delays_s"] == pytest.approx(run.predicted_s)
    assert sum(run.breakdown.values()) == pytest.approx(run.expected_s, abs=1e-3)
    d = run.to_dict()
    assert d["expected_s"] == run.expected_s and set(d["breakdown"]) == {"delays_s", "per_request_s", "per_byte_s",
                                                                        "fixed_s"}
    assert {"expected_s", "breakdown.delays_s", "breakdown.fixed_s", "calibration"} <= set(COLUMNS)
    header, row = list(csv.reader(io.StringIO(to_csv([d]))))[:2]
    assert float(row[header.index("expected_s")]) == run.expected_s
    # the coefficients are the memory plugin's: a file plugin's run gets no expectation rather than a wrong one
    on_file = execute(Run(client="qemu-2.8", server=build_spec({**spec.model_dump(), "plugin": "file"})))
    assert on_file.status == "succeeded" and on_file.expected_s is None and on_file.breakdown is None


def test_api_shows_the_calibration_or_says_there_is_none(data_dir):
    from apiutil import client_for

    with client_for(data_dir / "data", calibration_file=data_dir / "calibration.json") as api:  # LAB_CALIBRATION_FILE
        r = api.get("/api/v1/calibration")
        assert r.status_code == 200 and r.json()["status"] == "none" and r.json()["calibration"] is None
        expectation.save(_calibration(expectation.fingerprint(expectation.machine())), _places(data_dir))
        expectation.forget()
        r = api.get("/api/v1/calibration")
        assert r.status_code == 200 and r.json()["status"] == "done"
        body = r.json()["calibration"]
        assert set(body["fits"]) >= {"qemu-img/single", "era-q1/chain"}
        assert body["fits"]["qemu-img/single"]["coef"]["delays"] == 1.0
        # a real calibration carries its measured points (features are a dict: once answered 500)
        cal = _calibration(expectation.fingerprint(expectation.machine()))
        point = {**_point(96, 192, 0, 192, 0), "geometry": ["384M", "full", "1M", 0, 0], "contended": False,
                 "runs_s": [0.29, 0.28, 0.3], "fitted_s": 0.28}
        cal.fits["era-q1/single"].points.append(point)
        expectation.save(cal, _places(data_dir))
        r = api.get("/api/v1/calibration")
        assert r.status_code == 200, r.text
        got = r.json()["calibration"]["fits"]["era-q1/single"]["points"][0]
        assert got["features"]["warm_mib"] == expectation.WARM_MIB and got["runs_s"] == [0.29, 0.28, 0.3]


def test_api_calibration_runs_in_the_background_and_stops_with_the_service(data_dir, no_leftovers):
    """POST queues it (202: its points are jobs of the scheduler), a second POST is refused (429);
    leaving the app cancels it cleanly."""
    from apiutil import client_for

    with client_for(data_dir / "data") as api:  # the default calibration file: in the app's data dir
        r = api.post("/api/v1/calibration", json={})
        assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
        assert r.json()["steps"] == sum(len(calibration.steps(k)) for k in expectation.KINDS)
        assert api.post("/api/v1/calibration", json={}).status_code == 429
        assert api.get("/api/v1/calibration").json()["status"] in ("queued", "running")
    # the lifespan cancelled it: no nbdkit or client left (no_leftovers), the cache not written
    assert expectation.load(places=Places.under(data_dir)) is None
    assert not (data_dir / "data" / "calibration.json").exists()



def test_a_calibration_point_runs_where_it_is_told(tmp_path, no_leftovers):
    """calibrate() hands its places to each measuring run: the servers' private dirs are made in
    the runtime dir it was given (and removed), not in the process default's."""
    where = dataclasses.replace(Places.under(tmp_path), image_dir=places.current().image_dir)
    assert not where.runtime_dir.exists()
    [point] = calibration._measure_plan(expectation.Kind("qemu-2.8", 1, "single", False),
                                      [calibration.Point("4M", "full", "1M", 0, 0)], threading.Event(),
                                      lambda: False, places=where)
    assert point["measured_s"] > 0 and len(point["runs_s"]) == calibration.REPEAT
    assert point["own_cpu_s"] > 0  # the CPU the run's own processes used: the CPU fit's data
    assert where.runtime_dir.is_dir() and not list(where.runtime_dir.iterdir())


def test_the_cpu_fit_is_the_same_model_without_the_sleeps():
    cpu_true = {k: v for k, v in TRUE.items() if k != "sleeps"}
    points = [{**p, "measured_s": sum(cpu_true[k] * p["features"][k] for k in cpu_true)} for p in POINTS]
    got = fitting.fit(points, expectation.TERMS, {"delays": 0.0})
    assert got["delays"] == 0.0 and got.get("sleeps", 0.0) == pytest.approx(0.0, abs=1e-6)
    for k, v in cpu_true.items():
        assert got[k] == pytest.approx(v, rel=1e-3)


@pytest.mark.parametrize(("cpu_scale", "slow"), [(1e-3, True), (1e3, False)])
def test_a_run_that_burns_more_cpu_than_calibrated_is_marked(cpu_scale, slow, data_dir, no_leftovers):
    """A real run judged against a calibration whose CPU expectation is far below (or above) what
    its processes really use: marked slow_copy_path with a note (or not)."""
    core = Core(places=_places(data_dir))
    cal = _calibration(expectation.fingerprint(expectation.machine()))
    for f in cal.fits.values():
        f.cpu_coef = {k: v * cpu_scale for k, v in TRUE.items()}
    expectation.save(cal, core.places)
    # 128 MiB: its own CPU (~0.1 s) is well above the margin a short copy's noise is given
    spec = build_spec({"size": "128M", "pattern": "full", "maxdata": "1M", "delay_write": "0ms", "delay_zero": "0ms"})
    run = execute(Run(client="qemu-img", server=spec), core=core)
    assert run.status == "succeeded"
    c = run.contention
    feats = expectation.features(spec, run.backend, run.server_log, run.predicted_s or 0.0)
    assert c["expected_own_cpu_s"] == pytest.approx(sum(v * cpu_scale * feats[k] for k, v in TRUE.items()),
                                                    rel=1e-3, abs=1e-4)
    assert c["own_cpu_s"] > 0
    assert c["slow_copy_path"] is slow
    assert any(n.startswith("slow copy path:") for n in run.notes) is slow
    assert json.loads(json.dumps(run.to_dict()))["contention"]["slow_copy_path"] is slow


def test_a_sleep_bound_run_is_not_judged_by_its_cpu(data_dir, no_leftovers):
    """Its time is its sleeps; over a long run the lab's own per-second work is in its CPU but not in
    the calibration's short points, so the CPU check would only raise false alarms there."""
    core = Core(places=_places(data_dir))
    cal = _calibration(expectation.fingerprint(expectation.machine()))
    for f in cal.fits.values():
        f.cpu_coef = {k: v * 1e-3 for k, v in TRUE.items()}
    expectation.save(cal, core.places)
    spec = build_spec({"size": "8M", "pattern": "full", "maxdata": "1M", "delay_write": "2ms", "delay_zero": "2ms"})
    run = execute(Run(client="qemu-img", server=spec), core=core)
    assert run.status == "succeeded" and run.expected_s is not None
    assert "slow_copy_path" not in run.contention
    assert not any(n.startswith("slow copy path:") for n in run.notes)


def test_a_point_is_measured_by_its_runs_off_the_slow_copy_path():
    """The repeats of a point do the same work: one whose processes burned far more CPU took the
    machine's slow path and does not stand for the point; the rest give the fastest of two or the median."""
    def run(s: float, cpu: float):
        return Run(client="qemu-img", server=build_spec({}), duration_s=s, contention={"own_cpu_s": cpu})

    slow = run(0.9, 1.0)
    assert calibration._chosen([run(0.30, 0.35), slow, run(0.32, 0.36)]).duration_s == 0.30
    five = [run(0.31, 0.36), run(0.29, 0.34), slow, run(0.33, 0.37), run(0.30, 0.35)]
    assert calibration._chosen(five).duration_s == 0.30  # median of the four clean runs (lower middle)
    assert calibration._chosen([run(0.30, 0.35), run(0.31, 0.36), run(0.35, 0.40)]).duration_s == 0.31
    assert calibration._chosen([slow]).duration_s == 0.9  # all alike: nothing to compare with
    # the time that stands for the point: the median (two: the mean) of the clean runs nobody disturbed
    assert calibration._measured([run(0.30, 0.35), slow, run(0.32, 0.36)]) == pytest.approx(0.31)
    assert calibration._measured(five) == pytest.approx(0.305)
    busy = Run(client="qemu-img", server=build_spec({}), duration_s=0.5, contention={"own_cpu_s": 0.35},
               contended=True)
    assert calibration._measured([run(0.30, 0.35), busy, run(0.32, 0.36)]) == pytest.approx(0.31)
    assert calibration._measured([busy]) == 0.5


def test_a_control_leaves_out_copies_the_calibration_judged_slow_even_when_all_were():
    """Relative to each other three copies on the slow path look alike; the calibration's CPU fit
    (contention.slow_copy_path) still names them, and a control of only such copies corrects nothing."""
    def run(s: float, cpu: float, slow: bool | None = None, contended: bool = False):
        c = {"own_cpu_s": cpu} if slow is None else {"own_cpu_s": cpu, "slow_copy_path": slow}
        return Run(client="qemu-img", server=build_spec({}), duration_s=s, contention=c, contended=contended)

    assert calibration._quiet_runs_s([run(0.45, 0.55, True), run(0.45, 0.55, True), run(0.40, 0.50, True)]) == []
    assert calibration._quiet_runs_s([run(0.33, 0.36, True), run(0.22, 0.27, False), run(0.21, 0.25, False)]) == [
        0.22, 0.21]
    assert calibration._quiet_runs_s([run(0.20, 0.25), run(0.60, 0.70), run(0.21, 0.25, contended=True)]) == [0.20]
    c = drift.Control("qemu-img/single", "cal", [0.45, 0.45, 0.40], [], 0.19)
    assert c.factor is None and "no correction" in calibration.control_note(c)


# --- intervals, verdicts, blind spots, drift ------------------------------------------------


def _with(p: dict, **extra: float) -> dict:
    return {**p, "features": {**p["features"], **extra}}


def test_a_blind_spot_term_stays_only_where_the_points_need_it():
    """zero_mib: a point of zero-filled writes costs 0.5 ms/MiB more than data, or nothing more."""
    zeroed = _with(_point(64, 64, 64, 64, 0.128), zero_mib=64.0)
    for extra, kept in ((0.5e-3, True), (0.0, False)):
        pts = [*POINTS, {**zeroed, "measured_s": zeroed["measured_s"] + extra * 64}]
        pts = [{**p, "runs_s": [p["measured_s"] * 0.99, p["measured_s"] * 1.01]} for p in pts]
        coef, blind = fitting.select(pts, expectation.TERMS, {"delays": 1.0}, expectation.BLIND_SPOTS)
        assert ("zero_mib" in blind) is kept, (extra, coef)
        assert coef["zero_mib"] == pytest.approx(extra, abs=2e-5)
        assert "short_sleeps" not in blind and "grown_mib" not in blind  # no point needs them
        assert coef["mib"] == pytest.approx(TRUE["mib"], rel=1e-2)


def test_each_regime_inherits_the_scatter_of_its_points_and_short_copies_the_jitter():
    """Byte-heavy points that vary by 8% run to run, the others by 1%: the bandwidth-bound spread comes
    out from those 8% (of the variable part), the others low; a few ms of jitter on every copy goes to
    abs_s."""
    pts = []
    coef = fitting.fit(POINTS, expectation.TERMS, {"delays": 1.0})
    for p in POINTS:
        t = p["measured_s"]
        share = fitting.parts(coef, p["features"], expectation.GROUPS)
        s = 0.08 if expectation.regime(share) == "bandwidth-bound" else 0.01
        pts.append({**p, "runs_s": [t * (1 - s), t, t * (1 + s)]})
    got = fitting.spread(pts, coef, expectation.GROUPS, 7, expectation.regime, expectation.SPREAD_FLOORS,
                         exact=("delays_s",), abs_floor=0.001)
    # 8% of a variable part that is 68-100% of the point, and as much again for the fit's own error (7
    # points, 7 terms: a new run's expectation is as uncertain as a run)
    assert 0.08 * 2 ** 0.5 <= got["bandwidth-bound"] < 0.16, got
    assert got["per-request-bound"] < 0.04 or got["per-request-bound"] == expectation.SPREAD_FLOORS[
        "per-request-bound"], got
    # and a jitter of 5 ms on every copy shows as abs_s, not as a regime's spread
    jitter = [{**p, "runs_s": [p["measured_s"] - 0.005, p["measured_s"] + 0.005]} for p in POINTS]
    got = fitting.spread(jitter, coef, expectation.GROUPS, 7, expectation.regime, expectation.SPREAD_FLOORS,
                         exact=("delays_s",), abs_floor=0.001)
    assert 0.005 < got["abs_s"] < 0.012 and got["bandwidth-bound"] < 0.05, got


def test_a_run_on_the_slow_copy_path_is_not_counted_as_the_models_scatter():
    """A point's repeats vary by 1%, but one of them took the machine's slow copy path (3x): its variance
    is that of the runs off the path, and the regime's spread stays what those say."""
    coef = fitting.fit(POINTS, expectation.TERMS, {"delays": 1.0})
    steady = [{**p, "runs_s": [p["measured_s"] * 0.99, p["measured_s"] * 1.01]} for p in POINTS]
    slow = [{**p, "runs_s": [*p["runs_s"], p["measured_s"] * 3], "clean_runs_s": p["runs_s"]} for p in steady]
    assert fitting.run_variance(slow[1]) == pytest.approx(fitting.run_variance(steady[1]))
    assert fitting.run_variance({"runs_s": slow[1]["runs_s"]}) > 100 * fitting.run_variance(steady[1])

    def spread(pts: list) -> dict:
        return fitting.spread(pts, coef, expectation.GROUPS, 7, expectation.regime, expectation.SPREAD_FLOORS,
                              exact=("delays_s",), abs_floor=0.001)

    assert spread(slow) == spread(steady)
    assert spread([{**p, "clean_runs_s": []} for p in slow])["bandwidth-bound"] > 0.5  # counted: as it was


def _calibrated(spread: dict | None = None, control: dict | None = None) -> expectation.Calibration:
    cal = _calibration("x")
    for f in cal.fits.values():
        f.spread = spread or {"delay-bound": 0.2, "per-request-bound": 0.2, "bandwidth-bound": 0.04, "abs_s": 0.003}
        f.control = control or {"reference_s": 0.1, "spread": 0.01}
    return cal


TALK_ROW = {"fixed": 1.0, "wire_requests": 54.0, "backend_requests": 254.0, "sleeps": 250.0, "mib": 50.0,
            "warm_mib": 32.0, "slept_mib": 50.0, "delays": 4.25}  # qemu 4.2 on A, the talk's geometry
GIB_FULL = {"fixed": 1.0, "wire_requests": 1025.0, "backend_requests": 1025.0, "mib": 1024.0, "warm_mib": 32.0,
            "grown_mib": 896.0}  # 1 GiB of data, 1 MiB requests, no delays


def test_an_interval_is_narrow_where_sleeps_dominate_and_wider_where_bytes_do():
    cal = _calibrated()
    talk = cal.expect("qemu-4.2", 1, "single", TALK_ROW)
    gib = cal.expect("qemu-4.2", 1, "single", GIB_FULL)
    assert talk.regime == "delay-bound" and gib.regime == "bandwidth-bound"
    for e in (talk, gib):
        assert e.low_s < e.expected_s < e.high_s and e.coverage == expectation.COVERAGE
    half = {e.regime: (e.high_s - e.low_s) / 2 / e.expected_s for e in (talk, gib)}
    assert half["delay-bound"] < 0.02 < 0.05 < half["bandwidth-bound"] < 0.12, half
    assert talk.low_s >= talk.breakdown["delays_s"]  # an in-order client never beats its sleeps
    # the interval of a parallel client may reach below its serial sleeps (they overlap)
    assert cal.expect("nbdcopy", 1, "single", TALK_ROW).low_s > 0


def test_the_median_of_several_runs_gets_a_narrower_interval_where_runs_scatter(monkeypatch):
    """Only the run-to-run part of a regime's spread shrinks for a median (the fit's error, the bias, the
    drift do not), never below the floor; a calibration without that part keeps one run's interval."""
    spread = {"delay-bound": 0.2, "per-request-bound": 0.2, "bandwidth-bound": 0.08, "abs_s": 0.003,
              "noise:bandwidth-bound": 0.07, "noise:abs_s": 0.0}
    cal = _calibrated(spread)
    one, three = cal.expect("qemu-4.2", 1, "single", GIB_FULL), cal.expect("qemu-4.2", 1, "single", GIB_FULL, runs=3)
    assert three.expected_s == one.expected_s and one.low_s < three.low_s < three.high_s < one.high_s
    half = (three.high_s - three.low_s) / 2 / three.expected_s
    # sqrt(0.08^2 - (1 - 0.449) x 0.07^2) = 0.058 of the variable part, beside 5% drift of it (no control)
    assert half == pytest.approx(expectation.Z * math.hypot(0.0583, 0.05), rel=0.03), half
    floored = _calibrated({**spread, "noise:bandwidth-bound": 0.08, "bandwidth-bound": 0.08})
    five, many = (floored.expect("qemu-4.2", 1, "single", GIB_FULL, runs=n) for n in (5, 20))
    floor = floored.expect("qemu-4.2", 1, "single", GIB_FULL, runs=1000)
    assert floor.high_s < five.high_s and many.high_s == floor.high_s  # at the floor: 3% of the variable part
    old = _calibrated()  # no run-to-run part stored: one run's interval
    assert old.expect("qemu-4.2", 1, "single", GIB_FULL, runs=3).high_s == old.expect(
        "qemu-4.2", 1, "single", GIB_FULL).high_s
    # `lab run --repeat 3` judges the median run against the median's interval
    from lab.cli import report

    runs = [Run(client="qemu-4.2", server=build_spec({}), status="succeeded", duration_s=t, expected_s=one.expected_s,
                expected_low_s=one.low_s, expected_high_s=one.high_s, backend=BackendCounts(), server_log=WireCounts())
            for t in (one.high_s * 0.99, one.expected_s, one.low_s)]
    monkeypatch.setattr(expectation, "expectation", lambda *a, runs=1, **k: three if runs == 3 else None)
    got = report.repeat_summary(runs)
    assert (got["expected_low_s"], got["expected_high_s"], got["interval_runs"]) == (three.low_s, three.high_s, 3)
    assert got["model_verdict"] == "within" and "(the median of 3)" in report.repeat_lines(got)


def test_a_run_outside_its_interval_says_which_way_and_the_part_most_likely_off():
    """1 GiB of zero-filled writes behind 2 ms sleeps (the sweep's qemu-2.7 row): the bytes are its
    largest uncertain part, so a miss is laid at their door."""
    spread = {"delay-bound": 0.1, "per-request-bound": 0.2, "bandwidth-bound": 0.04, "abs_s": 0.003}
    e = _calibrated(spread).expect("qemu-2.7", 1, "single", {**GIB_FULL, "slept_mib": 1024.0, "delays": 2.048,
                                                             "sleeps": 1024.0, "zero_mib": 1024.0})
    assert e.verdict(e.expected_s) == ("within", None)
    assert e.verdict(e.high_s * 1.5) == ("slower-than-model", "per_byte_s")
    assert e.verdict(e.low_s * 0.9) == ("faster-than-model", "per_byte_s")


def test_a_fresh_control_scales_the_per_byte_part_and_is_shown():
    """The control is a copy of bytes: its factor scales what it measured (the per-byte part), not a
    sleeping row's per-request costs or the sleeps, and only for those parts does it narrow the interval."""
    cal = _calibrated()
    plain = cal.expect("qemu-4.2", 1, "single", GIB_FULL)
    slow = drift.Control("era-q1/single", cal.id, [0.12, 0.121, 0.119], [0.12, 0.121, 0.119], 0.1,
                         stale_beyond=0.08)
    e = cal.expect("qemu-4.2", 1, "single", GIB_FULL, slow)
    # a precise control (runs and reference within 1%) is applied almost whole
    assert slow.factor == pytest.approx(1.2) and e.machine_factor == pytest.approx(1.2, rel=0.01)
    assert e.breakdown["per_byte_s"] == pytest.approx(plain.breakdown["per_byte_s"] * e.machine_factor, rel=1e-3)
    for part in ("per_request_s", "fixed_s"):
        assert e.breakdown[part] == plain.breakdown[part]
    assert plain.expected_s * 1.1 < e.expected_s < plain.expected_s * 1.2
    # measured just now, the machine's drift on the bytes is known to the control's precision: a
    # narrower interval for a row of bytes
    assert (e.high_s - e.low_s) / e.expected_s < (plain.high_s - plain.low_s) / plain.expected_s
    sleepy = cal.expect("qemu-4.2", 1, "single", TALK_ROW, slow)
    plain_sleepy = cal.expect("qemu-4.2", 1, "single", TALK_ROW)
    assert sleepy.breakdown["delays_s"] == 4.25  # sleeps do not scale
    assert sleepy.breakdown["per_request_s"] == plain_sleepy.breakdown["per_request_s"]
    # a row of requests and sleeps keeps the uncorrected drift on its per-request part: the control
    # narrows its interval only by what it knows of its bytes
    requests = {"fixed": 1.0, "wire_requests": 2000.0, "backend_requests": 2000.0, "sleeps": 2000.0, "delays": 2.0}
    a, b = cal.expect("qemu-4.2", 1, "single", requests), cal.expect("qemu-4.2", 1, "single", requests, slow)
    assert b.expected_s == a.expected_s and b.high_s - b.low_s == pytest.approx(a.high_s - a.low_s, rel=1e-3)


def test_a_noisy_control_moves_an_expectation_less_than_its_factor():
    """The factor is a ratio of the control now and its reference: when the reference's runs scattered
    by 23%, a control that reads 1.33 is weighed against the 5% the machine drifts without one, and
    moves the expectation by a fraction of it, with the interval keeping what is still unknown."""
    ctl = [0.133, 0.1335, 0.1325]
    precise = _calibrated(control={"reference_s": 0.1, "spread": 0.01})
    noisy = _calibrated(control={"reference_s": 0.1, "spread": 0.23})
    got = {}
    for name, cal in (("precise", precise), ("noisy", noisy)):
        c = drift.Control("era-q1/single", cal.id, ctl, ctl, 0.1, stale_beyond=0.5)
        got[name] = (cal.expect("qemu-4.2", 1, "single", GIB_FULL, c), cal.expect("qemu-4.2", 1, "single", GIB_FULL))
    (p, p0), (n, n0) = got["precise"], got["noisy"]
    assert p.machine_factor == pytest.approx(1.33, rel=0.01)
    assert 1.0 < n.machine_factor < 1.1  # (10% uncertain against 5% of drift: a fifth of the factor)
    half = {k: (e.high_s - e.low_s) / e.expected_s for k, (e, _) in got.items()}
    assert half["precise"] < half["noisy"] <= (n0.high_s - n0.low_s) / n0.expected_s  # never wider than none
    assert p0.expected_s == n0.expected_s


def _controls(factors: list[float], cal_id: str = "x@0", apart_s: float = 600.0) -> list[drift.Control]:
    """Controls of three close runs (1% apart) at these factors against a 0.1 s reference, `apart_s`
    apart in time (the last one now)."""
    now = time.time()
    return [drift.Control("era-q1/single", cal_id, [f * 0.1 * k for k in (0.99, 1.0, 1.01)],
                          [f * 0.1 * k for k in (0.99, 1.0, 1.01)], 0.1, at=now - apart_s * (len(factors) - 1 - i))
            for i, f in enumerate(factors)]


def test_the_machine_drift_is_what_its_controls_showed_beyond_their_own_error():
    reference = {"era-q1/single": (0.02, 6)}
    # too few controls to say: the assumed drift
    assert drift.machine_drift(_controls([0.8, 0.82]), reference) == drift.UNCORRECTED_DRIFT
    # a machine whose controls all read 0.72-1.0 of the reference (one evening's): it moves by ~15%, not 5%
    moving = drift.machine_drift(_controls([0.8, 0.87, 0.75, 0.95, 0.82, 0.72]), reference)
    assert 0.12 < moving < 0.30
    # a steady machine with one disturbed control (1.5x): the median does not let it set the drift
    steady = drift.machine_drift(_controls([1.01, 0.99, 1.02, 1.5, 0.98, 1.0]), reference)
    assert steady == drift.UNCORRECTED_DRIFT
    # controls of a kind the calibration has no reference for, or with every run disturbed, say nothing
    other = [drift.Control("nbdcopy/single", "x@0", [0.07], [0.07], 0.1)] * 5
    disturbed = [drift.Control("era-q1/single", "x@0", [0.3], [], 0.1)] * 5
    assert drift.machine_drift(other + disturbed, reference) == drift.UNCORRECTED_DRIFT


def test_controls_that_disagree_within_minutes_are_their_own_noise_not_the_machines_drift():
    """Two controls a minute apart measure one machine: what they disagree by beyond their runs' scatter
    is the controls' own error (control_noise), which weighs a control less and is not drift; the same
    factors ten minutes apart are the machine moving."""
    reference = {"era-q1/single": (0.02, 6)}
    factors = [0.8, 0.87, 0.75, 0.95, 0.82, 0.72]
    close, apart = _controls(factors, apart_s=60), _controls(factors, apart_s=600)
    assert drift.control_noise(apart, reference) == 0.0  # no pairs within PAIRED_S
    assert drift.control_noise(close[:3], reference) == 0.0  # too few pairs to say
    noise = drift.control_noise(close, reference)
    assert 0.05 < noise < 0.15
    assert drift.machine_drift(close, reference, noise) < drift.machine_drift(apart, reference) - 0.02
    steady = _controls([1.0, 1.01, 0.99, 1.0, 1.02, 0.98], apart_s=60)
    assert drift.control_noise(steady, reference) < 0.02  # agreeing about as well as their runs do: little
    # a control known to 2% by its runs, on a machine that moves by 15%: almost whole without noise; with
    # 10% of noise it is weighed as the 10% it is, and the interval keeps what is left unknown
    cal = _calibrated(control={"reference_s": 0.1, "spread": 0.02})
    c = _controls([0.82], cal.id)[0]
    trusting, weighing = (cal.expect("qemu-4.2", 1, "single", GIB_FULL, c, machine_drift=0.15, control_noise=n)
                          for n in (0.0, 0.10))
    assert trusting.machine_factor < 0.84 < 0.86 < weighing.machine_factor < 0.95
    assert weighing.high_s - weighing.low_s > trusting.high_s - trusting.low_s


def test_on_a_machine_that_moves_a_precise_control_is_trusted_almost_whole(data_dir):
    """The sweep's bandwidth-bound rows ran 0.84-0.93 of expectations scaled by 0.89-0.97, while their
    controls read 0.80-0.87: weighed against an assumed 5% drift, a 4% control got ~60% of its factor.
    Once the machine's controls showed it moves by ~15%, the same control is applied almost whole, and
    an expectation without a fresh control is as uncertain as the machine is (wider)."""
    where = _places(data_dir)
    cal = _calibrated(control={"reference_s": 0.1, "spread": 0.04})
    cal.fingerprint = expectation.fingerprint(expectation.machine())
    expectation.save(cal, where)
    path = expectation.cache_path(where)
    now = _controls([0.82], cal.id)[0]
    before = cal.expect("qemu-4.2", 1, "single", GIB_FULL, now)
    assert 0.86 < before.machine_factor < 0.92  # an assumed 5%: about 60% of the factor
    for c in _controls([0.8, 0.87, 0.75, 0.95, 0.82, 0.72], cal.id):
        drift.record(path, c)
    learned = expectation.machine_drift(cal, where)
    assert learned > 0.12 and expectation.state(where)["machine_drift"] == learned
    after = cal.expect("qemu-4.2", 1, "single", GIB_FULL, now, machine_drift=learned)
    assert after.machine_factor < 0.84  # almost whole
    bare, bare_now = (cal.expect("qemu-4.2", 1, "single", GIB_FULL, machine_drift=d) for d in (0.05, learned))
    assert bare_now.high_s - bare_now.low_s > 2 * (bare.high_s - bare.low_s)  # uncorrected: as unsure as the machine
    # what a finished run gets: of_counts reads the learned drift and the fresh control (`now`) from the file
    drift.record(path, _controls([0.82], cal.id)[0])  # the newest: measured after the others
    got = expectation.of_counts("qemu-4.2", 1, "single", GIB_FULL, where)
    assert got.machine_factor is not None and got.machine_factor < 0.84


def test_a_control_beyond_the_spread_marks_the_calibration_stale(data_dir):
    where = _places(data_dir)
    cal = _calibrated()
    cal.fingerprint = expectation.fingerprint(expectation.machine())
    expectation.save(cal, where)
    beyond = drift.stale_beyond(0.01, expectation.Z)
    assert 0.05 < beyond < 0.15
    path = expectation.cache_path(where)
    drift.record(path, drift.Control("era-q1/single", cal.id, [0.103], [0.103], 0.1, stale_beyond=beyond))
    assert expectation.state(where)["stale"] is False
    drift.record(path, drift.Control("era-q1/single", cal.id, [0.13, 0.131], [0.13, 0.131], 0.1,
                                     stale_beyond=beyond))
    drift.record(path, drift.Control("era-q1/single", cal.id, [0.5, 0.6], [], 0.1, stale_beyond=beyond))  # disturbed
    st = expectation.state(where)
    assert st["stale"] is True and st["stale_kinds"] == {"era-q1/single": pytest.approx(1.305)}
    assert drift.latest(path, cal.id, "era-q1/single").factor == pytest.approx(1.305)  # the disturbed one is no say
    # a control of another calibration says nothing about this one
    assert drift.latest(path, "other@1", "era-q1/single") is None
    # an old control no longer corrects, nor does one of another kind
    old = drift.Control("qemu-img/single", cal.id, [0.2], [0.2], 0.1, at=time.time() - drift.FRESH_S - 1)
    drift.record(path, old)
    assert drift.fresh(path, cal.id, "qemu-img/single") is None
    assert drift.fresh(path, cal.id, "era-q1/single").factor == pytest.approx(1.305)


def _plant(where: Places, scale: float = 1.0, reference_s: float = 0.1, fixed_s: float | None = None,
           spread: dict | None = None) -> expectation.Calibration:
    """A calibration with this machine's fingerprint and planted figures (coefficients x `scale`)."""
    cal = _calibrated(spread, {"reference_s": reference_s, "spread": 0.01})
    cal.fingerprint = expectation.fingerprint(expectation.machine())
    for f in cal.fits.values():
        f.coef = {k: v * scale for k, v in f.coef.items() if k != "delays"} | {"delays": f.coef.get("delays", 1.0)}
        if fixed_s is not None:
            f.coef = {"fixed": fixed_s, "delays": 1.0}
    expectation.save(cal, where)
    expectation.forget()
    return cal


FULL_SPEED = {"size": "64M", "pattern": "full", "maxdata": "1M", "delay_write": "0ms", "delay_zero": "0ms"}


def test_a_planted_drifted_calibration_is_found_stale_by_its_control(data_dir, no_leftovers):
    """A calibration whose control took 10 s for 128 MiB (planted): the control a CPU-bound run measures
    first runs it in a fraction of that, disturbed or not (others' work only slows a copy), so the
    calibration says it is stale, and the run says so too."""
    core = Core(places=_places(data_dir))
    cal = _plant(core.places, reference_s=10.0)
    run = Run(client="qemu-2.8", server=build_spec(FULL_SPEED), sweep_id="s1")
    c = calibration.before_run(run, core)
    assert c is not None and c.kind == "era-q1/single" and c.calibration == cal.id
    assert len(c.runs_s) == calibration.CONTROL_RUNS and c.stale, c.to_dict()
    assert any(n.startswith("control: 3 copies of 128M") for n in run.notes), run.notes
    assert expectation.state(core.places)["stale"] is True
    # the next CPU-bound row within SWEEP_CONTROL_S measures no control again
    assert calibration.before_run(Run(client="qemu-2.8", server=build_spec(FULL_SPEED), sweep_id="s1"), core) is None
    done = execute(run, core=core)
    assert done.status == "succeeded" and done.calibration_stale is True
    assert any(n.startswith("calibration stale:") for n in done.notes), done.notes
    # a sleep-bound run measures no control (it shares the machine), a run of another kind its own
    assert calibration.before_run(Run(client="qemu-2.8", server=build_spec({"size": "4M"})), core) is None


def test_a_model_that_expects_far_less_than_the_machine_does_says_slower_than_model(data_dir, no_leftovers):
    """Coefficients planted at a hundredth of the real costs: a run with delays (no control corrects it)
    lands above its interval, says so with the part most likely short, in a note, flat in the CSV."""
    core = Core(places=_places(data_dir))
    _plant(core.places, scale=0.01)
    spec = build_spec({"size": "32M", "pattern": "full", "maxdata": "1M", "delay_write": "1ms", "delay_zero": "1ms"})
    run = execute(Run(client="qemu-2.8", server=spec), core=core)
    assert run.status == "succeeded" and run.machine_factor is None
    assert run.expected_low_s < run.expected_s < run.expected_high_s < run.duration_s
    assert run.model_verdict == "slower-than-model" and run.model_term in expectation.PARTS
    assert run.regime == "delay-bound" and run.expected_coverage == expectation.COVERAGE
    assert any(n.startswith("slower than the model:") for n in run.notes), run.notes
    header, row = list(csv.reader(io.StringIO(to_csv([run.to_dict()]))))[:2]
    got = dict(zip(header, row, strict=True))
    assert got["model_verdict"] == "slower-than-model" and float(got["expected_high_s"]) == run.expected_high_s
    assert {"expected_low_s", "expected_high_s", "model_term", "regime", "machine_factor"} <= set(COLUMNS)


def test_a_cpu_hog_started_mid_sweep_makes_the_rows_after_it_slower_than_model(data_dir, no_leftovers):
    """A sweep of full-speed rows against an expectation planted at the fastest of its first three rows
    (the least disturbed): four processes spinning on the 2 cores from the fifth row on push those rows
    above their intervals, however loaded the machine was before."""
    import subprocess
    import sys

    core = Core(places=_places(data_dir))
    spec = build_spec(FULL_SPEED)
    before = [execute(Run(client="qemu-img", server=spec, sweep_id="s2"), core=core) for _ in range(3)]
    assert all(r.status == "succeeded" for r in before)
    _plant(core.places, fixed_s=min(r.duration_s for r in before), spread={"per-request-bound": 0.05, "abs_s": 0.003})
    hogs: list[subprocess.Popen] = []
    verdicts = []
    try:
        for i in range(3):
            if i == 1:
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
            run = execute(Run(client="qemu-img", server=spec, sweep_id="s2"), core=core)
            assert run.status == "succeeded"
            verdicts.append((run.model_verdict, run.contended, run.duration_s, run.expected_high_s))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert [v[0] for v in verdicts[1:]] == ["slower-than-model"] * 2, verdicts
    assert all(v[1] for v in verdicts[1:]), verdicts  # and they say others used the CPU


@pytest.mark.parametrize(("e", "lo", "hi", "text"), [
    (3.27, 3.1, 3.44, "3.3 s (3.1-3.4)"), (0.0644, 0.064, 0.0694, "0.0644 s (0.0640-0.0694)"),
    (0.1503, 0.02, 0.31, "0.15 s (0.02-0.31)"), (12.23, 12.1, 12.4, "12.2 s (12.1-12.4)"),
    (8.3, 8.25, 8.36, "8.3 s (8.2-8.4)"), (8.3, 8.29, 8.33, "8.30 s (8.29-8.33)"), (1.0, None, None, "1.00 s"),
    (None, None, None, "-")])
def test_an_interval_is_spelt_with_the_digits_it_needs(e, lo, hi, text):
    from lab.domain.units import format_interval

    assert format_interval(e, lo, hi) == text


def test_a_kind_is_fitted_from_its_steps_with_the_controls_reference_from_its_quiet_runs():
    """fit_kind takes the steps() measured in order: the controls at both ends give the reference
    (their undisturbed runs) and are one more point of the fit."""
    kind = expectation.KINDS[2]
    plan = calibration.steps(kind)
    assert plan[0] == plan[-1] == calibration.CONTROL and len(plan) == len(calibration.PLAN_SERIAL) + 2
    pts = [{**p, "runs_s": [p["measured_s"]] * 2, "clean_runs_s": [p["measured_s"]] * 2,
            "quiet_runs_s": [p["measured_s"]] * 2, "own_cpu_s": None} for p in POINTS]
    ctl = {**_point(129, 129, 0, 128, 0), "own_cpu_s": None}
    first = {**ctl, "runs_s": [0.10, 0.30, 0.11], "clean_runs_s": [0.10, 0.30, 0.11], "quiet_runs_s": [0.10, 0.11]}
    last = {**ctl, "runs_s": [0.12, 0.10, 0.11], "clean_runs_s": [0.12, 0.10, 0.11], "quiet_runs_s": [0.12, 0.10, 0.11]}
    fit = calibration.fit_kind(kind, [first, *pts, last])
    assert fit.control["reference_s"] == 0.11 and fit.control["clean_s"] == [0.10, 0.11, 0.12, 0.10, 0.11]
    assert 0.05 < fit.control["spread"] < 0.1
    assert len(fit.points) == len(pts) + 1 and fit.coef["delays"] == 1.0
    assert set(fit.spread) == {*expectation.REGIMES, "abs_s", *(f"noise:{r}" for r in (*expectation.REGIMES, "abs_s"))}


def test_a_control_beside_a_calibration_this_process_may_not_write_is_kept_in_memory(data_dir):
    """A shared calibration file that is read-only here: the control still corrects this process's runs."""
    where = _places(data_dir)
    cal = _calibrated()
    cal.fingerprint = expectation.fingerprint(expectation.machine())
    expectation.save(cal, where)
    path = expectation.cache_path(where)
    drift.path_for(path).mkdir()  # where the records would go is not a file: the write fails
    drift.record(path, drift.Control("era-q1/single", cal.id, [0.11], [0.11], 0.1, stale_beyond=0.08))
    assert drift.fresh(path, cal.id, "era-q1/single").factor == pytest.approx(1.1)


def test_lab_calibrate_control_measures_every_kind_and_exits_1_when_stale(data_dir, no_leftovers):
    """`lab calibrate --control` against a planted calibration whose control took 10 s: every kind's
    control now runs in a fraction of that, so the calibration is stale (exit 1), and --show says so."""
    import os
    import subprocess
    import sys

    path = data_dir / "calibration.json"
    _plant(dataclasses.replace(places.current(), calibration_file=path), reference_s=10.0)
    env = {**os.environ, "LAB_CALIBRATION_FILE": str(path)}
    lab = str(Path(sys.executable).with_name("lab"))
    p = subprocess.run([lab, "calibrate", "--control"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("control: 3 copies of 128M") == len(expectation.KINDS), p.stderr
    assert "STALE: the newest control of" in p.stdout and "qemu-img/single" in p.stdout
    shown = subprocess.run([lab, "calibrate", "--show", "--json"], capture_output=True, text=True, env=env, timeout=60)
    got = json.loads(shown.stdout)
    assert shown.returncode == 0 and got["stale"] is True
    assert set(got["stale_kinds"]) == {k.key for k in expectation.KINDS}
    assert len(got["controls"]) == len(expectation.KINDS)
