"""A class of thirty against a real `lab serve` (issue 21's acceptance), students as threads, no timing asserts:
they join with the teacher's code (look-alike names collide), guess, and queue runs while the teacher's
long runs hold the workers; the teacher's act starts before every student run still waiting; students take
turns; the audience (no key) cannot queue anything; a guess after the act started is refused; nothing is
lost; /class shows all thirty."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from lab.domain.run import FINAL

TOKEN = "sim-teacher"
T = {"Authorization": f"Bearer {TOKEN}"}
STUDENTS = 30
RUNS_EACH = 2
SMALL = {"size": "4M", "delay_write": "1ms", "delay_zero": "1ms"}
HOLD = {"zeromode": "none", "size": "8M", "delay_write": "400ms"}  # 32 writes: ~13 s on a worker
CYRILLIC_E = "\u0435"


def _parallel(fn, items) -> list[Any]:
    out: list[Any] = [None] * len(items)
    go = threading.Barrier(len(items))

    def one(i: int) -> None:
        go.wait()
        out[i] = fn(items[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _final(c: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 600
    while True:
        runs = [c.get(f"/api/v1/runs/{i}").json() for i in ids]
        if all(r["status"] in FINAL for r in runs):
            return runs
        assert time.monotonic() < deadline, [r["status"] for r in runs]
        time.sleep(1)


def test_thirty_students_take_turns_behind_the_teacher(live_service) -> None:
    svc = live_service(token=TOKEN, LAB_WORKERS="2", LAB_QUEUE_SIZE="64", LAB_MAX_QUEUED_PER_STUDENT="4",
                       log_level="warning")
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        code = c.get("/api/v1/class/session", headers=T).json()["code"]
        holds = [c.post("/api/v1/runs", json={"client": "qemu-img", "server": HOLD}, headers=T).json()["id"]
                 for _ in range(2)]  # the teacher's long runs hold both workers: what follows queues

        names = [f"Student {i:02d}" for i in range(STUDENTS)]

        def join(name: str) -> httpx.Response:
            with httpx.Client(base_url=svc.url, timeout=60) as s:
                return s.post("/api/v1/class/join", json={"code": code, "name": name})

        joined = _parallel(join, names)
        assert [r.status_code for r in joined] == [201] * STUDENTS, [r.text for r in joined if r.status_code != 201]
        keys = {r.json()["student"]: {"Authorization": f"Bearer {r.json()['key']}"} for r in joined}
        # look-alikes collide: case, punctuation, spaces, a Cyrillic e
        for look_alike in ("student 00", "STUDENT-01", f"Stud{CYRILLIC_E}nt 02", "Student 03."):
            r = c.post("/api/v1/class/join", json={"code": code, "name": look_alike})
            assert r.status_code == 409 and r.json()["code"] == "name-taken", look_alike

        def student(name: str) -> list[str]:
            with httpx.Client(base_url=svc.url, timeout=60, headers=keys[name]) as s:
                g = s.post("/api/v1/guesses", json={"target": "act1-baseline", "prediction": {"duration_s": 8}})
                assert g.status_code == 201, g.text
                ids = []
                for _ in range(RUNS_EACH):
                    r = s.post("/api/v1/runs", json={"client": "qemu-img", "server": SMALL})
                    assert r.status_code == 202, r.text
                    assert r.json()["student"] == name
                    ids.append(r.json()["id"])
                return ids

        ids_by_student = dict(zip(names, _parallel(student, names), strict=True))
        student_ids = [i for ids in ids_by_student.values() for i in ids]
        # the audience (no key) queues nothing, however often it asks
        for _ in range(20):
            assert c.post("/api/v1/runs", json={"client": "qemu-img", "server": SMALL}).status_code == 401
        # the teacher starts act 1: it goes before every student run still waiting
        waiting = {i for i in student_ids if c.get(f"/api/v1/runs/{i}").json()["status"] == "queued"}
        act = c.post("/api/v1/runs", json={"client": "qemu-2.7", "server": {**SMALL, "zeromode": "none"},
                                           "label": "act1-baseline"}, headers=T).json()["id"]
        late = c.post("/api/v1/guesses", json={"target": "act1-baseline", "prediction": {"duration_s": 1}},
                      headers=keys[names[0]])
        assert late.status_code == 409 and late.json()["code"] == "guesses-locked"

        runs = {r["id"]: r for r in _final(c, [*holds, act, *student_ids])}
    # nothing lost: every run ended, every student run succeeded
    assert all(runs[i]["status"] == "succeeded" for i in [act, *student_ids]), \
        {i: (runs[i]["status"], runs[i].get("error")) for i in student_ids if runs[i]["status"] != "succeeded"}
    assert waiting, "the teacher's runs held the workers: student runs were waiting"
    assert all(runs[act]["started_at"] <= runs[i]["started_at"] for i in waiting)
    # turns: every student's first run started before any student's second
    firsts = [runs[ids[0]]["started_at"] for ids in ids_by_student.values()]
    seconds = [runs[ids[1]]["started_at"] for ids in ids_by_student.values()]
    assert max(firsts) <= min(seconds), "a student's second run went before another student's first"
    with httpx.Client(base_url=svc.url, timeout=60) as c:
        view = c.get("/api/v1/class", headers=T).json()
        assert len(view["members"]) == STUDENTS and {m["student"] for m in view["members"]} == set(names)
        assert {s["student"]: s["by_status"] for s in view["students"]} == \
            {n: {"succeeded": RUNS_EACH} for n in names}
        act1 = next(a for a in c.get("/api/v1/class/acts").json()["acts"] if a["key"] == "baseline")
        assert sorted(act1["rows"][0]["students"]) == names and act1["state"]["revealed"]
        assert len(act1["ranking"]) == STUDENTS
