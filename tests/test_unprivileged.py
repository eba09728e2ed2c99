"""The lab as its users run it: `lab serve` as a non-root user (nobody, uid 65534, when the tests run as
root), as the shipped container runs it. No mount rights, no loop devices: every page and every request
the pages' scripts make must still answer, scenario rows the machine cannot run are listed as such
with the reason, and the block-status act (2b) runs on the storages an unprivileged user has (issue 21).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pagedata
import pytest

from lab.domain.run import FINAL
from testkit import LiveService

USER = "nobody"
TOKEN = "unprivileged-teacher"


def _as_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None  # already unprivileged: run as ourselves
    return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def lab() -> Iterator[LiveService]:
    pw = _as_user()
    root = Path(tempfile.mkdtemp(prefix="unpriv-"))
    shm = Path("/dev/shm") / f"fastzero-lab-{pw.pw_uid if pw else os.getuid()}"
    shm_was_there = shm.exists()
    try:
        os.chmod(root, 0o755)
        data, run = root / "data", root / "run"
        for d in (data, run):
            d.mkdir(mode=0o700)
            if pw:
                os.chown(d, pw.pw_uid, pw.pw_gid)
        # its own image cache: the test session's shared one is root's
        svc = LiveService(root, env={"LAB_IMAGE_DIR": str(data / "images")}, token=TOKEN, data_dir=data,
                          runtime_dir=run, log_level="warning", user=USER if pw else None)
        with svc:
            yield svc
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if not shm_was_there:  # the service made it (storage shm); its disks are released already
            with contextlib.suppress(OSError):
                shm.rmdir()


def _client(lab: LiveService) -> httpx.Client:
    return lab.http(timeout=60)


def _wait(client: httpx.Client, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["status"] in FINAL:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def test_the_service_really_runs_unprivileged(lab: LiveService) -> None:
    with open(f"/proc/{lab.pid}/status") as f:
        uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
    assert int(uid) != 0
    kinds = lab.get("/api/v1/kinds")
    assert kinds["storages"]["tmpfs"]["available"] is False and "root" in kinds["storages"]["tmpfs"]["reason"]


def test_scenarios_list_every_row_with_what_this_machine_can_run(lab: LiveService) -> None:
    """GET /scenarios (and each one) answers; a row it cannot run says so and why, never a 500."""
    listed = lab.get("/api/v1/scenarios")["scenarios"]
    assert {s["name"] for s in listed} >= {"case-study", "reference", "today", "acts"}
    for s in listed:
        one = lab.get(f"/api/v1/scenarios/{s['name']}")
        rows = one["rows"] + [r for a in one["acts"] for r in a["rows"]]
        assert all(isinstance(r["available"], bool) for r in rows), s["name"]
        assert all(r["reason"] for r in rows if not r["available"]), s["name"]
    today = lab.get("/api/v1/scenarios/today")["rows"]
    gone = {r["key"]: r["reason"] for r in today if not r["available"]}
    assert "qemu-img@file-tmpfs" in gone and "mount" in gone["qemu-img@file-tmpfs"]
    assert "qemu-img@file-ext4" in gone and "loop" in gone["qemu-img@file-ext4"]
    assert any(r["available"] for r in today)  # memory and datadir rows run
    acts = lab.get("/api/v1/scenarios/acts")["acts"]
    assert {a["key"] for a in acts} == {"baseline", "write-zeroes", "pre-zero", "block-status", "no-fallback",
                                        "fast-zero"}
    for a in acts:
        if a["key"] != "block-status":
            assert all(r["available"] for r in a["rows"]), a["key"]
    bs = next(a for a in acts if a["key"] == "block-status")
    # The same question asked of what an unprivileged user has: an already-mounted tmpfs (A) and
    # the data dir's disk filesystem (B), same row keys; or the reason, never a missing row.
    assert [r["key"] for r in bs["rows"]] == [f"act-bs-{g}-{s}" for s in ("32M", "64M", "128M") for g in "AB"]
    for r in bs["rows"]:
        if r["available"]:
            assert r["server"]["storage"] == ("shm" if r["group"] == "A" else "datadir"), r
        else:
            assert "tmpfs" in r["reason"] or "ext4" in r["reason"], r


def test_a_sweep_says_what_it_left_out_and_why(lab: LiveService) -> None:
    with _client(lab) as c:
        r = c.post("/api/v1/scenarios/today/runs",
                   json={"only": ["qemu-img@memory", "qemu-img@file-tmpfs"], "server": {"size": "4M"}})
        assert r.status_code == 202, r.text
        sweep = r.json()
        assert sweep["total"] == 1 and [s["key"] for s in sweep["skipped"]] == ["qemu-img@file-tmpfs"]
        assert "mount" in sweep["skipped"][0]["reason"]
        assert c.get(f"/api/v1/sweeps/{sweep['id']}").json()["skipped"] == sweep["skipped"]  # kept
        done = _wait(c, sweep["run_ids"][0])
        assert done["status"] == "succeeded", done.get("error")
        # nothing of it runs here: refused, nothing queued
        r = c.post("/api/v1/scenarios/today/runs", json={"only": ["qemu-img@file-tmpfs"]})
        assert r.status_code == 409 and r.json()["code"] == "not-runnable", r.text
        assert "qemu-img@file-tmpfs" in r.json()["detail"] and "mount" in r.json()["detail"]


def test_the_block_status_act_runs_on_what_an_unprivileged_user_has(lab: LiveService) -> None:
    acts = lab.get("/api/v1/scenarios/acts")["acts"]
    rows = {r["key"]: r for a in acts if a["key"] == "block-status" for r in a["rows"]}
    keys = ["act-bs-A-32M", "act-bs-B-32M"]
    if not all(rows[k]["available"] for k in keys):
        pytest.skip(f"no tmpfs or data dir for the block-status act here: {[rows[k].get('reason') for k in keys]}")
    with _client(lab) as c:
        r = c.post("/api/v1/scenarios/acts/runs", json={"only": keys})
        assert r.status_code == 202, r.text
        assert r.json()["skipped"] == []
        runs = [_wait(c, rid) for rid in r.json()["run_ids"]]
    by = {run["label"]: run for run in runs}
    for key, storage, fs in (("act-bs-A-32M", "shm", "tmpfs"), ("act-bs-B-32M", "datadir", None)):
        run = by[key]
        assert run["status"] == "succeeded" and run["verified"] is True, (key, run.get("error"))
        assert run["server"]["storage"] == storage
        assert run["wire"]["block_status"] > 0  # the question this act is about was asked
        filesystem = (run.get("backend_info") or run.get("server_info") or {}).get("storage", {}) or {}
        if fs and filesystem:
            assert filesystem.get("filesystem") == fs
    # and the rows' runs are found where the talk looks for them
    found = {row["key"]: row["total"] for row in lab.get("/api/v1/scenarios/acts/rows?per_row=1")["rows"]}
    assert found["act-bs-A-32M"] >= 1 and found["act-bs-B-32M"] >= 1


def test_every_page_and_every_request_its_scripts_make_answers(lab: LiveService) -> None:
    """What a browser asks for when the pages load, not only 200 on the HTML: < 500 for all."""
    with _client(lab) as c:
        r = c.post("/api/v1/runs", json={"client": "qemu-img", "server": {"size": "4M"}})
        assert r.status_code == 202, r.text
        run = r.json()
        r = c.post("/api/v1/scenarios/reference/runs", json={"only": ["ref-none"], "server": {"size": "4M"}})
        assert r.status_code == 202, r.text
        sweep = r.json()
        names = [s["name"] for s in c.get("/api/v1/scenarios").json()["scenarios"]]
        values = {"id": [run["id"]], "run.id": [run["id"]], "sweep.id": [sweep["id"]], "name": names,
                  "perRow": ["3"], "LIMIT": ["20"], "lastEventId": ["0"], "params": ["", "?status=succeeded"],
                  "act.key": ["baseline"], "g.id": ["0" * 12]}
        paths = [*pagedata.PAGES, f"/runs/{run['id']}", *pagedata.paths(values)]
        bad = []
        for path in paths:
            if path.startswith("/api/v1/events"):
                with c.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
                    status = r.status_code
            else:
                status = c.get(path).status_code
            if status >= 500:
                bad.append(f"GET {path} -> {status}")
        assert not bad, bad
        assert len(paths) > 30  # the harvest found the pages' requests
        _wait(c, run["id"])
