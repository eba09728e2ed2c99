"""The zero audit's parts, without a server: the matrix, the pattern and its read-back, the verdicts."""

from __future__ import annotations

import itertools

import pytest

from lab.domain import latency
from lab.nbd import audit, audit_verdict
from lab.nbd.audit_cells import (
    GUARD,
    Damage,
    Group,
    Plan,
    Size,
    check_same,
    check_zero,
    parse_sizes,
    pattern,
)

MiB = 1 << 20


def test_sizes_name_the_64_mib_edges_and_unaligned_requests():
    got = parse_sizes(["64M-4K", "64M+4K", "64K+1@1", "1M@512", "4K"])
    assert [(s.length, s.misalign) for s in got] == [(4096, 0), (65537, 1), (MiB, 512), (64 * MiB - 4096, 0),
                                                      (64 * MiB + 4096, 0)]
    assert [s.text for s in got] == ["4k", "64k+1 @+1", "1M @+512", "64M-4k", "64M+4k"]
    for bad in ("", "x", "4G", "0", "1M@4096", "64M-64M"):
        with pytest.raises(ValueError):
            parse_sizes([bad])


def test_ranges_keep_a_guard_of_known_data_on_each_side():
    g = Group(0, Size(64 * MiB + 4096, 1), "none", "dirty", inflight=3)
    rs = g.ranges()
    assert len(rs) == 3 and all(n == 64 * MiB + 4096 for _, n in rs)
    assert rs[0][0] == GUARD + 1  # one byte into its 4 KiB block
    for (a, n), (b, _) in itertools.pairwise(rs):
        assert b - (a + n) >= GUARD  # a whole guard between two ranges
    assert g.extent() >= rs[-1][0] + rs[-1][1] + GUARD


def test_plan_runs_small_requests_first_and_several_in_flight_only_where_the_disk_allows():
    plan = audit.make_plan(["1G", "4K", "64M"], inflight=4)
    groups = plan.groups()
    assert next(g.size.length for g in groups) == 4096 and groups[-1].size.length == 1 << 30
    assert {g.inflight for g in groups if g.size.length == 64 * MiB} == {1, 4}
    assert {g.inflight for g in groups if g.size.length in (4096, 1 << 30)} == {1}
    assert len({(g.size, g.flags, g.disk, g.inflight) for g in groups}) == len(groups)
    assert plan.disk_size() >= (1 << 30) + 2 * GUARD


def test_plan_options_are_checked_by_name():
    for kwargs, field in (({"sizes": ["nope"]}, "sizes"), ({"flags": ("trim",)}, "flags"),
                          ({"disks": ("full",)}, "disks"), ({"inflight": 0}, "inflight"),
                          ({"sizes": ["1G"], "max_size": MiB}, "max_size")):
        with pytest.raises(audit.AuditError) as e:
            audit.make_plan(**kwargs)
        assert e.value.field == field


def test_server_fields_take_only_what_an_audit_means():
    assert audit.server_fields({"kind": "nbd-server"}) == {"kind": "nbd-server", "storage": "tmpfs"}
    assert audit.server_fields({}) == {"kind": "nbdkit", "plugin": "memory"}
    assert audit.server_fields({"storage": "ext2"})["plugin"] == "file"
    for fields, field in (({"plugin": "memory", "storage": "ext4"}, "storage"),
                          ({"kind": "qemu-nbd", "plugin": "file"}, "plugin"),
                          ({"kind": "nbd-server", "disk_format": "qcow2"}, "disk_format"),
                          ({"kind": "external", "storage": "tmpfs"}, "storage")):
        with pytest.raises(audit.AuditError) as e:
            audit.server_fields(fields)
        assert e.value.field == field


def test_the_pattern_has_no_zero_byte_and_says_where_it_came_from():
    a = pattern(4096 - 3, 3 * 4096, seed=7)
    assert a.count(0) == 0 and len(a) == 3 * 4096
    assert pattern(0, 8192, 7)[4096:] == pattern(4096, 4096, 7)  # the same bytes wherever it is cut
    assert pattern(0, 4096, 7) != pattern(4096, 4096, 7) and pattern(0, 4096, 7) != pattern(0, 4096, 8)


def test_read_back_finds_stale_bytes_and_changed_neighbours_exactly():
    data = bytearray(3 * MiB)
    data[MiB + 100:MiB + 200] = b"\xa5" * 100
    d = Damage()
    check_zero(bytes(data), 1000, d)
    assert d.bad_bytes == 100 and d.first_bad == 1000 + MiB + 100 and d.ranges == [[1000 + MiB + 100, 100]]
    assert not Damage() and d
    expected = pattern(0, 16384, 1)
    got = bytearray(expected)
    got[5000] ^= 0xFF
    got[9000] = 0
    d2 = Damage()
    check_same(bytes(got), expected, 0, d2)
    assert d2.bad_bytes == 2 and d2.first_bad == 4096 and d2.ranges == [[4096, 8192]]


def _cell(**kw):
    base = {"index": 0, "size": 64 * MiB, "misalign": 0, "inflight": 1, "flags": "none", "disk": "dirty",
            "position": "first", "key": "64M none dirty", "cell": "0.0", "outcome": "ok", "zero_s": 0.01,
            "flush_s": 0.0, "prepared": {"write_s": 0.1}, "debug": [],
            "evidence": {"before": {"allocated": 0, "device_written": None, "server_wchar": 0},
                         "after": {"allocated": 0, "device_written": None, "server_wchar": 0}}}
    return {**base, **kw}


def _ev(before, after):
    return {"before": before, "after": after}


def test_cheap_is_what_the_storage_did_not_the_clock():
    n = 64 * MiB
    # nbdkit's fallback: dear, however fast the clock says it was
    c = _cell(debug=["nbdkit: file.0: debug: zero falling back to writing",
                     f"nbdkit: file.0: debug: file: pwrite count={n} offset=0"])
    got = audit_verdict.cost(c, 0.1)
    assert got["class"] == "dear" and "fallback" in got["basis"]
    # the server wrote the range out itself (nbd-server on tmpfs): dear, at 10% of the overwrite's time
    c = _cell(evidence=_ev({"server_wchar": 10}, {"server_wchar": 10 + n}))
    assert audit_verdict.cost(c, 0.1)["class"] == "dear"
    # a punched hole gives the blocks back
    c = _cell(evidence=_ev({"allocated": n, "server_wchar": 0}, {"allocated": 0, "server_wchar": 0}))
    assert audit_verdict.cost(c, 0.01)["class"] == "cheap"
    # a loop device that took the whole range: dear; one that took nothing: cheap
    c = _cell(evidence=_ev({"device_written": 0}, {"device_written": n}))
    assert audit_verdict.cost(c, 1.0)["class"] == "dear"
    c = _cell(evidence=_ev({"device_written": 0}, {"device_written": 4096}), zero_s=5.0)
    assert audit_verdict.cost(c, 0.1)["class"] == "cheap"
    # no evidence at all: the clock decides, and says so
    c = _cell(evidence=_ev({}, {}), zero_s=0.09)
    got = audit_verdict.cost(c, 0.1)
    assert got["class"] == "dear" and got["basis"].startswith("time")


def test_speed_verdict_keeps_the_cheap_dear_split():
    cheap = {"class": "cheap"}
    dear = {"class": "dear"}
    cells = [_cell(flags="none", cost=cheap), _cell(flags="no-hole", cost=dear),
             _cell(flags="fast-zero", outcome="not-advertised")]
    v = audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": False})
    assert v["verdict"] == "not-advertised-cheap" and v["no_hole"] == "dear"
    cells[0]["cost"] = dear
    assert audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": False})["verdict"] == "not-advertised-dear"
    cells[2] = _cell(flags="fast-zero", outcome="refused", zero_s=0.0001)
    assert audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": True})["verdict"] == "refused-quickly"
    cells[0]["cost"] = cheap
    assert audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": True})["verdict"] == "refused-but-cheap"
    cells[2] = _cell(flags="fast-zero", cost=cheap)
    assert audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": True})["verdict"] == "fast"
    cells[2] = _cell(flags="fast-zero", cost=dear)
    assert audit_verdict.speed(cells, {"can_zero": True, "can_fast_zero": True})["verdict"] == "advertised-but-slow"
    assert audit_verdict.speed(cells, {"can_zero": False})["verdict"] == "no-zero"


def test_safety_names_the_first_bad_offset_into_the_request():
    g = Group(3, Size(64 * MiB + 4096), "none", "dirty")
    start = g.ranges()[0][0]
    bad = _cell(index=3, size=64 * MiB + 4096, unsafe=True, cell="3.0", key=g.key,
                stale={"bad_bytes": 4096, "first_bad": start + 64 * MiB, "ranges": [[start + 64 * MiB, 4096]]})
    s = audit_verdict.safety([_cell(unsafe=False), bad])
    assert s["unsafe"] and s["bad_cells"] == 1
    assert s["first_bad"]["offset_in_request"] == 64 * MiB and s["first_bad"]["bytes"] == 4096


def test_latency_percentiles_and_zero_size_histogram():
    p = latency.percentiles([0.001 * i for i in range(1, 101)])
    assert p == {"n": 100, "p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert latency.percentiles([]) is None
    assert latency.size_histogram([4096, 4097, 64 << 20, (64 << 20) + 1]) == [
        {"le": 4096, "count": 1}, {"le": 8192, "count": 1}, {"le": 64 << 20, "count": 1},
        {"le": 128 << 20, "count": 1}]
    got = latency.by_operation([("Zero", 4096, 0.002), ("Write", 65536, 0.001), ("Zero", 8192, None)])
    assert got["latency"]["Zero"]["n"] == 1 and got["zero_sizes"] == [{"le": 4096, "count": 1},
                                                                        {"le": 8192, "count": 1}]


def test_plan_round_trips_through_its_json():
    plan = Plan(tuple(parse_sizes(["64M+4K", "1M@512"])))
    d = plan.to_dict()
    assert d["sizes"] == ["1M @+512", "64M+4k"] and d["disk_size"] == plan.disk_size()


def test_without_mount_rights_the_default_storage_is_a_tmpfs_already_mounted(monkeypatch):
    from lab.host import storage

    real = storage.availability()
    fake = {**real, "tmpfs": {"available": False, "reason": "mounting needs root"},
            "shm": {"available": True}}
    monkeypatch.setattr(storage, "availability", lambda places=None: fake)
    assert audit.check_request({"kind": "nbd-server"}, audit.make_plan(["1M"]))["storage"] == "shm"
    with pytest.raises(audit.AuditError) as e:  # asked for by name: refused, with the reason
        audit.check_request({"kind": "nbd-server", "storage": "tmpfs"}, audit.make_plan(["1M"]))
    assert e.value.field == "storage" and "root" in e.value.message


def test_an_audit_a_stopped_service_left_running_reads_back_interrupted(tmp_path):
    import json

    from lab.host.places import Places
    from lab.service.audits import AuditBook

    book = AuditBook(scheduler=None, places=Places.under(tmp_path))
    book.dir.mkdir(parents=True)
    (book.dir / "abc123.json").write_text(json.dumps({"id": "abc123", "status": "running", "label": "x",
                                                      "created_at": 1.0}))
    assert book.get("abc123")["status"] == "interrupted"
    assert [a["status"] for a in book.list()] == ["interrupted"]
    for bad in ("nope", "../etc", "a" * 80):
        with pytest.raises(Exception) as e:
            book.get(bad)
        assert type(e.value).__name__ == "NotFound"
