"""POST /api/v1/audits: the zero audit as a job of the one scheduler; follow, cancel, report."""

from __future__ import annotations

import pytest
from apiutil import serve, wait_for

from lab.host import storage

AVAIL = storage.availability()
NBD_SERVER = {"server": {"kind": "nbd-server", "storage": "tmpfs"}, "sizes": ["64M", "64M+4K"],
              "flags": ["none"], "disks": ["dirty"], "inflight": 1}


@pytest.fixture
def api(tmp_path):
    yield from serve(tmp_path, workers=2, queue_size=8)


def final(api, aid: str, timeout: float = 240) -> dict:
    def done():
        a = api.get(f"/api/v1/audits/{aid}").json()
        return a if a["status"] not in ("queued", "running") else None

    return wait_for(done, timeout)


@pytest.mark.slow
def test_an_audit_is_queued_followed_and_reported(api):
    if not AVAIL["tmpfs"]["available"]:
        pytest.skip(AVAIL["tmpfs"]["reason"])
    r = api.post("/api/v1/audits", json=NBD_SERVER)
    assert r.status_code == 202, r.text
    aid = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/audits/{aid}"
    a = final(api, aid)
    assert a["status"] == "done" and a["verdict"] == "unsafe"
    assert a["safety"]["first_bad"]["offset_in_request"] == 64 << 20
    assert a["reproducers"] and "nbdsh" in a["reproducers"][0]["script"]
    # the typed answer (app/schemas/audits.py) is the record as kept, every key and value, nothing added
    assert a == api.app.state.manager.audits.get(aid)
    listed = api.get("/api/v1/audits").json()["audits"]
    assert listed[0]["id"] == aid and listed[0]["verdict"] == "unsafe" and "cells" not in listed[0]
    page = api.get(f"/api/v1/audits/{aid}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "STALE +64M" in page.text and "<script src" not in page.text
    both = api.get("/api/v1/audits/report.html", params={"ids": f"{aid},{aid}"})
    assert both.status_code == 200 and both.text.count("class='card'") == 2


def test_bad_audit_requests_name_the_field(api):
    cases = [({"server": {"kind": "podman"}}, ["body", "server", "kind"]),
             ({"server": {"storage": "floppy"}}, ["body", "server", "storage"]),
             ({"server": {"storage": "dev:/dev/sda", "destructive": True}}, ["body", "server", "storage"]),
             ({"server": {"storage": "path:/etc"}}, ["body", "server", "storage"]),  # not in LAB_AUDIT_PATHS
             ({"server": {"kind": "external", "target": "/run/x.sock", "destructive": True}},
              ["body", "server", "target"]),
             ({"sizes": ["lots"]}, ["body", "sizes", 0]),
             ({"sizes": ["8G"]}, ["body", "sizes"]),
             ({"flags": ["trim"]}, ["body", "flags", 0]),
             ({"inflight": 0}, ["body", "inflight"]),
             ({"deadline_s": -1}, ["body", "deadline_s"]),
             ({"server": {"plugin": "memory", "storage": "ext4"}}, ["body", "server", "storage"]),
             ({"bogus": 1}, ["body", "bogus"])]
    for body, loc in cases:
        r = api.post("/api/v1/audits", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["errors"][0]["loc"] == loc, (body, r.json())
    assert api.get("/api/v1/audits/nope").status_code == 404
    assert api.get("/api/v1/audits/../../etc").status_code == 404
    assert api.post("/api/v1/audits/nope/cancel").status_code == 404
    assert api.get("/api/v1/audits").json() == {"audits": []}  # nothing was queued


@pytest.mark.slow
def test_cancel_keeps_what_was_done(api):
    if not AVAIL["tmpfs"]["available"]:
        pytest.skip(AVAIL["tmpfs"]["reason"])
    r = api.post("/api/v1/audits", json={"server": {"kind": "nbd-server", "storage": "tmpfs"},
                                         "sizes": ["1M", "32M", "64M", "128M"], "inflight": 1})
    aid = r.json()["id"]
    wait_for(lambda: (api.get(f"/api/v1/audits/{aid}").json().get("progress") or {}).get("done", 0) >= 1, 120)
    c = api.post(f"/api/v1/audits/{aid}/cancel")
    assert c.status_code == 200, c.text
    a = final(api, aid)
    assert a["status"] == "cancelled" and a["groups"]["done"] < a["groups"]["total"]
    assert api.post(f"/api/v1/audits/{aid}/cancel").status_code == 409
