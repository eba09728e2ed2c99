"""The case study's data and its reproduction: rows, acts, and the counts behind the 2019 table.

The counts are checked at the talk's full geometry (100 MiB alternating 1 MiB, maxdata
256k) with 1 ms delays: the request counts do not depend on the delays, and the talk's
delays turn them into the predicted times that are compared with the 2019 figures.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from lab.domain import floor
from lab.domain.run import Run
from lab.domain.scenarios import (
    ACTS,
    OTHER_CLIENTS,
    REFERENCE_ROWS,
    SCENARIOS,
    Row,
    get_scenario,
    rows_of,
)
from lab.domain.spec import build_spec
from lab.measure.execute import execute
from lab.nbd.backends import Machine
from lab.nbd.clients import client_ids
from lab.nbd.servers import nbdkit_version, topology
from testkit import REPO

ERAS = ("qemu-2.7", "qemu-2.8", "qemu-3.1", "qemu-4.0", "qemu-4.2")
TABLE = {  # the 2019 table: server params -> (time, backend writes, backend zeroes)
    ("none", "default"): (8.54, 400, 0),
    ("plugin", "ignore"): (4.30, 200, 4),
    ("emulate", "ignore"): (12.51, 600, 0),
    ("emulate", "none"): (8.32, 400, 0),
    ("plugin", "none"): (4.54, 200, 50),
    ("emulate", "default"): (8.41, 400, 0),
    ("plugin", "default"): (4.31, 200, 4),
}
CORE_REFUSES_EMULATED_FAST = tuple(int(x) for x in nbdkit_version().split(".")[:3]) >= (1, 31, 9)


def _server(row: Row) -> tuple[str, str]:
    spec = build_spec(row.server)
    return spec.zeromode, spec.fastzeromode


# --- data ------------------------------------------------------------------------------


def test_case_study_holds_the_reference_rows_and_every_client() -> None:
    cs = get_scenario("case-study")
    refs = [r for r in cs.rows if r.reference and r.key.startswith("ref-")]
    assert len(refs) == 7 and {r.client for r in refs} == {"qemu-4.2"}
    assert {_server(r) for r in refs} == set(TABLE)
    for r in refs:
        t, w, z = TABLE[_server(r)]
        assert (r.reference["time_s"], r.reference["write_ops"], r.reference["zero_ops"]) == (t, w, z)
    pairs = {(r.client, _server(r)) for r in cs.rows}
    for client in OTHER_CLIENTS:
        assert (client, ("plugin", "none")) in pairs and (client, ("emulate", "none")) in pairs
    assert set(OTHER_CLIENTS) | {"qemu-4.2"} <= set(client_ids())
    assert get_scenario("reference").rows == REFERENCE_ROWS


def test_every_row_is_valid_and_serialisable() -> None:
    for s in SCENARIOS.values():
        keys = [r.key for r in s.rows]
        assert len(keys) == len(set(keys)), s.name
        rows, skipped = Machine().runnable(list(s.rows))  # rows needing storage this machine lacks are left out
        assert set(skipped) | {r.key for r in rows} == set(keys)
        for r in rows:
            build_spec(r.server)
            assert r.client in client_ids()
            assert r.group in ("", "A", "B")
        json.dumps(s.to_dict())


def _talk_table() -> list[tuple[str, str, str]]:
    """docs/talk.md's table: (the talk's heading, what it showed, the act key or "")."""
    rows = []
    for line in (REPO / "docs" / "talk.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            act = re.match(r"`([\w-]+)`", cells[3])
            rows.append((cells[1], cells[2], act[1] if act else ""))
    return rows


def test_acts_follow_the_talk() -> None:
    """The act list, read as the page reads it, against the talk (docs/talk.md): its order, its
    headings, a 2019 time only where the talk ran the copy, the status slide's two reasons."""
    acts = get_scenario("acts")
    talk = [(heading, showed, key) for heading, showed, key in _talk_table() if key]
    assert [a.key for a in acts.acts] == [key for _, _, key in talk] == [
        "baseline", "write-zeroes", "block-status", "pre-zero", "no-fallback", "fast-zero"]
    assert [a.heading for a in acts.acts] == [heading for heading, _, _ in talk]
    assert [a.title.split(".")[0] for a in acts.acts] == ["1", "2", "2b", "3", "4", "5"]
    for act, (_, showed, _) in zip(acts.acts, talk, strict=True):
        ran = not showed.startswith(("a slide", "a graph slide"))  # the talk ran the copy: a 2019 time
        assert all((r.reference is not None) == ran for r in act.rows), act.key
        assert bool(act.no_reference) != ran, act.key
        era = re.search(r"qemu (\d\.\d+)", showed)
        if era:
            assert act.era.startswith(f"qemu {era[1]}"), act.key
    assert [a.rows[0].client for a in acts.acts] == ["qemu-2.7", "qemu-2.8", "qemu-bs", "qemu-3.1", "qemu-4.0",
                                                     "qemu-4.2"]
    assert acts.rows == tuple(r for a in ACTS for r in a.rows)
    bs = acts.acts[2]  # block status: tmpfs (A) beside ext4 (B), the disk growing, block status visible
    assert [(r.group, r.server["storage"], r.server["size"]) for r in bs.rows] == [
        (g, st, size) for size in ("32M", "64M", "128M") for g, st in (("A", "tmpfs"), ("B", "ext4"))]
    assert all(r.server["noextents"] is False and r.server["disk_init"] == "data" for r in bs.rows)
    # the slide's two reasons: a trade when zeroing is fast, tmpfs's quadratic questions when it is slow
    why = bs.takeaway
    assert "Two reasons" in why and "fast" in why and "slow" in why and "tmpfs" in why and "square" in why
    for a in (acts.acts[1], *acts.acts[3:]):  # server A beside server B
        assert [r.group for r in a.rows] == ["A", "B"]
        assert [_server(r)[0] for r in a.rows] == ["plugin", "emulate"]


def test_no_act_quotes_a_figure_it_does_not_measure() -> None:
    """An act's words carry counts the lab reproduces, never a time: times are measured on stage, and
    the 2019 ones come from the reference rows alone."""
    for a in ACTS:
        for text in (a.summary, a.takeaway):
            assert not re.search(r"\d+(\.\d+)?\s*s\b", text), (a.key, text)
            assert not re.search(r"\d+(\.\d+)?\s*ms a question", text), (a.key, text)


def test_a_run_knows_the_rows_it_measures() -> None:
    """One rule (lab.domain.scenarios.rows_of) says which rows a run measures, filled in when the run
    is made: a talk act's run counts in the case study's row of the same client and server."""
    run = Run(client="qemu-2.8", server=build_spec({"zeromode": "plugin", "fastzeromode": "none"}), label="act2-A")
    assert run.scenario_rows == {"qemu-2.8-A": True, "act2-A": True}
    assert run.to_dict()["scenario_rows"] == run.scenario_rows
    small = Run(client="qemu-2.8", server=build_spec({"zeromode": "plugin", "fastzeromode": "none", "size": "8M"}),
                label="act2-A")
    assert small.scenario_rows == {"act2-A": False}  # labelled, another geometry: no 2019 figures
    assert Run(client="qemu-2.8", server=build_spec({"zeromode": "emulate"}), label="act2-A").scenario_rows == {}
    for row in get_scenario("acts").rows:
        assert rows_of(row.client, build_spec(row.server).to_dict())[row.key] is True, row.key


def _without(monkeypatch, *names: str) -> None:
    """This machine as one without the storages `names` (the availability answer, nothing mounted)."""
    from lab.host import storage

    real = storage.availability()
    fake = {**real, **{n: {"available": False, "reason": f"no {n} in this test"} for n in names}}
    monkeypatch.setattr(storage, "availability", lambda places=None: fake)


def test_the_block_status_act_asks_an_unprivileged_machine_on_what_it_has(monkeypatch) -> None:
    """Without mount rights the block-status act's A lanes use a tmpfs already mounted (shm), B lanes the data dir's
    disk: same keys, same groups, same geometry; the listing says which."""
    from lab.host import storage

    _without(monkeypatch, "tmpfs", "ext4")
    have = storage.availability()
    if not (have["shm"]["available"] and have["datadir"]["available"]):
        pytest.skip("no writable /dev/shm or data dir here")
    if storage.fs_type(storage.data_root()) in ("tmpfs", "ramfs"):
        pytest.skip("the data dir is on tmpfs here: B has nothing to stand in")
    here = Machine().scenario(get_scenario("acts"))
    bs = next(a for a in here.acts if a.key == "block-status")
    plain = next(a for a in ACTS if a.key == "block-status")
    assert [r.key for r in bs.rows] == [r.key for r in plain.rows]
    for row, orig in zip(bs.rows, plain.rows, strict=True):
        assert row.available and row.group == orig.group and row.server["size"] == orig.server["size"]
        assert row.server["storage"] == {"A": "shm", "B": "datadir"}[row.group]
        assert {k: v for k, v in row.server.items() if k != "storage"} == \
            {k: v for k, v in orig.server.items() if k != "storage"}
        assert row.to_dict()["available"] is True
    assert all(r.available for a in here.acts for r in a.rows)
    # and a sweep of the act runs them there, skipping nothing
    from lab.service import sweeps

    runs, _, skipped = sweeps.plan("acts", only=[r.key for r in plain.rows])
    assert not skipped and [r.server.storage for r in runs] == ["shm", "datadir"] * 3
    # a run on a stand-in measures its row, at the row's own geometry
    for run in runs:
        assert run.scenario_rows.get(run.label) is True, (run.label, run.scenario_rows)


def test_a_row_nothing_here_can_hold_is_listed_with_every_reason(monkeypatch) -> None:
    _without(monkeypatch, "tmpfs", "ext4", "shm", "datadir")
    here = Machine().scenario(get_scenario("acts"))
    bs = next(a for a in here.acts if a.key == "block-status")
    for row in bs.rows:
        assert row.available is False
        want = ("no tmpfs", "no shm") if row.group == "A" else ("no ext4", "no datadir")
        assert all(w in row.reason for w in want), row.reason
        d = row.to_dict()
        assert d["available"] is False and d["reason"] == row.reason
    assert all(r.available for a in here.acts if a.key != "block-status" for r in a.rows)
    json.dumps(here.to_dict())
    from lab.domain.errors import NotRunnable
    from lab.service import sweeps

    with pytest.raises(NotRunnable, match="act-bs-A-32M"):
        sweeps.plan("acts", only=["act-bs-A-32M"])
    runs, _, skipped = sweeps.plan("acts", only=["act-bs-A-32M", "act1-baseline"])
    assert [r.label for r in runs] == ["act1-baseline"] and list(skipped) == ["act-bs-A-32M"]


def test_a_disk_larger_than_a_mounted_tmpfs_is_not_offered_there(tmp_path) -> None:
    """shm on a tmpfs smaller than the row's disk (a container's 64 MiB /dev/shm): the row says so."""
    import subprocess

    from lab.host import storage
    from lab.host.places import Places

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    places = Places.under(tmp_path)
    run_dir = places.runtime()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(run_dir)],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        assert storage.shm_root(places) == run_dir  # the runtime dir is a tmpfs: used as it is
        machine = Machine(places)
        rows = {r.key: machine.here(r) for r in next(a for a in ACTS if a.key == "block-status").rows}
        bs = next(a for a in ACTS if a.key == "block-status")
        shm_a = [machine.unavailable(alt) for r in bs.rows if r.group == "A" for alt in r.alternatives]
        assert shm_a[0] is None  # 32 MiB fits in 40
        assert "holds 40 MiB" in shm_a[1] and "needs 64 MiB" in shm_a[1]
        if not storage.availability(places)["tmpfs"]["available"]:
            assert rows["act-bs-A-32M"].available and not rows["act-bs-A-64M"].available
        p = storage.provision("shm", 8 << 20, places=places)
        try:
            assert p.dir.parent == run_dir and storage.fs_type(p.disk.parent) == "tmpfs"
        finally:
            p.release()
        assert not p.dir.exists()
        with pytest.raises(storage.StorageError, match="not enough room"):
            storage.provision("shm", 48 << 20, places=places)
        assert not list(run_dir.glob(storage.PREFIX + "*"))  # nothing left behind
    finally:
        subprocess.run(["umount", str(run_dir)], check=False)


def test_deviations_are_explained_and_point_somewhere_real() -> None:
    keys = {r.key for r in get_scenario("case-study").rows}
    for r in REFERENCE_ROWS:
        note = r.reference.get("nbdkit_1_32")
        # Only server B rows differ: nbdkit's core now emulates the zeroes there.
        assert bool(note) == (r.server["zeromode"] == "emulate"), r.key
        if note:
            assert "4aabc22f" in note["why"]
            if "reproduced_by" in note:
                assert note["reproduced_by"] in keys
            # every 2019 count is reproducible now: no note announces other counts
            assert "write_ops" not in note and "predicted_s" not in note, r.key
            # a row whose server is built as a chain says so
            assert (note.get("build") == "chain") == (topology(build_spec(r.server)) == "chain"), r.key


# --- the counts at full geometry -------------------------------------------------------


@pytest.fixture(scope="module")
def full_runs() -> dict[tuple[str, str, str], Run]:
    """Every distinct (client, server) of the case study and the acts, 100 MiB, 1 ms delays."""
    # (the block-status act's rows run on real storage: tests/test_block_status.py)
    rows = [r for r in (*get_scenario("case-study").rows, *get_scenario("acts").rows) if "storage" not in r.server]
    out: dict[tuple[str, str, str], Run] = {}
    for r in rows:
        key = (r.client, *_server(r))
        if key in out:
            continue
        spec = build_spec({**r.server, "delay_write": "1ms", "delay_zero": "1ms"})
        run = execute(Run(client=r.client, server=spec))
        assert run.status == "succeeded" and run.verified, (key, run.error)
        out[key] = run
    return out


def _got(run: Run) -> tuple[int, int]:
    assert run.backend is not None
    return run.backend.write_ops, run.backend.zero_ops


def _want(ref: dict[str, Any]) -> tuple[int, int, float]:
    """(writes, zeroes, seconds) this lab should reproduce for a reference."""
    here = ref.get("nbdkit_1_32") or {}
    if "write_ops" in here and CORE_REFUSES_EMULATED_FAST:
        return here["write_ops"], here["zero_ops"], here["predicted_s"]
    return ref["write_ops"], ref["zero_ops"] or 0, ref["time_s"]


def test_reference_rows_reproduce_the_table_counts(full_runs: dict) -> None:
    talk = build_spec({})
    for r in REFERENCE_ROWS:
        run = full_runs[(r.client, *_server(r))]
        writes, zeroes, seconds = _want(r.reference)
        assert _got(run) == (writes, zeroes), r.key
        # The request x delay model at the talk's delays lands within 10% of the 2019 time.
        predicted = floor.predict_seconds(talk, run.backend)
        assert abs(predicted - seconds) <= 0.1 * seconds, (r.key, predicted, seconds)


def test_act_rows_reproduce_their_reference_counts(full_runs: dict) -> None:
    talk = build_spec({})
    for a in ACTS:
        for r in a.rows:
            if r.reference is None:  # the block-status act has no 2019 figures (its counts: test_block_status)
                continue
            run = full_runs[(r.client, *_server(r))]
            assert _got(run) == (r.reference["write_ops"], r.reference["zero_ops"]), r.key
            predicted = floor.predict_seconds(talk, run.backend)
            assert abs(predicted - r.reference["time_s"]) <= 0.1 * r.reference["time_s"], r.key


# (client, zeromode, fastzeromode) pairs that must cost the same at the plugin
SAME = [
    # the server-side emulation of qemu 3.1 (fastzeromode=ignore) and the re-enacted era, server A
    (("qemu-3.1", "plugin", "none"), ("qemu-4.2", "plugin", "ignore")),
    # qemu 4.0's behaviour and its server-side emulation (fast zero not advertised)
    (("qemu-4.0", "plugin", "none"), ("qemu-4.2", "plugin", "none")),
    (("qemu-4.0", "emulate", "none"), ("qemu-4.2", "emulate", "none")),
    # per-hole zeroes since 2.8: only the flags changed
    (("qemu-2.8", "plugin", "none"), ("qemu-4.0", "plugin", "none")),
    # the baseline: no zeroing cleverness at all, whatever the server
    (("qemu-2.7", "plugin", "none"), ("qemu-4.2", "none", "default")),
    (("qemu-2.7", "emulate", "none"), ("qemu-4.2", "none", "default")),
]


@pytest.mark.parametrize("a,b", SAME, ids=lambda p: "-".join(p))
def test_era_and_server_emulation_agree(full_runs: dict, a: tuple, b: tuple) -> None:
    assert _got(full_runs[a]) == _got(full_runs[b])


def test_blind_pre_zero_on_server_b(full_runs: dict) -> None:
    """The issue-3 cross-check: qemu 3.1 on B vs qemu 4.2 on B with fastzeromode=ignore.

    Both write the whole disk as zeroes and then the data: 600 backend writes, as in 2019.
    qemu 3.1 pre-zeroes blindly (4 plain zeroes); qemu 4.2 asks for fast zeroes, which the
    ignore server (a two-process chain on nbdkit >= 1.31.9) accepts and writes out anyway.
    """
    blind = full_runs[("qemu-3.1", "emulate", "none")]
    ignore = full_runs[("qemu-4.2", "emulate", "ignore")]
    assert _got(blind) == _got(ignore) == (600, 0)
    assert blind.wire.zero == 4 and blind.wire.fast_zero == 0
    assert (ignore.wire.zero, ignore.wire.fast_zero, ignore.wire.fast_zero_failed, ignore.wire.write) == (4, 4, 0, 50)
    assert (ignore.server_log.zero, ignore.server_log.fast_zero, ignore.server_log.write) == (4, 4, 50)
    assert ignore.stats_check["agree"] and ignore.stats_check["stats_write_ops"] == 600


def test_fast_zero_wire_view(full_runs: dict) -> None:
    a = full_runs[("qemu-4.2", "plugin", "default")]
    assert (a.wire.zero, a.wire.fast_zero, a.wire.fast_zero_failed, a.wire.write) == (4, 4, 0, 50)
    assert a.server_log.fast_zero == 4  # 4x fast=1 in the log, as in 2019
    b = full_runs[("qemu-4.2", "emulate", "default")]
    assert (b.wire.zero, b.wire.fast_zero, b.wire.fast_zero_failed, b.wire.write) == (51, 1, 1, 50)
    assert (b.server_log.zero, b.server_log.write) == (0, 100)  # the 50 zeroes logged as writes


# --- the real thing, once ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("key", ["ref-plugin-default", "ref-emulate-default"])
def test_reference_row_full_size(key: str, no_leftovers: None) -> None:
    """The fast-zero act at the talk's delays: the table's counts, verified."""
    row = next(r for r in REFERENCE_ROWS if r.key == key)
    run = execute(Run(client=row.client, server=build_spec(row.server), reference=row.reference, label=key))
    assert run.status == "succeeded" and run.verified, run.error
    assert _got(run) == (row.reference["write_ops"], row.reference["zero_ops"])
    assert run.predicted_s == pytest.approx(row.reference["write_ops"] * 0.020 + row.reference["zero_ops"] * 0.005)
    assert run.to_dict()["reference"]["time_s"] == row.reference["time_s"]
