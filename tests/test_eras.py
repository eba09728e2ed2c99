"""The qemu-era clients against real nbdkit servers: right bytes, right requests.

Every destination is dirtied (non-zero bytes everywhere) before a copy, so a client that
skipped a hole it had not really zeroed cannot pass verification: "lose performance,
never contents". Expected request counts are derived from each era's strategy
(docs/design.md#era-strategies) by `expected()`, written independently of the client code.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from lab.domain import layout
from lab.domain.clients import CATALOG, client_info
from lab.domain.run import Run
from lab.domain.spec import FASTZEROMODES, ZEROMODES, ServerSpec, build_spec
from lab.host import images
from lab.measure.execute import execute
from lab.nbd.clients import CopyContext, get_client
from lab.nbd.servers import Server, close_handle, nbdkit_version
from lab.nbd.verify import verify

MiB = 1 << 20
KiB = 1 << 10
ERAS = ("qemu-2.7", "qemu-2.8", "qemu-3.1", "qemu-4.0", "qemu-4.2")


def _version(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in v.split(".")[:3])
    except ValueError:
        return (0,)


# nbdkit >= 1.31.9 (commit 4aabc22f) emulates zeromode=emulate in its core, above every
# filter, and refuses a fast zero there: fastzeromode=ignore no longer reaches nozero in one
# process (docs/design.md#emulation-moved-into-the-core). The lab builds emulate + ignore as a
# two-process chain, where it does (2019's counts).
CORE_REFUSES_EMULATED_FAST = _version(nbdkit_version()) >= (1, 31, 9)


def spec(zeromode: str = "none", fastzeromode: str = "default", size: str = "8M",
         pattern: str = "alternate:1M", maxdata: str = "256k", **extra: Any) -> ServerSpec:
    return build_spec({"zeromode": zeromode, "fastzeromode": fastzeromode, "size": size, "pattern": pattern,
                       "maxdata": maxdata, "delay_write": "1ms", "delay_zero": "1ms", **extra})


def holes_of(s: ServerSpec) -> list[tuple[int, int]]:
    holes, pos = [], 0
    for off, n in [*layout.parse_pattern(s.pattern, s.size), (s.size, 0)]:
        if off > pos:
            holes.append((pos, off - pos))
        pos = off + n
    return holes


def dirty(srv: Server) -> None:
    """Fill the destination's would-be holes with non-zero bytes, then settle the counters.

    Data ranges need no dirt: every client writes them, and a skipped one fails
    verification on a clean disk too.
    """
    import nbd

    h = nbd.NBD()
    h.connect_uri(srv.uri)
    try:
        junk = b"\xa5" * MiB
        for off, n in holes_of(srv.spec):
            for o in range(off, off + n, MiB):
                h.pwrite(junk[: min(MiB, off + n - o)], o)
    finally:
        close_handle(h)
    srv.sync()


def copy_on(srv: Server, client: str, queue_depth: int = 1, dirty_first: bool = True) -> Run:
    if dirty_first:
        dirty(srv)
    run = execute(Run(client=client, server=srv.spec, queue_depth=queue_depth), server=srv)
    assert run.status == "succeeded", (client, srv.spec.describe(), run.error)
    assert run.verified is True, (client, srv.spec.describe(), run.verify_detail)
    return run


def expected(client: str, s: ServerSpec) -> dict[str, int]:
    """Backend and wire counts of one era's copy, from the strategy alone."""
    data_runs = layout.parse_pattern(s.pattern, s.size)
    holes = [n for _, n in holes_of(s)]

    can_zero = s.zeromode != "none"
    offers_fast = can_zero and s.fastzeromode != "none"
    if s.zeromode == "emulate":
        fast_works = s.fastzeromode == "ignore"  # the chain's front drops the flag; the back writes zeroes
    else:
        fast_works = offers_fast and s.fastzeromode in ("default", "ignore")
    c = {"write_ops": 0, "zero_ops": 0, "write": 0, "zero": 0, "fast_zero": 0, "fast_zero_failed": 0}

    def pieces(n: int, limit: int) -> list[int]:
        return [min(limit, n - o) for o in range(0, n, limit)]

    def write(n: int) -> None:  # one wire write; the blocksize filter splits it for the plugin
        c["write"] += 1
        c["write_ops"] += math.ceil(n / s.maxdata)

    def zero(n: int, fast: bool = False) -> None:
        c["zero"] += 1
        c["fast_zero"] += fast
        if s.zeromode == "emulate":  # nbdkit turns it into writes, split by maxdata
            c["write_ops"] += math.ceil(n / s.maxdata)
        else:
            c["zero_ops"] += 1

    for _, n in data_runs:
        for p in pieces(n, 2 * MiB):
            write(p)
    prezero = {"qemu-3.1": can_zero, "qemu-4.2": offers_fast}.get(client, False)
    zero_init = False
    if prezero:
        fast = client == "qemu-4.2"
        if fast and not fast_works:  # the first 32 MiB piece is refused; the pass is abandoned
            c["zero"] += 1
            c["fast_zero"] += 1
            c["fast_zero_failed"] += 1
        else:
            for p in pieces(s.size, 32 * MiB):
                zero(p, fast)
            zero_init = True
    if not zero_init:
        for n in holes:
            if client != "qemu-2.7" and can_zero:
                for p in pieces(n, 32 * MiB):
                    zero(p)
            else:
                for p in pieces(n, 16 * MiB):
                    write(p)
    return c


def counts_of(run: Run) -> dict[str, int]:
    assert run.backend is not None and run.wire is not None
    assert run.wire.source == "client"
    return {"write_ops": run.backend.write_ops, "zero_ops": run.backend.zero_ops, "write": run.wire.write,
            "zero": run.wire.zero, "fast_zero": run.wire.fast_zero, "fast_zero_failed": run.wire.fast_zero_failed}


# --- the source view ------------------------------------------------------------------


@pytest.mark.parametrize("size,pattern", [(8 * MiB, "alternate:1M"), (8 * MiB, "full"), (8 * MiB, "empty"),
                                          (12 * MiB, "alternate:512k:1536k"), (8 * MiB, "alternate:3M:1M")])
def test_segments_are_the_qcow2_allocation_map(size: int, pattern: str) -> None:
    """The clients follow Image.segments(); it must be what `qemu-img map` says of the qcow2."""
    import json
    import subprocess

    with images.acquire(size, pattern) as image:
        out = subprocess.run(["qemu-img", "map", "--output=json", "-f", "qcow2", str(image.qcow2)],
                             capture_output=True, text=True, check=True).stdout
        merged: list[list[Any]] = []
        for e in json.loads(out):
            if merged and merged[-1][2] == e["data"] and merged[-1][0] + merged[-1][1] == e["start"]:
                merged[-1][1] += e["length"]
            else:
                merged.append([e["start"], e["length"], e["data"]])
        assert [tuple(m) for m in merged] == list(image.segments())


# --- the reference geometry in small: exact counts on server A and server B ------------

# 8 MiB alternating 1 MiB (4 data runs, 4 holes), maxdata 256k: a 1 MiB write is 4 plugin writes.
# (backend writes, backend zeroes, wire writes, wire zeroes)
SMALL_A_B = {
    # server A: zeromode=plugin fastzeromode=none
    ("qemu-2.7", "plugin"): (32, 0, 8, 0),  # holes as 1 MiB zero-byte writes
    ("qemu-2.8", "plugin"): (16, 4, 4, 4),  # one WRITE_ZEROES per hole
    ("qemu-3.1", "plugin"): (16, 1, 4, 1),  # one 8 MiB pre-zero, holes skipped
    ("qemu-4.0", "plugin"): (16, 4, 4, 4),  # pre-zero refused in the client, per hole
    ("qemu-4.2", "plugin"): (16, 4, 4, 4),  # no fast zero offered: per hole
    # server B: zeromode=emulate fastzeromode=none (each zeroed MiB costs 4 plugin writes)
    ("qemu-2.7", "emulate"): (32, 0, 8, 0),
    ("qemu-2.8", "emulate"): (32, 0, 4, 4),
    ("qemu-3.1", "emulate"): (48, 0, 4, 1),  # the whole disk written as zeroes, then the data again
    ("qemu-4.0", "emulate"): (32, 0, 4, 4),
    ("qemu-4.2", "emulate"): (32, 0, 4, 4),
}


@pytest.mark.parametrize("zeromode", ["plugin", "emulate"])
def test_exact_counts_on_server_a_and_b(zeromode: str, no_leftovers: None) -> None:
    with Server(spec(zeromode, "none")) as srv:
        for client in ERAS:
            run = copy_on(srv, client)
            got = counts_of(run)
            bw, bz, ww, wz = SMALL_A_B[(client, zeromode)]
            assert (got["write_ops"], got["zero_ops"], got["write"], got["zero"]) == (bw, bz, ww, wz), client
            assert got == expected(client, srv.spec), client
            assert run.wire.fast_zero == 0 and run.wire.flush == 1
            assert run.predicted_s == pytest.approx((bw + bz) * 0.001)


def test_fast_zero_on_both_servers(no_leftovers: None) -> None:
    """qemu-4.2 with fast zero offered: 1 pre-zero on A; on B one refused attempt, then per hole."""
    with Server(spec("plugin", "default")) as a:
        run = copy_on(a, "qemu-4.2")
        assert counts_of(run) == {"write_ops": 16, "zero_ops": 1, "write": 4, "zero": 1,
                                  "fast_zero": 1, "fast_zero_failed": 0}
        assert run.server_log is not None and run.server_log.fast_zero == 1  # A's log shows it
    with Server(spec("emulate", "default")) as b:
        run = copy_on(b, "qemu-4.2")
        assert counts_of(run) == {"write_ops": 32, "zero_ops": 0, "write": 4, "zero": 5,
                                  "fast_zero": 1, "fast_zero_failed": 1}
        assert "ENOTSUP" in run.wire.errors[0]
        # nbdkit 1.32 refuses the fast zero in its core and emulates the other zeroes there,
        # both before the log filter: the log holds only writes. The client's count is the truth.
        log = run.server_log
        assert log is not None
        assert (log.zero, log.fast_zero, log.write) == (0, 0, 8)


def test_emulate_ignore_is_the_2019_server(no_leftovers: None) -> None:
    """emulate + ignore (a two-process chain): qemu-4.2's fast pre-zero is accepted and written
    out as zeroes below the log, as nbdkit did in 2019; the log shows the fast zero."""
    with Server(spec("emulate", "ignore")) as srv:
        assert srv.topology == "chain" and srv.flags.can_zero and srv.flags.can_fast_zero
        run = copy_on(srv, "qemu-4.2")
        # 8 MiB pre-zeroed in one fast request (32 plugin writes of 256k), then 4 MiB of data (16)
        assert counts_of(run) == {"write_ops": 48, "zero_ops": 0, "write": 4, "zero": 1,
                                  "fast_zero": 1, "fast_zero_failed": 0}
        log = run.server_log
        assert log is not None and (log.zero, log.fast_zero, log.write, log.failed) == (1, 1, 4, 0)
        assert any(n.startswith("server build: two nbdkit processes") for n in run.notes)
        blind = copy_on(srv, "qemu-3.1")  # the issue-3 cross-check, in small: the same backend counts
        assert counts_of(blind)["write_ops"] == 48 and blind.server_log.fast_zero == 0


# --- every era on every server nbdkit accepts, destination dirtied first ---------------


@pytest.mark.parametrize("fastzeromode", FASTZEROMODES)
@pytest.mark.parametrize("zeromode", ZEROMODES)
def test_lose_performance_never_contents(zeromode: str, fastzeromode: str, no_leftovers: None) -> None:
    with Server(spec(zeromode, fastzeromode)) as srv:
        for client in ERAS:
            run = copy_on(srv, client)
            assert counts_of(run) == expected(client, srv.spec), client


@pytest.mark.parametrize("geometry", [
    {"size": "8M", "pattern": "full"},
    {"size": "40M", "pattern": "empty"},  # 32 MiB zero pieces and 16 MiB zero-byte writes
    {"size": "12M", "pattern": "alternate:512k:1536k", "maxdata": "64k"},
    {"size": "8M", "pattern": "alternate:3M:1M", "maxdata": "1M"},  # 2 MiB data chunks
], ids=["full", "empty-40M", "512k-1536k-maxdata64k", "3M-1M-maxdata1M"])
@pytest.mark.parametrize("server", [("none", "default"), ("plugin", "default"), ("emulate", "default")],
                         ids=lambda s: f"{s[0]}-{s[1]}")
def test_other_geometries(geometry: dict[str, str], server: tuple[str, str], no_leftovers: None) -> None:
    with Server(spec(*server, **geometry)) as srv:
        for client in ERAS:
            run = copy_on(srv, client)
            assert counts_of(run) == expected(client, srv.spec), client


def test_request_sizes_follow_the_era() -> None:
    """Spot-check the derivation itself on the shapes that exercise each limit."""
    empty = spec("plugin", "none", size="40M", pattern="empty")
    assert expected("qemu-2.7", empty)["write"] == 3  # 16 + 16 + 8 MiB of zero bytes
    assert expected("qemu-2.8", empty)["zero"] == 2  # 32 + 8 MiB
    three = spec("none", size="8M", pattern="alternate:3M:1M")
    assert expected("qemu-4.2", three)["write"] == 4 + 2  # 2 + 1 MiB per data run, then 2 holes


# --- the clients' own view -------------------------------------------------------------


def test_reports_phases_and_counts(no_leftovers: None) -> None:
    reports: list[dict[str, Any]] = []
    with Server(spec("plugin", "none")) as srv, images.acquire(srv.spec.size, srv.spec.pattern) as image:
        ctx = CopyContext(image=image, uri=srv.uri, flags=srv.flags, report=reports.append)
        result = get_client("qemu-3.1").copy(ctx)
        assert verify(srv.uri, image).verified
    phases = [r["phase"] for r in reports]
    assert phases[0] == "pre-zero" and phases[-1] == "copy"
    assert phases == sorted(phases, key=["pre-zero", "copy"].index)  # never back to pre-zero
    last = reports[-1]
    assert result.wire is not None
    assert last["wire"] == result.wire.to_dict()
    assert last["planned_bytes"] == last["sent_bytes"] == 8 * MiB + 4 * MiB  # pre-zero all, then the data
    assert len(reports) <= result.wire.write + result.wire.zero + 3  # rate-limited, never per byte
    assert any("pre-zero pass: 1 WRITE_ZEROES" in n for n in result.notes)


def test_client_info_and_registry() -> None:
    """Every catalog entry (lab.domain.clients) has its implementation, and the eras are in-order, in-process."""
    for about in CATALOG:
        assert get_client(about.id).about == about and about.era and about.description
    for cid in ERAS:
        info = client_info(cid)
        assert info.parallel is False and info.real_binary is False


# --- faults: a server that refuses what the client believed it offered ----------------


class _Believer:
    """Run an era's engine on a connection whose advertised flags we overrule.

    Not a mock: a real nbdkit refuses the request (or libnbd refuses it for the server);
    this stands in for a server that advertises a feature and then fails it.
    """

    def __init__(self, client: str, srv: Server, image: images.Image, strict: bool, **flags: bool) -> None:
        import nbd

        from lab.nbd.clients.eras import _Copy

        self.h = nbd.NBD()
        self.h.connect_uri(srv.uri)
        if not strict:
            self.h.set_strict_mode(0)  # send it anyway: the server answers
        ctx = CopyContext(image=image, uri=srv.uri, flags=srv.flags)
        self.job = _Copy(ctx, self.h, get_client(client).strategy)  # type: ignore[attr-defined]
        for k, v in flags.items():
            setattr(self.job, k, v)

    def run(self) -> Any:
        try:
            self.job.run()
        finally:
            close_handle(self.h)
        return self.job


@pytest.mark.parametrize("strict", [True, False], ids=["refused-by-libnbd", "refused-by-nbdkit"])
def test_refused_write_zeroes_fall_back_to_writes(strict: bool, no_leftovers: None) -> None:
    with Server(spec("none")) as srv, images.acquire(srv.spec.size, srv.spec.pattern) as image:
        for client in ("qemu-2.8", "qemu-3.1", "qemu-4.0"):
            dirty(srv)
            job = _Believer(client, srv, image, strict, can_zero=True).run()
            assert verify(srv.uri, image).verified, client
            if strict:  # nothing went out as a zero: libnbd said EINVAL first
                assert job.counts.zero == 0 and job.counts.write == 8
            else:  # each zero went out, came back EINVAL, and was written as zero bytes
                assert job.counts.failed == job.counts.zero >= 1
            assert any("falls back" in n for n in job.notes), client


def test_refused_fast_zero_abandons_the_pre_zero(no_leftovers: None) -> None:
    # Only libnbd's refusal here: an unadvertised FAST_ZERO flag sent anyway (strict mode
    # off) trips an assertion in nbdkit 1.32's backend_zero and the server aborts. The era
    # clients never send a flag the server did not advertise.
    with Server(spec("plugin", "none", size="40M", pattern="empty")) as srv, \
            images.acquire(srv.spec.size, srv.spec.pattern) as image:
        dirty(srv)
        job = _Believer("qemu-4.2", srv, image, True, can_fast_zero=True).run()
        assert verify(srv.uri, image).verified
        assert job.counts.fast_zero == job.counts.fast_zero_failed == 0  # nothing went out
        assert job.counts.zero == 2  # per hole instead: 32 + 8 MiB
        assert any("pre-zero pass abandoned" in n for n in job.notes)


# --- queue depth -----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 8])
@pytest.mark.parametrize("server", [("plugin", "default"), ("emulate", "default"), ("plugin", "slow")],
                         ids=lambda s: f"{s[0]}-{s[1]}")
def test_queue_depth_still_correct(depth: int, server: tuple[str, str], no_leftovers: None) -> None:
    with Server(spec(*server, size="40M", pattern="alternate:1M:3M")) as srv:
        for client in ("qemu-2.7", "qemu-3.1", "qemu-4.2"):
            run = copy_on(srv, client, queue_depth=depth)
            want = expected(client, srv.spec)
            got = counts_of(run)
            assert (got["write_ops"], got["zero_ops"]) == (want["write_ops"], want["zero_ops"]), client
            # A refused fast zero may have had a second piece in flight already.
            assert got["fast_zero_failed"] in (0, got["fast_zero"]), client
            assert run.model == "serial-upper-bound"
            assert any(f"queue depth {depth}" in n for n in run.notes)


# --- cancel ----------------------------------------------------------------------------


@pytest.mark.parametrize("client,depth", [("qemu-2.7", 1), ("qemu-4.2", 4)])
def test_cancel_mid_copy_leaves_nothing(client: str, depth: int, no_leftovers: None) -> None:
    s = build_spec({"zeromode": "emulate", "fastzeromode": "default", "size": "16M", "delay_write": "20ms",
                    "delay_zero": "5ms"})
    cancel = threading.Event()
    seen: list[dict[str, Any]] = []

    def on_event(ev: dict[str, Any]) -> None:
        seen.append(ev)
        if ev.get("type") == "progress" and ev["backend"]["write_ops"] >= 4:
            cancel.set()

    run = Run(client=client, server=s, queue_depth=depth)
    t = threading.Thread(target=execute, args=(run,), kwargs={"on_event": on_event, "cancel": cancel})
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert run.status == "cancelled", run.error
    assert run.backend is None or run.backend.write_ops < 64  # it stopped early, well before 16M x 2
    assert any(ev.get("type") == "progress" and (ev.get("client") or {}).get("phase") for ev in seen)
