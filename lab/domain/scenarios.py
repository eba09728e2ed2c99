"""Named sets of runs: the case study (with the talk's reference figures) and the acts.

Reference figures: Eric Blake's cover letter 'Add NBD Fast Zero support' (2019-08-23),
qemu 4.2-dev client, 100 MiB alternating 1 MiB data/hole, delay-write=20ms
delay-zero=5ms maxdata=256k; counts are what reached the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lab.domain.spec import build_spec

SERVER_A = {"zeromode": "plugin"}  # zeroing is fast metadata
SERVER_B = {"zeromode": "emulate"}  # zeroing falls back to writes


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    client: str
    server: dict[str, Any]
    reference: dict[str, Any] | None = None  # time_s, write_ops, zero_ops, fast_seen
    group: str = ""  # "A" / "B" / "" for charts that pair servers
    # The same measurement on what a machine without mount rights has (same key), tried in order
    # when this machine cannot run the row itself (lab.nbd.backends.Machine.here).
    alternatives: tuple[Row, ...] = ()
    avoid_fs: tuple[str, ...] = ()  # filesystems the row's disk must not land on (B's disk is not a tmpfs)
    available: bool | None = None  # None until a machine has said (Machine.here)
    reason: str | None = None  # why not, when available is False

    def to_dict(self) -> dict[str, Any]:
        """`server`: the fields the row sets, as written; `spec`: the whole server, normalised (bytes, ms);
        `available`/`reason` once a machine has said (lab.nbd.backends.Machine.here)."""
        out = {"key": self.key, "label": self.label, "client": self.client, "server": dict(self.server),
               "spec": build_spec(self.server).to_dict(), "reference": self.reference, "group": self.group}
        if self.available is not None:
            out["available"] = self.available
            if self.reason:
                out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Act:
    key: str
    title: str
    era: str
    summary: str
    rows: tuple[Row, ...]
    takeaway: str = ""
    heading: str = ""  # the heading of the talk's notes this act follows (docs/talk.md)
    no_reference: str = ""  # why the act has no 2019 time (the talk showed no run there)
    beside: str = ""  # the act whose result each server is shown beside (act 5: B against its act 3)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "era": self.era, "summary": self.summary,
                "takeaway": self.takeaway, "heading": self.heading, "no_reference": self.no_reference,
                "beside": self.beside,
                "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    rows: tuple[Row, ...]
    acts: tuple[Act, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description,
                "rows": [r.to_dict() for r in self.rows], "acts": [a.to_dict() for a in self.acts]}

    def map_rows(self, fn: Callable[[Row], Row]) -> Scenario:
        """The scenario with every row (and every act's rows) replaced by fn(row)."""
        acts = tuple(replace(a, rows=tuple(fn(r) for r in a.rows)) for a in self.acts)
        return replace(self, rows=tuple(fn(r) for r in self.rows), acts=acts)


def _ref(time_s: float, write_ops: int, zero_ops: int | None, fast_seen: str,
         nbdkit_1_32: dict[str, Any] | None = None) -> dict[str, Any]:
    ref = {"time_s": time_s, "write_ops": write_ops, "zero_ops": zero_ops, "fast_seen": fast_seen,
           "source": "Blake 2019, qemu 4.2-dev"}
    if nbdkit_1_32:
        ref["nbdkit_1_32"] = nbdkit_1_32
    return ref


def plain(row: Row) -> dict[str, Any] | None:
    """The 2019 time and counts alone, for an act that re-enacts a reference row with its era's
    client (the row's fast= column and nbdkit 1.32 notes describe the qemu 4.2 client)."""
    if not row.reference:
        return None
    return {**{k: row.reference[k] for k in ("time_s", "write_ops", "zero_ops", "source")}, "row": row.key}


# Where this lab's nbdkit (1.32) behaves differently from the one of 2019, the reference
# says so under "nbdkit_1_32": what is seen here instead, and why. The cause is nbdkit
# commit 4aabc22f (v1.31.9, 'server: Fix NBDKIT_ZERO_EMULATE from filters'): zeromode=emulate
# is now carried out by nbdkit's core at the top layer, so the log filter records the
# emulated zeroes as Write, and the core answers any fast zero with ENOTSUP before a filter
# sees it. For emulate + ignore that would change the counts (the nozero filter could no
# longer drop the flag), so the lab builds that server as a two-process chain of stock nbdkit
# (lab/nbd/servers.py, topology "chain"): the 2019 counts, with a build note saying so.
_CORE_EMULATES = "nbdkit >= 1.31.9 emulates zeromode=emulate in its core, above the log filter (commit 4aabc22f)"
_EMULATED_LOG = "the 50 per-hole zeroes are emulated before the log filter: logged as 50 Write, no Zero line"
CHAIN_NOTE = {
    "build": "chain",
    "fast_seen": "4x fast=1, logged by the front server as in 2019",
    "why": _CORE_EMULATES + ", where the core refuses a fast zero before the nozero filter could drop the flag. "
           "The lab builds this server as two stock nbdkit processes: a front (log, nozero zeromode=plugin "
           "fastzeromode=ignore, nbd plugin) drops the flag and forwards plain zeroes to a back (nozero "
           "zeromode=emulate, blocksize, delay, stats, noextents, memory) whose core writes them out. Same 2019 "
           "counts and time; one extra Unix-socket hop per request (54 here).",
    "reproduced_by": "qemu-3.1-B",
}

REFERENCE_ROWS = (
    Row("ref-none", "zeromode=none (no write-zeroes)", "qemu-4.2",
        {"zeromode": "none"}, _ref(8.54, 400, 0, "-")),
    Row("ref-plugin-ignore", "A, fastzeromode=ignore (qemu 3.1-like)", "qemu-4.2",
        {"zeromode": "plugin", "fastzeromode": "ignore"}, _ref(4.30, 200, 4, "4x fast=1"), "A"),
    Row("ref-emulate-ignore", "B, fastzeromode=ignore (qemu 3.1-like)", "qemu-4.2",
        {"zeromode": "emulate", "fastzeromode": "ignore"}, _ref(12.51, 600, 0, "4x fast=1", CHAIN_NOTE), "B"),
    Row("ref-emulate-none", "B, fastzeromode=none (qemu 4.0-like)", "qemu-4.2",
        {"zeromode": "emulate", "fastzeromode": "none"}, _ref(8.32, 400, 0, "50x fast=0", {
            "fast_seen": _EMULATED_LOG, "why": _CORE_EMULATES}), "B"),
    Row("ref-plugin-none", "A, fastzeromode=none (qemu 4.0-like)", "qemu-4.2",
        {"zeromode": "plugin", "fastzeromode": "none"}, _ref(4.54, 200, 50, "50x fast=0"), "A"),
    Row("ref-emulate-default", "B, fast zero (default)", "qemu-4.2",
        {"zeromode": "emulate", "fastzeromode": "default"}, _ref(8.41, 400, 0, "50x fast=0, 1x fast=1", {
            "fast_seen": "the 1x fast=1 is refused with ENOTSUP by nbdkit's core before the log filter (the "
                         "client counts it); " + _EMULATED_LOG,
            "why": _CORE_EMULATES}), "B"),
    Row("ref-plugin-default", "A, fast zero (default)", "qemu-4.2",
        {"zeromode": "plugin", "fastzeromode": "default"}, _ref(4.31, 200, 4, "4x fast=1"), "A"),
)

OTHER_CLIENTS = ("qemu-2.7", "qemu-2.8", "qemu-3.1", "qemu-4.0", "qemu-img", "nbdcopy")


def _client_rows() -> tuple[Row, ...]:
    rows = []
    for client in OTHER_CLIENTS:
        for group, server in (("A", SERVER_A), ("B", SERVER_B)):
            rows.append(Row(f"{client}-{group}", f"{client} on server {group}", client,
                            {**server, "fastzeromode": "none"}, None, group))
    return tuple(rows)


def _pair(client: str, key: str, fastzeromode: str, ref_a: Row, ref_b: Row, reference: bool = True
          ) -> tuple[Row, ...]:
    """An act's two lanes: `client` on server A and on server B, the servers alike but for zeromode.
    `reference`: the 2019 time of `ref_a`/`ref_b` applies (the talk ran this on stage)."""
    return (Row(f"{key}-A", f"{client} on server A", client, {**SERVER_A, "fastzeromode": fastzeromode},
                plain(ref_a) if reference else None, "A"),
            Row(f"{key}-B", f"{client} on server B", client, {**SERVER_B, "fastzeromode": fastzeromode},
                plain(ref_b) if reference else None, "B"))


# The block-status experiment: a reused destination (every byte data) on tmpfs (A) and ext4 (B).
# Without mount rights (a container, any non-root user) the same question is asked of a tmpfs that
# is already mounted (/dev/shm: storage shm) and of the data dir's own disk filesystem.
BS_BASE = {"plugin": "file", "disk_init": "data", "noextents": False, "pattern": "alternate:64k",
           "zeromode": "plugin", "fastzeromode": "default", "delay_write": 0, "delay_zero": 0, "maxdata": "32M"}
_BS_WHERE = {"tmpfs": "tmpfs", "ext4": "ext4", "shm": "tmpfs already mounted", "datadir": "data dir's disk"}
_BS_INSTEAD = {"tmpfs": "shm", "ext4": "datadir"}
TMPFS_LIKE = ("tmpfs", "ramfs")


def _bs_row(group: str, where: str, size: str) -> Row:
    alternatives = (_bs_row(group, _BS_INSTEAD[where], size),) if where in _BS_INSTEAD else ()
    return Row(f"act-bs-{group}-{size}", f"{_BS_WHERE[where]}, reused disk, {size[:-1]} MiB "
               f"({int(size[:-1]) * 8} holes)", "qemu-bs", {**BS_BASE, "storage": where, "size": size}, None, group,
               alternatives, TMPFS_LIKE if group == "B" else ())


BLOCK_STATUS_ROWS = tuple(_bs_row(g, where, size)
                          for size in ("32M", "64M", "128M") for g, where in (("A", "tmpfs"), ("B", "ext4")))

# The acts in the order of the 2019 talk (docs/talk.md): its headings, its eras, its reasons.
# A 2019 time only where the talk ran the convert on stage (its ".term" steps); the block-status
# and no-fallback parts were slides, so those acts have none.
ACTS = (
    Act("baseline", "1. Baseline: copy every byte", "qemu 2.7, Sep 2016",
        "A 100 MiB image that alternates 1 MiB of data and 1 MiB of hole. The client has no way to say "
        "'zeroes here': every hole travels as 1 MiB of zero bytes, and the server stores it like any other data.",
        (Row("act1-baseline", "qemu-2.7, no write-zeroes", "qemu-2.7", {"zeromode": "none"},
             plain(REFERENCE_ROWS[0])),),
        "400 writes of 256 KiB at 20 ms each, and half of them carry nothing but zeroes.",
        heading="Case study baseline"),
    Act("write-zeroes", "2. Writing zeroes: much ado about nothing", "qemu 2.8, Dec 2016",
        "The client sends WRITE_ZEROES for each hole: no payload on the wire. The spec leaves the rest to the "
        "server. Server A notes the range as zero in its metadata, whatever its size; server B has no such "
        "shortcut and writes zero-filled blocks like any data.",
        _pair("qemu-2.8", "act2", "none", REFERENCE_ROWS[4], REFERENCE_ROWS[3]),
        "Both get the same 50 zero requests. On A each is one 5 ms note, so the time nearly halves; on B each "
        "becomes four 20 ms writes: no real gain over the baseline. Can we do better?",
        heading="Writing zeroes: much ado about nothing"),
    Act("block-status", "2b. What's the status? Ask the destination first", "qemu 2.12, Apr 2018: an experiment",
        "BLOCK_STATUS says whether a range is a hole: a client could ask before each hole and skip the zero "
        "where the destination already reads as zero. Here it asks on a reused disk (data everywhere, so each "
        "answer is 'data'), kept in RAM (tmpfs) and on a disk's filesystem, the disk growing from 32 to 128 MiB.",
        BLOCK_STATUS_ROWS,
        "Two reasons not to ask. If zeroing is fast, a question at best replaces a zero and at worst comes "
        "before one. If zeroing is slow, asking pays only while answers are fast, and tmpfs walks the file for "
        "lseek(SEEK_HOLE): the questions cost grows with the square of the disk.",
        heading="What's the status?",
        no_reference="The talk showed a slide here, not a run: no 2019 time."),
    Act("pre-zero", "3. Pre-zeroing: a tale of two servers", "qemu 3.1, Dec 2018",
        "Make sure the destination starts as all zeroes: zero the whole disk first (no payload, so it looks "
        "free), then copy only the data and skip the holes.",
        _pair("qemu-3.1", "act3", "none", REFERENCE_ROWS[1], REFERENCE_ROWS[2]),
        "On A, 4 big zero requests replace 50: slightly faster. On B the pre-zero pass is written out, so every "
        "data byte is written twice: 600 writes, slower than the baseline that did nothing clever at all.",
        heading="Pre-zeroing: a tale of two servers"),
    Act("no-fallback", "4. qemu's solution: no fallback", "qemu 4.0, Apr 2019",
        "qemu now wants the pre-zero only if it is fast: fail rather than fall back to writes. NBD cannot carry "
        "that wish, so without the server's help the only safe guess is that zeroing is slow: no pre-zero, one "
        "zero request per hole.",
        _pair("qemu-4.0", "act4", "none", REFERENCE_ROWS[4], REFERENCE_ROWS[3], reference=False),
        "B is safe again (no doubled writes), but A has lost its shortcut: back to one zero request per hole.",
        heading="qemu's solution",
        no_reference="The talk showed a graph here, not a run: no 2019 time."),
    Act("fast-zero", "5. Time to pull a fast one: the fast-zero flag", "qemu 4.2, Dec 2019",
        "NBD gains NBD_CMD_FLAG_FAST_ZERO: 'zero this only if it is fast, otherwise fail at once'. Both ends must "
        "support it; without it only speed is lost, never data. A accepts, so the client pre-zeroes; B refuses "
        "with ENOTSUP, so the client zeroes per hole.",
        _pair("qemu-4.2", "act5", "default", REFERENCE_ROWS[6], REFERENCE_ROWS[5]),
        "Both servers at their best out of the box: A pre-zeroes in 4 requests; B pays one refused request and "
        "none of act 3's doubled writes.",
        heading="Protocol extension: time to pull a fast one", beside="pre-zero"),
)

# --- today: the 2019 question asked of today's servers and storage ----------------------

TODAY_CLIENTS = ("qemu-img", "nbdcopy", "qemu-2.7", "qemu-2.8", "qemu-3.1", "qemu-4.0", "qemu-4.2")
TODAY_SIZE = "1G"
# Real speed: no injected delay, zeroing passed through to the server as it is, requests
# not split below what qemu sends (32 MiB), block status visible.
TODAY_BASE = {"size": TODAY_SIZE, "zeromode": "plugin", "fastzeromode": "default", "delay_write": 0,
              "delay_zero": 0, "maxdata": "32M", "noextents": False}
_STORES = ("tmpfs", "datadir", "ext4", "xfs", "btrfs", "blockdev")


def today_servers() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(key, server fields) for every kind x storage; rows this machine cannot run are left
    out when a sweep is planned (lab.nbd.backends.Machine.runnable), never failed."""
    out: list[tuple[str, dict[str, Any]]] = [("memory", {"plugin": "memory"})]
    out += [(f"file-{st}", {"plugin": "file", "storage": st}) for st in _STORES]
    out += [(f"qemu-nbd-{st}", {"kind": "qemu-nbd", "storage": st}) for st in _STORES]
    out += [(f"qemu-nbd-qcow2-{st}", {"kind": "qemu-nbd", "disk_format": "qcow2", "storage": st})
            for st in _STORES if st != "blockdev"]
    out += [(f"nbd-server-{st}", {"kind": "nbd-server", "storage": st}) for st in _STORES]
    return tuple(out)


def _today_rows() -> tuple[Row, ...]:
    rows = []
    for skey, server in today_servers():
        for client in TODAY_CLIENTS:
            label = f"{client} on {skey}"
            rows.append(Row(f"{client}@{skey}", label, client, {**TODAY_BASE, **server}))
    return tuple(rows)


# --- today-dirty: the same question on a reused destination with big holes ------------------------
# Every byte of the destination holds data before the copy (disk_init data) and the image has 240 MiB
# holes, so a client sends zero requests larger than 64 MiB (nbdcopy: one per hole run, up to 128 MiB)
# onto data: nbd-server 3.24 and nbdkit 1.32's write fallback (ramfs; ext2 from a connection's second
# NO_HOLE zero) leave part of them stale and the copy fails verification, naming the stale ranges.
# qemu-img's zeroes are at most 32 MiB and pass; a fresh sparse destination would hide it all.
DIRTY_CLIENTS = ("qemu-img", "nbdcopy", "nbdcopy-allocated", "qemu-img-S0")
DIRTY_BASE = {**TODAY_BASE, "pattern": "alternate:16M:240M", "disk_init": "data"}


def dirty_servers() -> tuple[tuple[str, dict[str, Any]], ...]:
    return (("nbd-server-tmpfs", {"kind": "nbd-server", "storage": "tmpfs"}),
            ("nbd-server-ext4", {"kind": "nbd-server", "storage": "ext4"}),
            ("file-ramfs", {"plugin": "file", "storage": "ramfs"}),
            ("file-ext2", {"plugin": "file", "storage": "ext2"}),
            ("file-tmpfs", {"plugin": "file", "storage": "tmpfs"}),
            ("qemu-nbd-tmpfs", {"kind": "qemu-nbd", "storage": "tmpfs"}))


def _dirty_rows() -> tuple[Row, ...]:
    return tuple(Row(f"{client}@{skey}-dirty", f"{client} on {skey}, dirty disk", client, {**DIRTY_BASE, **server})
                 for skey, server in dirty_servers() for client in DIRTY_CLIENTS)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("case-study", "The fast-zero case study",
                 "The seven rows of the 2019 reference table re-enacted with the qemu 4.2 client, "
                 "then every other client against server A and server B.",
                 REFERENCE_ROWS + _client_rows()),
        Scenario("reference", "The reference table only",
                 "The seven rows of the 2019 reference table, qemu 4.2 client (emulate + ignore runs on a "
                 "two-process nbdkit chain: see the row's note).", REFERENCE_ROWS),
        Scenario("today", "Today's servers and storage",
                 "Each client (today's qemu-img and nbdcopy, the re-enacted eras) against every available server "
                 "kind x storage (nbdkit memory/file, qemu-nbd raw/qcow2, nbd-server on tmpfs, the data dir, ext4, "
                 "xfs, btrfs, a loop block device), no injected delays, 1 GiB (--size to change it).",
                 _today_rows()),
        Scenario("today-dirty", "Today's servers on a reused destination",
                 "qemu-img and nbdcopy (and the options that change their zeroes: --allocated, -S 0) into "
                 "destinations whose every byte holds data, 1 GiB of 16 MiB data / 240 MiB holes: zero requests "
                 "over 64 MiB land on data, where nbd-server 3.24 and nbdkit 1.32's write fallback leave part of "
                 "them stale (the copy fails verification, naming the stale ranges).", _dirty_rows()),
        Scenario("acts", "The talk, act by act",
                 "The story in the talk's order: baseline, writing zeroes, asking the destination first "
                 "(block status), pre-zeroing, no fallback, fast zero.",
                 tuple(r for a in ACTS for r in a.rows), ACTS),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}") from None


# --- which run measures which row: the one rule (the API's rows, a run's scenario_rows, the pages) ----
# A run measures a row when its client and every one of these server fields agree.
MATCH_FIELDS = ("zeromode", "fastzeromode", "size", "pattern", "maxdata", "delay_write", "delay_zero", "plugin",
                "source_format")
# Fields a row matches on only when it sets them (the block-status rows differ by storage
# alone); runs stored before these fields existed still match the rows that leave them out.
MATCH_IF_SET = ("kind", "storage", "disk_init", "disk_format", "noextents")


def row_match(row: Row) -> dict[str, Any]:
    """The server fields (normalised: bytes, milliseconds) a run must share with `row` to measure it."""
    from lab.domain.spec import build_spec

    spec = build_spec(row.server).to_dict()
    match = {k: spec[k] for k in MATCH_FIELDS if k in spec}
    match.update({k: spec[k] for k in MATCH_IF_SET if k in row.server and k in spec})
    return match


@dataclass(frozen=True)
class _Member:
    key: str
    match: dict[str, Any]
    spec: dict[str, Any]  # the row's whole server: where its 2019 figures hold


_INDEX: dict[str, list[_Member]] | None = None


def _index() -> dict[str, list[_Member]]:
    """Every row of every scenario (and act), once by key, by client; a row's stand-ins (its alternatives,
    the storages a machine without mount rights uses) under the same key."""
    global _INDEX
    if _INDEX is None:
        from lab.domain.spec import build_spec

        index: dict[str, list[_Member]] = {}
        seen: set[str] = set()
        for s in SCENARIOS.values():
            for r in (*s.rows, *(r for a in s.acts for r in a.rows)):
                if r.key not in seen:
                    seen.add(r.key)
                    for alt in (r, *r.alternatives):
                        index.setdefault(r.client, []).append(
                            _Member(r.key, row_match(alt), build_spec(alt.server).to_dict()))
        _INDEX = index
    return _INDEX


def row_matches(client: str, key: str) -> list[dict[str, Any]]:
    """The match fields of row `key` and of each of its stand-ins: a run of `client` measures the row when
    its server agrees with one of them (or carries the key as its label with the same zero modes)."""
    return [m.match for m in _index().get(client, ()) if m.key == key]


def rows_of(client: str, server: dict[str, Any], label: str | None = None) -> dict[str, bool]:
    """{row key: at the row's own geometry} for every scenario row a run measures.

    A run measures a row when its client and the row's match fields agree (whoever started it),
    or when it carries the row's key as its label with the row's zero modes (a sweep at another
    geometry). The value says whether the run's whole server is the row's, i.e. whether the row's
    2019 figures hold for it. `server`: the run's normalised fields (ServerSpec.to_dict()).
    """
    out: dict[str, bool] = {}
    for m in _index().get(client, ()):
        if all(server.get(k) == v for k, v in m.match.items()):
            out[m.key] = all(server.get(k) == v for k, v in m.spec.items())
        elif label == m.key and all(server.get(k) == m.match.get(k) for k in ("zeromode", "fastzeromode")):
            out[m.key] = False
    return out
