"""The class's tiers and guesses (issue 21): teacher (LAB_TOKEN), student (join code -> key), audience;
one member per canonical name; one guess per student and act row, closed when the act starts, hidden
until the reveal, rate-limited, deletable by the teacher; cancelling others' runs is the teacher's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apiutil import FAST, client_for, wait_final

from lab.domain.students import canonical

TOKEN = "class-teacher-token"
T = {"Authorization": f"Bearer {TOKEN}"}
CYRILLIC_A = "\u0410"
GREEK_NU = "\u039d"


def test_look_alike_names_are_one_canonical_name() -> None:
    same = ["Ana", "ana", "ANA", "Ana.", " A n a ", CYRILLIC_A + "na", "\uff21na", "\u0391" + GREEK_NU + "\u0391",
            "A\u0301na"]
    assert {canonical(n) for n in same} == {"ana"}
    assert canonical("Ana Maria") == canonical("ana-maria") == "anamaria"
    assert canonical("Bob") != canonical("Rob") and canonical("=1+1") == "11" and canonical("...") == ""


@pytest.fixture
def api(tmp_path) -> Iterator:
    with client_for(tmp_path / "data", token=TOKEN) as client:
        yield client


def _join(api, name: str, code: str | None = None) -> dict[str, str]:
    code = code or api.get("/api/v1/class/session", headers=T).json()["code"]
    r = api.post("/api/v1/class/join", json={"code": code, "name": name})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def _guess(api, who: dict[str, str], target: str, seconds: float):
    return api.post("/api/v1/guesses", json={"target": target, "prediction": {"duration_s": seconds}}, headers=who)


def test_joining_takes_the_code_and_a_name_nobody_looks_like(api) -> None:
    code = api.get("/api/v1/class/session", headers=T).json()["code"]
    assert api.get("/api/v1/class/session").status_code == 403  # the code is the teacher's to show
    assert api.get("/api/v1/class").json()["session"]["code"] is None
    assert api.get("/api/v1/class", headers=T).json()["session"]["code"] == code
    r = api.post("/api/v1/class/join", json={"code": "WRONG1", "name": "Ana"})
    assert r.status_code == 403 and r.json()["code"] == "bad-join-code"
    _join(api, "Ana", code.lower())  # the code is read off a projector: case does not matter
    for look_alike in ("ana", "Ana.", CYRILLIC_A + "na"):
        r = api.post("/api/v1/class/join", json={"code": code, "name": look_alike})
        assert r.status_code == 409 and r.json()["code"] == "name-taken", look_alike
        assert r.json()["errors"][0]["loc"] == ["body", "name"]
    r = api.post("/api/v1/class/join", json={"code": code, "name": "!!!"})
    assert r.status_code == 422
    members = api.get("/api/v1/class").json()["members"]
    assert [(m["student"], m["canonical"], m["joined"]) for m in members] == [("Ana", "ana", True)]


def test_a_new_code_ends_the_session_and_its_keys(api) -> None:
    ana = _join(api, "Ana")
    assert _guess(api, ana, "act1-baseline", 7).status_code == 201
    assert api.post("/api/v1/class/session", headers=ana).status_code == 403  # not a student's
    new = api.post("/api/v1/class/session", headers=T).json()
    r = _guess(api, ana, "act1-baseline", 8)
    assert r.status_code == 401 and "join again" in r.json()["detail"]
    assert api.get("/api/v1/guesses", headers=ana).status_code == 200  # a stale key still reads
    ana2 = _join(api, "Ana", new["code"])  # the name is free in the new session
    assert _guess(api, ana2, "act1-baseline", 9).status_code == 201
    assert [g["prediction"] for g in api.get("/api/v1/guesses", headers=T).json()["guesses"]] == [{"duration_s": 9}]


def test_what_each_tier_may_write(api) -> None:
    ana, bob = _join(api, "Ana"), _join(api, "Bob")
    # the audience (no credential) reads and writes nothing
    assert api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST}).status_code == 401
    assert _guess(api, {}, "act1-baseline", 3).status_code == 401
    # a student runs under their own name, whatever the body says
    r = api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST, "student": "Bob"}, headers=ana)
    assert r.status_code == 202 and r.json()["student"] == "Ana"
    mine = r.json()["id"]
    theirs = api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST}, headers=bob).json()["id"]
    teachers = api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST}, headers=T).json()["id"]
    for rid in (theirs, teachers):
        r = api.post(f"/api/v1/runs/{rid}/cancel", headers=ana)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = api.post("/api/v1/runs/cancel", json={}, headers=ana)
    assert r.status_code == 403
    assert api.post("/api/v1/servers", json={}, headers=ana).status_code == 403
    assert api.delete("/api/v1/servers", headers=ana).status_code == 403
    assert api.post("/api/v1/class/session", headers=ana).status_code == 403
    assert api.delete("/api/v1/guesses", headers=ana).status_code == 403
    assert api.post(f"/api/v1/runs/{mine}/cancel", headers=ana).status_code in (200, 202, 409)  # own: allowed
    assert api.post("/api/v1/runs/cancel", json={"student": "Bob"}, headers=T).status_code == 200
    for rid in (mine, theirs, teachers):
        wait_final(api, rid)


def test_one_guess_per_student_and_row_closed_when_the_act_starts_hidden_until_revealed(api) -> None:
    ana, bob = _join(api, "Ana"), _join(api, "Bob")
    assert _guess(api, ana, "act1-baseline", 7).json()["replaced"] is False
    again = _guess(api, ana, "act1-baseline", 6.5)
    assert again.status_code == 201 and again.json()["replaced"] is True
    assert _guess(api, bob, "act1-baseline", 12).status_code == 201
    # before the reveal: Bob sees his own value and that Ana guessed, not what; the teacher sees all
    seen = {g["student"]: g for g in api.get("/api/v1/guesses", headers=bob).json()["guesses"]}
    assert seen["Bob"]["prediction"] == {"duration_s": 12} and seen["Ana"]["prediction"] is None
    assert seen["Ana"]["hidden"] is True
    teacher = {g["student"]: g["prediction"] for g in api.get("/api/v1/guesses", headers=T).json()["guesses"]}
    assert teacher == {"Ana": {"duration_s": 6.5}, "Bob": {"duration_s": 12}}
    act = next(a for a in api.get("/api/v1/class/acts").json()["acts"] if a["key"] == "baseline")
    assert not act["state"]["locked"] and act["rows"][0]["guesses"]["duration_s"] == []
    assert sorted(act["rows"][0]["students"]) == ["Ana", "Bob"] and act["ranking"] == []
    # the act starts (the teacher runs its row): guesses close
    run = api.post("/api/v1/runs", json={"client": "qemu-2.7", "server": FAST, "label": "act1-baseline"},
                   headers=T).json()
    r = _guess(api, ana, "act1-baseline", 8)
    assert r.status_code == 409 and r.json()["code"] == "guesses-locked"
    wait_final(api, run["id"])
    act = next(a for a in api.get("/api/v1/class/acts").json()["acts"] if a["key"] == "baseline")
    assert act["state"]["locked"] and act["state"]["revealed"]  # its runs ended: revealed
    assert sorted(act["rows"][0]["guesses"]["duration_s"]) == [6.5, 12]
    assert [r["student"] for r in act["ranking"]] == ["Ana", "Bob"]  # closest first
    assert act["rows"][0]["measured"]["run_id"] == run["id"]
    lines = api.get("/api/v1/class.csv").text.splitlines()
    assert lines[0].startswith("act,row,student,guess_s,measured_s,model_s") and len(lines) == 3
    # the teacher reopens the act for a second round, deletes a guess
    assert api.post("/api/v1/class/acts/baseline/reopen", headers=T).json()["locked"] is False
    assert _guess(api, ana, "act1-baseline", 0.5).status_code == 201
    gid = next(g["id"] for g in api.get("/api/v1/guesses", headers=T).json()["guesses"] if g["student"] == "Bob")
    assert api.delete(f"/api/v1/guesses/{gid}", headers=T).json() == {"deleted": 1}
    assert api.delete(f"/api/v1/guesses/{gid}", headers=T).status_code == 404
    assert [g["student"] for g in api.get("/api/v1/guesses", headers=T).json()["guesses"]] == ["Ana"]
    assert api.post("/api/v1/class/acts/baseline/reveal", headers=T).json()["revealed"] is True
    assert api.get("/api/v1/guesses").json()["guesses"][0]["prediction"] == {"duration_s": 0.5}


def test_guesses_are_rate_limited_per_student(api) -> None:
    ana = _join(api, "Ana")
    codes = [_guess(api, ana, "act1-baseline", 1 + i).status_code for i in range(15)]
    assert codes[:12] == [201] * 12 and 429 in codes[12:]
    r = _guess(api, ana, "act1-baseline", 3)
    assert r.status_code == 429 and r.json()["code"] == "rate-limited" and int(r.headers["Retry-After"]) >= 1
    assert len(api.get("/api/v1/guesses", headers=T).json()["guesses"]) == 1  # one per row, replaced


def test_join_codes_cannot_be_tried_in_bulk(api) -> None:
    codes = [api.post("/api/v1/class/join", json={"code": f"X{i:05d}", "name": "Ana"}).status_code
             for i in range(70)]
    assert codes[:60] == [403] * 60 and 429 in codes[60:]  # a class joins at once; a bot tries one a second


def test_an_open_lab_makes_look_alike_typed_names_one_student(tmp_path) -> None:
    with client_for(tmp_path / "data") as api:
        ids = []
        for name in ("Ana", "ana", "Ana.", CYRILLIC_A + "na"):
            r = api.post("/api/v1/runs", json={"client": "qemu-img", "server": FAST, "student": name})
            assert r.status_code == 202, r.text
            assert r.json()["student"] == "Ana"
            ids.append(r.json()["id"])
        r = api.post("/api/v1/guesses", json={"student": "ANA", "target": "act1-baseline",
                                              "prediction": {"duration_s": 4}})
        assert r.status_code == 201 and r.json()["student"] == "Ana"
        assert [m["canonical"] for m in api.get("/api/v1/class").json()["members"]] == ["ana"]
        for rid in ids:
            wait_final(api, rid)
        students = api.get("/api/v1/class").json()["students"]
        assert [(s["student"], s["total"]) for s in students] == [("Ana", 4)]
