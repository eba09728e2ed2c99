"""Kinds, storages and the probe through the API."""

from __future__ import annotations

import pytest
from apiutil import serve
from test_kinds import AVAIL, no_storage_left

from lab.host import storage
from lab.nbd import backends


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path)


def test_kinds_lists_availability_with_reasons(api):
    d = api.get("/api/v1/kinds").json()
    assert set(d["kinds"]) == set(backends.KINDS) and set(d["storages"]) == set(storage.STORAGES)
    for a in (*d["kinds"].values(), *d["storages"].values()):
        assert a["available"] or a["reason"]
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    assert schema["Kind"]["enum"] == list(backends.KINDS) and schema["Storage"]["enum"] == list(storage.STORAGES)


def test_probe_returns_the_cli_shape(api, no_leftovers):
    r = api.post("/api/v1/probes", json={"server": {"zeromode": "plugin", "fastzeromode": "slow"}, "length": "2M"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["verdict"] == "refused-but-cheap" and d["flags"]["can_fast_zero"] is True
    assert {s["op"] for s in d["results"]} == {"write", "zero", "fast-zero", "trim"}


def test_probe_and_server_bad_fields_name_the_field(api):
    r = api.post("/api/v1/probes", json={"server": {"storage": "tmpfs"}, "length": "2M"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "server", "storage"]
    r = api.post("/api/v1/probes", json={"server": {"size": "16M"}, "length": "16M"})  # 4 ranges need 64M
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "server", "size"], r.text
    r = api.post("/api/v1/probes", json={"length": "3G"})
    assert r.status_code == 422 and "length" in r.json()["errors"][0]["loc"]
    r = api.post("/api/v1/servers", json={"kind": "external", "target": "10.0.0.1:10809", "destructive": True})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "target"
    assert "not listed" in r.json()["errors"][0]["message"] or "off" in r.json()["errors"][0]["message"]


def test_managed_qemu_nbd_server_on_tmpfs_is_released_on_delete(api, no_leftovers):
    if not AVAIL["tmpfs"]["available"]:
        pytest.skip(f"tmpfs unavailable here: {AVAIL['tmpfs']['reason']}")
    r = api.post("/api/v1/servers", json={"kind": "qemu-nbd", "storage": "tmpfs", "size": "8M"})
    assert r.status_code == 201, r.text
    srv = r.json()
    assert srv["server"]["kind"] == "qemu-nbd" and srv["real_server"]["storage"]["storage"] == "tmpfs"
    assert srv["proxy_cost"]["added_us_per_request"] is not None
    assert api.delete(f"/api/v1/servers/{srv['id']}").status_code == 200
    no_storage_left()
