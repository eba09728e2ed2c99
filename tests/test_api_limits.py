"""Capacity errors that say whether waiting helps, ttl_s within LAB_SERVER_TTL_S, idempotency on
the JSON's meaning (not its bytes), ETags on results and traces."""

from __future__ import annotations

import json

import pytest
from apiutil import FAST, serve, start_run, wait_final

B = "/api/v1"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("limits"), queue_size=4, workers=1, max_queued_per_student=3,
                     server_ttl_s=600, max_servers=2)


def _rows(n: int) -> list[dict]:
    return [{"key": f"r{i}", "server": {**FAST, "size": f"{i + 1}M"}} for i in range(n)]


def test_a_sweep_the_queue_can_never_hold_is_422_not_429(api):
    r = api.post(f"{B}/sweeps", json={"rows": _rows(5)})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "never-fits" and "retry-after" not in r.headers
    assert "4" in r.json()["detail"] and "5" in r.json()["detail"]
    r = api.post(f"{B}/sweeps", json={"rows": _rows(2), "repeats": 3})  # 6 runs
    assert r.status_code == 422 and r.json()["code"] == "never-fits"
    assert api.get(f"{B}/sweeps").json()["total"] == 0


def test_a_student_asking_more_than_their_limit_is_422(api):
    only = ["ref-none", "ref-plugin-ignore", "ref-emulate-ignore", "ref-emulate-none"]  # the limit is 3 per student
    r = api.post(f"{B}/scenarios/reference/runs", json={"only": only, "student": "Ana", "server": FAST})
    assert r.status_code == 422 and r.json()["code"] == "never-fits", r.text
    assert "Ana" in r.json()["detail"]


def test_429_only_when_waiting_helps(api):
    slow = api.post(f"{B}/runs", json={"server": {"size": "8M", "delay_write": "1000ms"}}).json()
    try:
        queued = [api.post(f"{B}/runs", json={"server": FAST}) for _ in range(4)]
        assert all(r.status_code == 202 for r in queued), [r.text for r in queued]
        r = api.post(f"{B}/sweeps", json={"rows": _rows(2)})
        assert r.status_code == 429, r.text
        assert r.json()["code"] == "limit-reached" and r.headers["retry-after"].isdigit()
        assert r.json()["limit"] == "queue-full"
    finally:
        api.post(f"{B}/runs/cancel", json={})
    wait_final(api, slow["id"])


@pytest.mark.parametrize(("ttl", "ok"), [(True, False), (False, False), ("60", False), (60, True), (60.0, True),
                                          (600, True), (601, False), (30 * 86400, False), (0, False), (-1, False)])
def test_ttl_is_a_number_within_lab_server_ttl_s(api, ttl, ok):
    r = api.post(f"{B}/servers", json={**FAST, "ttl_s": ttl})
    if ok:
        assert r.status_code == 201, r.text
        assert r.json()["ttl_s"] == ttl
        api.delete(f"{B}/servers/{r.json()['id']}")
    else:
        assert r.status_code == 422, (ttl, r.status_code, r.text)
        assert r.json()["errors"][0]["loc"] == ["body", "ttl_s"]


def test_the_schema_bounds_ttl_by_the_setting(api):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for variant in schemas["ServerCreate"]["oneOf"]:  # the server union's variants (app/schemas/serverunion.py)
        ttl = schemas[variant["$ref"].rsplit("/", 1)[1]]["properties"]["ttl_s"]
        number = next(s for s in ttl.get("anyOf", [ttl]) if s.get("type") == "number")
        assert number["maximum"] == 600


def test_idempotency_compares_the_json_not_its_bytes(api):
    key = {"Idempotency-Key": "reorder-1", "content-type": "application/json"}
    body = {"server": {**FAST, "zeromode": "plugin"}, "label": "idem"}
    first = api.post(f"{B}/runs", content=json.dumps(body), headers=key)
    assert first.status_code == 202, first.text
    reordered = json.dumps({"label": "idem", "server": dict(reversed(list(body["server"].items())))}, indent=2)
    again = api.post(f"{B}/runs", content=reordered, headers=key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true", again.text
    assert again.json()["id"] == first.json()["id"]
    other = api.post(f"{B}/runs", content=json.dumps({**body, "label": "idem2"}), headers=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-key-reused"
    wait_final(api, first.json()["id"])


def _etag_round(api, path: str, **params) -> str:
    r = api.get(B + path, params=params)
    assert r.status_code == 200 and r.headers.get("etag"), (path, r.status_code, dict(r.headers))
    tag = r.headers["etag"]
    again = api.get(B + path, params=params, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.headers["etag"] == tag and again.content == b""
    assert api.get(B + path, params=params, headers={"If-None-Match": '"other"'}).status_code == 200
    return tag


def test_results_and_traces_have_etags(api):
    run = wait_final(api, start_run(api)["id"])
    assert run["status"] == "succeeded", run
    tag = _etag_round(api, "/results.json", limit=5)
    csv_tag = _etag_round(api, "/results.csv", limit=5)
    assert csv_tag != tag
    _etag_round(api, f"/runs/{run['id']}/trace")
    _etag_round(api, f"/runs/{run['id']}/trace", format="csv")
    _etag_round(api, f"/sweeps/{api.post(f'{B}/sweeps', json={'rows': _rows(1)}).json()['id']}/results", wait=30)
    wait_final(api, start_run(api)["id"])  # a new run: the results change, so does their tag
    assert api.get(f"{B}/results.json", params={"limit": 5}).headers["etag"] != tag


def test_a_server_that_does_not_start_is_a_502_that_says_why(api, monkeypatch):
    from lab.nbd.servers import Server

    def broken(self):
        raise RuntimeError("nbdkit exited at once (planted)")

    monkeypatch.setattr(Server, "start", broken)
    r = api.post(f"{B}/servers", json=FAST)
    assert r.status_code == 502 and r.json()["code"] == "server-failed", r.text
    assert "planted" in r.json()["detail"]
    monkeypatch.undo()
    ok = api.post(f"{B}/servers", json=FAST)  # the failed one held no place
    assert ok.status_code == 201, ok.text
    api.delete(f"{B}/servers/{ok.json()['id']}")


def test_a_qemu_nbd_disk_of_any_512_multiple_starts(api):
    """qemu refuses an O_DIRECT image whose size is not a multiple of 4k: such a disk goes through
    the page cache (found by scripts/fuzz_api.py: a 500 before)."""
    r = api.post(f"{B}/servers", json={**FAST, "size": 8356352, "kind": "qemu-nbd"})
    assert r.status_code == 201, r.text
    assert api.delete(f"{B}/servers/{r.json()['id']}").status_code == 200
