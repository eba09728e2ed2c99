"""REST runs: start, list, inspect, cancel; validation 422s that name the field; 404, 409, 429."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apiutil import FAST, SLOW, client_for, serve, sse_events, start_run, wait_final, wait_for

MiB = 1 << 20


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


def test_run_on_a_fresh_server_echoes_normalised_fields(api):
    r = api.post("/api/runs", json={"client": "qemu-img",
                                    "server": {"size": "8M", "maxdata": 262144, "delay_write": "1ms",
                                               "delay_zero": 1, "zeromode": "plugin"}})
    assert r.status_code == 202, r.text
    run = r.json()
    assert r.headers["location"] == f"/api/v1/runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["server"] == {"zeromode": "plugin", "fastzeromode": "default", "size": 8 * MiB,
                             "pattern": "alternate:1M", "maxdata": 262144, "delay_write": 1.0, "delay_zero": 1.0,
                             "plugin": "memory", "noextents": True, "source_format": "qcow2",
                             "kind": "nbdkit", "storage": None, "disk_format": "raw", "target": None,
                             "destructive": False, "disk_init": "sparse"}
    row = wait_final(api, run["id"])
    assert row["status"] == "succeeded", row["error"]
    assert row["verified"] is True
    assert (row["backend"]["write_ops"], row["backend"]["zero_ops"]) == (16, 4)
    for key in ("id", "status", "client", "server", "duration_s", "predicted_s", "verified", "backend", "wire",
                "error"):
        assert key in row
    # each key once in the raw JSON: a stored run's computed fields (ratio) are not read back as extras
    pairs = json.loads(api.get(f"/api/runs/{run['id']}").text, object_pairs_hook=lambda kv: kv)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    listed = api.get("/api/runs", params={"status": "succeeded", "client": "qemu-img"}).json()
    assert listed["total"] == 1 and listed["runs"][0] == row
    assert listed["last_event_id"] >= 1
    assert api.get("/api/runs", params={"client": "nbdcopy"}).json()["total"] == 0


def test_same_result_as_the_cli(api):
    """REST and `lab run --json` print the same object: same fields, same counts."""
    import subprocess
    import sys

    lab = str(Path(sys.executable).with_name("lab"))
    cli = json.loads(subprocess.run([lab, "run", "--client", "qemu-img", "--zeromode", "emulate", "--size", "8M",
                                     "--delay-write", "1ms", "--delay-zero", "1ms", "--json"],
                                    capture_output=True, text=True, check=True, timeout=120).stdout)
    rest = wait_final(api, start_run(api, "qemu-img", zeromode="emulate")["id"])
    assert set(rest) == set(cli)
    for key in ("status", "client", "server", "backend", "wire", "predicted_s", "verified", "model", "flags"):
        assert rest[key] == cli[key], key


@pytest.mark.parametrize(("body", "loc"), [
    ({"server": {"size": True}}, ["body", "server", "size"]),
    ({"server": {"size": "8 parsecs"}}, ["body", "server", "size"]),
    ({"server": {"size": -1}}, ["body", "server", "size"]),
    ({"server": {"size": "100G"}}, ["body", "server", "size"]),
    ({"server": {"size": 10**30}}, ["body", "server", "size"]),
    ({"server": {"maxdata": "1k"}}, ["body", "server", "maxdata"]),
    ({"server": {"delay_write": "5parsecs"}}, ["body", "server", "delay_write"]),
    ({"server": {"delay_write": "2s"}}, ["body", "server", "delay_write"]),
    ({"server": {"delay_zero": False}}, ["body", "server", "delay_zero"]),
    ({"server": {"delay_zero": 10**400}}, ["body", "server", "delay_zero"]),
    ({"server": {"delay_zero": 0.5}}, ["body", "server", "delay_zero"]),
    ({"server": {"zeromode": "sometimes"}}, ["body", "server", "zeromode"]),
    ({"server": {"fastzeromode": 1}}, ["body", "server", "fastzeromode"]),
    ({"server": {"pattern": "zigzag"}}, ["body", "server", "pattern"]),
    ({"server": {"noextents": "yes"}}, ["body", "server", "noextents"]),
    ({"server": {"colour": "red"}}, ["body", "server", "colour"]),
    ({"client": "qemu-9.9"}, ["body", "client"]),
    ({"queue_depth": 0}, ["body", "queue_depth"]),
    ({"queue_depth": "2"}, ["body", "queue_depth"]),
    ({"server": {}, "server_id": "abc"}, ["body", "server_id"]),
    ({"surprise": 1}, ["body", "surprise"]),
])
def test_bad_fields_are_422_naming_the_field(api, body, loc):
    r = api.post("/api/runs", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "invalid-request" and problem["status"] == 422, problem
    assert problem["errors"][0]["loc"] == loc, problem
    assert problem["errors"][0]["message"] and not problem["errors"][0]["message"].startswith("Value error")
    assert set(problem["errors"][0]) <= {"loc", "message", "code", "value"}, "no ctx, no input"


def test_nan_and_broken_json_are_400_and_wrong_shapes_422_not_500(api):
    for text in ('{"server": {"delay_zero": NaN}}', '{"server": {"size": Infinity}}', '{"server": '):
        r = api.post("/api/runs", content=text, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "bad-request", (text, r.text)  # not JSON (RFC 8259)
    for text in ("[]", "7"):
        r = api.post("/api/runs", content=text, headers={"content-type": "application/json"})
        assert r.status_code == 422, (text, r.text)
    r = api.post("/api/runs", content=b"{" + b" " * 200_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_ids_are_404(api):
    for path in ("/api/runs/nope", "/api/runs/..%2F..%2Fetc", "/api/sweeps/nope", "/api/servers/nope",
                 "/api/runs/nope/events", "/api/scenarios/nope"):
        assert api.get(path).status_code == 404, path
    assert api.post("/api/runs/nope/cancel").status_code == 404
    assert api.delete("/api/servers/nope").status_code == 404
    assert api.post("/api/runs", json={"server_id": "nope"}).status_code == 404


def test_queue_full_429_and_cancel_409(tmp_path):
    with client_for(tmp_path / "data", workers=1, queue_size=1) as api:
        first = start_run(api, **SLOW)
        wait_for(lambda: api.get(f"/api/runs/{first['id']}").json()["status"] == "running")
        second = start_run(api)
        r = api.post("/api/runs", json={"server": FAST})
        assert r.status_code == 429 and r.headers["retry-after"]
        assert "queue" in r.json()["detail"]
        r = api.post(f"/api/runs/{second['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = api.post(f"/api/runs/{first['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.json()
        assert r.json()["verified"] is not True, "a cancelled run is never counted as a success"
        r = api.post(f"/api/runs/{first['id']}/cancel")
        assert r.status_code == 409 and "finished" in r.json()["detail"]
        # a sweep that can never fit (7 rows, a queue of 1) is refused whole, and told waiting will not help
        r = api.post("/api/scenarios/reference/runs", json={"server": FAST})
        assert r.status_code == 422 and r.json()["code"] == "never-fits" and "retry-after" not in r.headers
        assert "7 runs" in r.json()["detail"] and r.json()["limit"] == "queue-full"
        assert api.get("/api/runs").json()["total"] == 2


def test_progress_is_live_during_a_two_second_run(api):
    """Several progress events arrive while copying, with growing counts, before the run ends."""
    run = start_run(api, **SLOW)
    with api.stream("GET", f"/api/runs/{run['id']}/events") as resp:
        events = [e for e in sse_events(resp.iter_lines()) if "id" in e]
    assert events[-1]["event"] == "done"
    phases = [(e["event"], e["data"].get("phase")) for e in events]
    copy_at = phases.index(("state", "copy"))
    verify_at = phases.index(("state", "verify"))
    during = [e["data"] for e in events[copy_at:verify_at] if e["event"] == "progress"]
    assert len(during) >= 5, f"only {len(during)} progress events while copying"
    written = [p["backend"]["write_ops"] for p in during]
    assert written == sorted(written) and written[0] < 32 and written[-1] == 32
    assert during[0]["fraction"] < 1.0
    for p in during:
        assert {"run_id", "elapsed_s", "backend", "server_wire", "bytes_done", "fraction",
                "predicted_so_far_s"} <= set(p)
    done = events[-1]["data"]
    assert done["status"] == "succeeded" and done["run"]["backend"]["write_ops"] == 32


def test_health_clients_and_openapi(api):
    h = api.get("/api/health").json()
    assert h["status"] == "ok"
    assert h["versions"]["nbdkit"].startswith("1.") and "qemu-img" in h["versions"]["qemu-img"]
    assert h["versions"]["libnbd"].startswith("1.")
    ids = [c["id"] for c in api.get("/api/clients").json()]
    assert {"qemu-img", "nbdcopy"} <= set(ids)
    spec = api.get("/openapi.json").json()
    for path in ("/health", "/servers", "/servers/{server_id}", "/runs", "/runs/{run_id}",
                 "/runs/{run_id}/cancel", "/runs/{run_id}/events", "/events", "/scenarios",
                 "/scenarios/{name}/runs", "/results.csv", "/results.json"):
        assert "/api/v1" + path in spec["paths"], path
        assert "/api" + path not in spec["paths"], "the legacy alias is not documented"
    client_enum = spec["components"]["schemas"]["ClientId"]["enum"]
    assert set(client_enum) == set(ids)
    assert api.get("/docs").status_code == 200


def test_openapi_bounds_follow_the_settings_and_405_lists_every_method(tmp_path):
    with client_for(tmp_path / "data", max_size=16 << 20, max_delay_ms=50) as api:
        spec = api.get("/openapi.json").json()
        for variant in [*spec["components"]["schemas"]["ServerFields"]["oneOf"], {"$ref": "/SweepServerFields"}]:
            props = spec["components"]["schemas"][variant["$ref"].rsplit("/", 1)[1]]["properties"]
            ints = [s for s in props["size"]["anyOf"][0]["anyOf"] if s["type"] == "integer"]
            assert (ints[0]["minimum"], ints[0]["maximum"], ints[0]["multipleOf"]) == (1 << 20, 16 << 20, 512)
        assert (ints[0]["minimum"], ints[0]["maximum"], ints[0]["multipleOf"]) == (1 << 20, 16 << 20, 512)
        nums = [s for s in props["delay_write"]["anyOf"][0]["anyOf"] if s["type"] == "number"]
        assert nums[0]["maximum"] == 50
        errors = spec["paths"]["/api/v1/runs/{run_id}/events"]["get"]["responses"]["404"]["content"]
        assert list(errors) == ["application/problem+json"], "errors on stream routes are problems"
        r = api.put("/api/runs")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
        assert api.patch("/api/servers/abc").headers["allow"] == "DELETE, GET, HEAD"
        assert api.patch("/api/v1/servers/abc").headers["allow"] == "DELETE, GET, HEAD"
        assert api.post("/api/runs", json={"server": {"size": "32M"}}).json()["errors"][0]["loc"] == [
            "body", "server", "size"]
