"""Long-lived servers through the API: a real NBD client agrees with the flags we report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from apiutil import FAST, SLOW, client_for, serve, wait_final, wait_for


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


@pytest.mark.parametrize(("fields", "can_zero", "can_fast_zero"), [
    ({"zeromode": "plugin"}, True, True),
    ({"zeromode": "emulate", "fastzeromode": "none"}, True, False),
    ({"zeromode": "none"}, False, False),
    ({"zeromode": "emulate", "fastzeromode": "ignore"}, True, True),  # the two-process chain
])
def test_nbdinfo_agrees_with_reported_flags(api, fields, can_zero, can_fast_zero, no_leftovers):
    r = api.post("/api/servers", json={**FAST, **fields})
    assert r.status_code == 201, r.text
    srv = r.json()
    assert srv["uri"].startswith("nbd+unix:///?socket=") and srv["running"] is True
    assert srv["server"]["size"] == 8 << 20
    assert r.headers["location"] == f"/api/v1/servers/{srv['id']}"
    out = subprocess.run(["nbdinfo", "--json", srv["uri"]], capture_output=True, text=True, timeout=30, check=True)
    export = json.loads(out.stdout)["exports"][0]
    flags = srv["flags"]
    assert (flags["can_zero"], flags["can_fast_zero"]) == (can_zero, can_fast_zero)
    for key in ("can_zero", "can_fast_zero", "can_trim", "can_flush", "can_fua", "can_multi_conn", "is_read_only"):
        assert export[key] == flags[key], key
    assert export["export-size"] == flags["size"] == 8 << 20
    chain = (fields.get("zeromode"), fields.get("fastzeromode")) == ("emulate", "ignore")
    assert srv["build"]["topology"] == ("chain" if chain else "single")
    assert srv["build"]["processes"] == (2 if chain else 1) and ("argv_back" in srv) == chain
    assert api.get(f"/api/v1/servers/{srv['id']}").json()["flags"] == flags
    assert [s["id"] for s in api.get("/api/servers").json()["servers"]] == [srv["id"]]
    sock = Path(srv["uri"].split("socket=", 1)[1])
    assert sock.exists() and (sock.parent.stat().st_mode & 0o777) == 0o700
    r = api.delete(f"/api/v1/servers/{srv['id']}")
    assert r.status_code == 200 and r.json()["running"] is False
    assert not sock.exists()
    assert api.get(f"/api/v1/servers/{srv['id']}").status_code == 404


def test_runs_target_a_server_and_delete_cancels_them(api, no_leftovers):
    srv = api.post("/api/servers", json={**SLOW, "zeromode": "plugin"}).json()
    quick = api.post("/api/servers", json={**FAST, "zeromode": "plugin"}).json()
    r = api.post("/api/runs", json={"client": "qemu-img", "server_id": quick["id"]})
    assert r.status_code == 202
    row = wait_final(api, r.json()["id"])
    assert row["status"] == "succeeded" and row["server_id"] == quick["id"]
    assert row["server"] == quick["server"]
    assert (row["backend"]["write_ops"], row["backend"]["zero_ops"]) == (16, 4)
    assert api.get(f"/api/servers/{quick['id']}").json()["runs"] == 1

    slow_run = api.post("/api/runs", json={"client": "qemu-img", "server_id": srv["id"]}).json()
    wait_for(lambda: api.get(f"/api/runs/{slow_run['id']}").json()["status"] == "running")
    assert api.get(f"/api/v1/servers/{srv['id']}").json()["busy"] is True
    assert api.delete(f"/api/v1/servers/{srv['id']}").status_code == 200
    row = api.get(f"/api/runs/{slow_run['id']}").json()
    assert row["status"] == "cancelled" and "deleted" in row["error"]
    api.delete(f"/api/servers/{quick['id']}")


def test_server_limit_is_429_and_bad_fields_422(tmp_path, no_leftovers):
    with client_for(tmp_path / "data", max_servers=1) as api:
        first = api.post("/api/servers", json=FAST)
        assert first.status_code == 201
        r = api.post("/api/servers", json=FAST)
        assert r.status_code == 429 and "at most 1" in r.json()["detail"]
        r = api.post("/api/servers", json={"size": "8M", "maxdata": 12})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "maxdata"]
        r = api.post("/api/servers", json={"size": False})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "size"]
    # leaving the app stops its servers (no_leftovers checks processes and sockets)
