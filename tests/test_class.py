"""Students and predictions against a real `lab serve`: names on runs, the per-student limit,
guesses before the talk's acts, and everything exported."""

from __future__ import annotations

import csv
import io
import threading
import time
from typing import Any

import httpx
import pytest

from lab.domain.spec import SpecError
from lab.domain.students import clean_name, clean_prediction

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
BLOCKER = {"size": "100M", "delay_write": "20ms", "delay_zero": "5ms"}  # ~8 s: keeps a worker busy


def _wait_all(base: str, ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [httpx.get(f"{base}/api/v1/runs/{i}", timeout=10).json() for i in ids]
        if all(r["status"] not in ("queued", "running") for r in runs):
            return runs
        assert time.monotonic() < deadline, [r["status"] for r in runs]
        time.sleep(0.3)


def test_names_and_guesses_are_cleaned_and_bad_ones_named() -> None:
    assert clean_name("  Ana   María ") == "Ana María"
    for bad in ("", "   ", "x" * 41, "Ana\x00", "a\u200bb", 7):
        with pytest.raises(SpecError) as e:
            clean_name(bad)
        assert e.value.field == "student"
    assert clean_prediction({"duration_s": 4.25, "write_ops": 200.0}) == {"duration_s": 4.25, "write_ops": 200}
    for bad, field in (({}, "prediction"), ({"zero_ops": 1.5}, "prediction.zero_ops"),
                       ({"duration_s": -1}, "prediction.duration_s"), ({"speed": 3}, "prediction.speed"),
                       ({"write_ops": True}, "prediction.write_ops")):
        with pytest.raises(SpecError) as e:
            clean_prediction(bad)
        assert e.value.field == field


def test_ten_students_at_once_limit_holds_nothing_lost(live_service) -> None:
    svc = live_service(LAB_WORKERS="2", LAB_MAX_QUEUED_PER_STUDENT="4", token="teach", log_level="warning")
    base = svc.url
    auth = {"Authorization": "Bearer teach"}
    # The teacher's two long runs (the token, no student: the teacher's lane, not limited) keep both
    # workers busy meanwhile.
    blockers = [httpx.post(f"{base}/api/v1/runs", json={"client": "qemu-img", "server": BLOCKER}, headers=auth,
                           timeout=10).json() for _ in range(2)]
    assert all(b["lane"] == "teacher" for b in blockers)
    students = [f"Student {i}" for i in range(10)]
    answers: dict[str, list[httpx.Response]] = {s: [] for s in students}
    go = threading.Barrier(len(students))

    def student(name: str) -> None:
        with httpx.Client(timeout=30, headers=auth) as c:  # a name: the student's lane, whoever sends it
            go.wait()
            for n in range(6):
                body = {"client": "qemu-img", "server": FAST, "student": name,
                        "prediction": {"duration_s": 0.5 + n, "write_ops": 16}}
                answers[name].append(c.post(f"{base}/api/v1/runs", json=body))

    threads = [threading.Thread(target=student, args=(s,)) for s in students]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    accepted: dict[str, list[str]] = {}
    for name, rs in answers.items():
        codes = [r.status_code for r in rs]
        assert codes == [202] * 4 + [429] * 2, (name, codes, rs[-1].text)
        problem = rs[-1].json()
        assert name in problem["detail"] and "4" in problem["detail"] and "per-student limit" in problem["detail"]
        accepted[name] = [r.json()["id"] for r in rs[:4]]
        assert all(r.json()["student"] == name for r in rs[:4])
    # Each sees their own runs, and only theirs.
    for name, ids in accepted.items():
        mine = httpx.get(f"{base}/api/v1/runs", params={"student": name}, timeout=10).json()
        assert mine["total"] == 4 and sorted(r["id"] for r in mine["runs"]) == sorted(ids)
    view = httpx.get(f"{base}/api/v1/class", timeout=10).json()
    assert view["total_runs"] == 40 and {s["student"] for s in view["students"]} == set(students)
    assert all(s["unfinished"] == 4 for s in view["students"])
    for b in blockers:
        httpx.post(f"{base}/api/v1/runs/{b['id']}/cancel", headers=auth, timeout=10)
    runs = _wait_all(base, [i for ids in accepted.values() for i in ids])
    assert [r["status"] for r in runs] == ["succeeded"] * 40, [r.get("error") for r in runs]
    # The guesses came back with the results, and in the CSV export.
    assert all(r["prediction"]["write_ops"] == 16 and r["backend"]["write_ops"] > 0 for r in runs)
    text = httpx.get(f"{base}/api/v1/results.csv", params={"limit": 1000}, timeout=30).text
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["student"]]
    assert len(rows) == 40
    assert {r["prediction.write_ops"] for r in rows} == {"16"} and rows[0]["prediction.duration_s"]
    view = httpx.get(f"{base}/api/v1/class", timeout=10).json()
    assert all(s["by_status"] == {"succeeded": 4} and s["unfinished"] == 0 for s in view["students"])


def test_sweeps_carry_the_student_and_count_against_the_limit(live_service) -> None:
    svc = live_service(LAB_MAX_QUEUED_PER_STUDENT="2", log_level="warning")
    r = httpx.post(f"{svc.url}/api/v1/scenarios/reference/runs", json={"student": "Bo"}, timeout=10)
    assert r.status_code == 422 and r.json()["code"] == "never-fits" and "Bo" in r.json()["detail"]  # 7 > 2, ever
    r = httpx.post(f"{svc.url}/api/v1/scenarios/reference/runs", timeout=10,
                   json={"student": "Bo", "only": ["ref-none", "ref-plugin-default"], "server": FAST})
    assert r.status_code == 202 and r.json()["student"] == "Bo"
    assert {run["student"] for run in r.json()["runs"]} == {"Bo"}


def test_joined_students_guess_and_the_act_shows_their_guesses(live_service) -> None:
    svc = live_service(token="t0ken", log_level="warning")
    base, auth = svc.url, {"Authorization": "Bearer t0ken"}
    # Without joining, a student can neither run nor guess; with the teacher's code they join and guess.
    assert httpx.post(f"{base}/api/v1/runs", json={"student": "Cy"}, timeout=10).status_code == 401
    assert httpx.post(f"{base}/api/v1/guesses", json={"student": "Cy", "target": "act1-baseline",
                                                      "prediction": {"duration_s": 3}}, timeout=10).status_code == 401
    code = httpx.get(f"{base}/api/v1/class/session", headers=auth, timeout=10).json()["code"]
    keys = {}
    for name, secs in (("Cy", 3.0), ("Di", 9.5), ("Ed", 8.0)):
        keys[name] = {"Authorization": "Bearer " + httpx.post(f"{base}/api/v1/class/join", timeout=10,
                                                             json={"code": code, "name": name}).json()["key"]}
        r = httpx.post(f"{base}/api/v1/guesses", timeout=10, headers=keys[name],
                       json={"target": "act1-baseline", "prediction": {"duration_s": secs}})
        assert r.status_code == 201, r.text
    bad = httpx.post(f"{base}/api/v1/guesses", json={"target": "act9", "prediction": {"zero_ops": 1}},
                     headers=keys["Cy"], timeout=10)
    assert bad.status_code == 404 and bad.json()["errors"][0]["loc"][-1] == "target"
    run = httpx.post(f"{base}/api/v1/runs", headers=auth, timeout=10,
                     json={"client": "qemu-2.7", "server": FAST, "label": "act1-baseline"}).json()
    _wait_all(base, [run["id"]])
    acts = httpx.get(f"{base}/api/v1/class/acts", timeout=10).json()["acts"]
    act = next(a for a in acts if a["key"] == "baseline")
    row = act["rows"][0]
    assert act["state"]["locked"] and act["state"]["revealed"]  # the act ran and ended: the reveal
    assert row["key"] == "act1-baseline" and sorted(row["guesses"]["duration_s"]) == [3.0, 8.0, 9.5]
    assert row["students"] == ["Cy", "Di", "Ed"] and row["measured"]["run_id"] == run["id"]
    assert row["measured"]["write_ops"] == 32 and row["measured"]["predicted_s"] > 0
    assert [r["student"] for r in act["ranking"]] == ["Cy", "Ed", "Di"]  # closest to the 8M run's time first
    text = httpx.get(f"{base}/api/v1/guesses.csv", timeout=10).text
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["id", "student", "target", "created_at", "duration_s", "write_ops", "zero_ops"]
    assert len(lines) == 4 and {ln[1] for ln in lines[1:]} == {"Cy", "Di", "Ed"}


def test_sigterm_during_a_run_is_a_clean_exit_0(live_service) -> None:
    """`docker stop` sends SIGTERM: the service interrupts its run and exits 0 (not 143)."""
    svc = live_service(log_level="warning")
    run = httpx.post(f"{svc.url}/api/v1/runs", json={"client": "qemu-img", "server": BLOCKER}, timeout=10).json()
    deadline = time.monotonic() + 30
    while httpx.get(f"{svc.url}/api/v1/runs/{run['id']}", timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert svc.stop() == 0
    svc.start()
    assert httpx.get(f"{svc.url}/api/v1/runs/{run['id']}", timeout=10).json()["status"] == "interrupted"
