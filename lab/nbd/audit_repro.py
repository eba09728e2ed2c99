"""For every cell that read back wrong: a script a person can paste, and a draft upstream report.

A reproducer is plain shell (root, as the storage needs mounting): make a private directory,
the storage and the disk, start the server the way the audit did (same binary, same options,
the lab's paths replaced by the script's), then one `nbdsh` command that prepares the range,
sends the zero request(s) the cell sent (the first one too, for a cell that failed only when
repeated on its connection), reads the range back and exits 1 naming the first stale byte.
The script cleans up after itself and exits with nbdsh's status: it fails while the bug is there.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from lab.domain.units import format_size
from lab.nbd.audit_cells import GUARD, Group, Size, nbd_flags

FS_MKFS = {"ext2": "mkfs.ext2 -q -F", "ext4": "mkfs.ext4 -q -F", "xfs": "mkfs.xfs -q -f", "btrfs": "mkfs.btrfs -q -f",
           "vfat": "mkfs.vfat"}
SPEC_SENTENCE = 'NBD protocol, NBD_CMD_WRITE_ZEROES: the server "MUST ensure that the data reads back as zero"'
# Stop the server and wait until it has gone (its open disk would keep the mount busy).
STOP = 'P=$(cat "$D/pid"); kill "$P" 2>/dev/null; while kill -0 "$P" 2>/dev/null; do sleep 0.1; done'
STOP_CHILD = 'kill "$P" 2>/dev/null; wait "$P" 2>/dev/null'  # a child of the script: wait reaps it
KNOWN = {
    "nbd-server": ("nbd-server.c expwrite_zeroes() writes a zeroed buffer in pieces of at most 64 MiB but never "
                   "advances the offset between pieces, so only the first 64 MiB of a larger request is zeroed "
                   "(the function as added by commit 523adfa, 2016, first released in 3.15; unchanged in 3.24 "
                   "and at the head of NetworkBlockDevice/nbd)"),
    "nbdkit": ("nbdkit server/plugins.c plugin_zero(): when the plugin's .zero fails with EOPNOTSUPP the core "
               "falls back to pwrite of a zero buffer of at most 64 MiB (MAX_REQUEST_SIZE), decrementing count "
               "without advancing offset, so only the first 64 MiB of a larger request is zeroed; fixed in "
               "nbdkit 1.44.1 (commit 20b23fc9, backported to the 1.38 branch and later)"),
}


def _group(cell: dict[str, Any]) -> Group:
    return Group(cell["index"], Size(cell["size"], cell["misalign"]), cell["flags"], cell["disk"], cell["inflight"])


def _storage_lines(place: str, disk_size: int) -> tuple[list[str], str, list[str]]:
    """(setup lines, the disk's path in the script, cleanup lines) for the place the audit used."""
    fs_size = max(320 << 20, disk_size + disk_size // 8 + (128 << 20))
    if place in ("tmpfs", "ramfs"):
        opts = f"-o size={disk_size + (64 << 20)} " if place == "tmpfs" else ""
        return ([f'mkdir "$D/mnt" && mount -t {place} {opts}{place} "$D/mnt"'], '"$D/mnt/disk.img"',
                ['umount "$D/mnt"'])
    if place in FS_MKFS:
        return ([f'truncate -s {fs_size} "$D/fs.img" && {FS_MKFS[place]} "$D/fs.img"',
                 'mkdir "$D/mnt" && mount -o loop "$D/fs.img" "$D/mnt"'], '"$D/mnt/disk.img"',
                ['umount "$D/mnt"'])
    if place == "blockdev":
        return ([f'truncate -s {disk_size} "$D/backing.img"', 'LOOP=$(losetup --find --show "$D/backing.img")'],
                '"$LOOP"', ['losetup -d "$LOOP"'])
    if place.startswith("dev:"):
        return ([f"# DESTRUCTIVE: overwrites the start of {place[4:]}"], shlex.quote(place[4:]), [])
    return ([], '"$D/disk.img"', [])  # datadir, path:/dir, memory: a file (or nothing) in the script's dir


def _server_lines(a: dict[str, Any], disk: str) -> tuple[list[str], str, str]:
    """(lines that start the server, the nbdsh URI, the line that stops it)."""
    s = a["server"]
    kind, size = s.get("kind", "nbdkit"), a["plan_disk_size"]
    wait = 'for i in $(seq 100); do [ -S "$D/sock" ] && break; sleep 0.1; done'
    if kind == "nbdkit":
        plugin = f"memory size={size}" if s.get("plugin") == "memory" else f"file file={disk}"
        return ([f'nbdkit -U "$D/sock" -P "$D/pid" {plugin}'], 'nbd+unix:///?socket=$D/sock',
                STOP)
    if kind == "qemu-nbd":
        fmt = s.get("disk_format") or "raw"
        opts = " ".join(a for a in s.get("argv", []) if a.startswith(("--cache", "--aio")))
        create = [f"qemu-img create -q -f qcow2 {disk} {size}"] if fmt == "qcow2" else []
        return ([*create, f'qemu-nbd -f {fmt} -k "$D/sock" -t -e 8 {opts} --discard=unmap --detect-zeroes=off '
                 f'{disk} & P=$!', wait], 'nbd+unix:///?socket=$D/sock', STOP_CHILD)
    if kind == "nbd-server":
        conf = (f"[generic]\\n    unixsock = $D/sock\\n[audit]\\n    exportname = {disk.strip(chr(34))}\\n"
                "    trim = true\\n    flush = true\\n    fua = true\\n")
        return ([f'printf "{conf}" > "$D/nbd-server.conf"',
                 'nbd-server -C "$D/nbd-server.conf" -d & P=$!', wait],
                'nbd+unix:///audit?socket=$D/sock', STOP_CHILD)
    return ([f"# the external target {s.get('target')} (it is written)"], s.get("uri", ""), "true")


# What nbdsh runs (`h` is its connected handle). Double quotes only: the script wraps it in single quotes.
REPRO_PY = """import os
R = @R@; F = @F@; G = @G@; P = 1 << 25; B = 4096
DISK = os.environ.get("DISK", ""); SIZE = @SIZE@
def span(o, n): return o // B * B - G, -(-(o + n) // B) * B + G
def fill(lo, hi):
    for p in range(lo, hi, P): h.pwrite(b"\\xa5" * min(P, hi - p), p)
def prepare():
@HOLE@    h.flush()
def zero():
    cs = [h.aio_zero(n, o, flags=F) for o, n in R]
    while cs:
        cs = [c for c in cs if not h.aio_command_completed(c)]
        if cs: h.poll(1000)
    h.flush()
def check(k):
    for o, n in R:
        lo, hi = span(o, n); stale = 0; first = None; moved = 0
        for p in range(lo, hi, P):
            d = h.pread(min(P, hi - p), p)
            a, b = min(max(o - p, 0), len(d)), min(max(o + n - p, 0), len(d))
            r = d[a:b]
            stale += len(r) - r.count(0)
            if first is None and stale: first = p + a + len(r) - len(r.lstrip(b"\\0"))
            moved += len(d) - len(r) - (d[:a] + d[b:]).count(0xa5)
        if stale or moved:
            print("request", k + 1, "of", REPS, ": STALE", stale, "bytes in", [o, o + n], "first at", first,
                  "=", None if first is None else first - o, "into the request; guard bytes changed:", moved)
            raise SystemExit(1)
    print("request", k + 1, "of", REPS, ": the range reads back zero")
REPS = @REPS@
for k in range(REPS):
    prepare(); zero(); check(k)
"""


def nbdsh_code(cell: dict[str, Any], sparse_by: str | None, disk_size: int) -> str:
    """The Python nbdsh runs: prepare, zero (the first request too, for a repeated cell), read back, judge."""
    g = _group(cell)
    if cell["disk"] == "sparse":
        reset = ("os.truncate(DISK, 0); os.truncate(DISK, SIZE)" if sparse_by and "truncated" in sparse_by
                 else "[h.trim(n, o) for o, n in R]")
        hole = f"    {reset}\n    for o, n in R:\n        lo, hi = span(o, n); fill(lo, o); fill(o + n, hi)\n"
    else:
        hole = "    for o, n in R:\n        fill(*span(o, n))\n"
    values = {"@R@": repr(g.ranges()), "@F@": str(nbd_flags(cell["flags"])), "@G@": str(GUARD),
              "@SIZE@": str(disk_size), "@HOLE@": hole, "@REPS@": "2" if cell["position"] == "repeated" else "1"}
    code = REPRO_PY
    for k, v in values.items():
        code = code.replace(k, v)
    return code


def reproducer(a: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    s = a["server"]
    store = s.get("storage") if isinstance(s.get("storage"), dict) else {}
    place = str(store.get("place") or ("memory" if s.get("plugin") == "memory" else ""))
    setup, disk, cleanup = _storage_lines(place, a["plan_disk_size"])
    base = f"/{place[5:].strip('/')}" if place.startswith("path:") else "/dev/shm" if place == "shm" else "/var/tmp"
    start, uri, stop = _server_lines(a, disk)
    make_disk = [f"truncate -s {a['plan_disk_size']} {disk}"] if disk.startswith('"$D') and \
        s.get("kind") != "external" and not (s.get("kind") == "qemu-nbd" and s.get("disk_format") == "qcow2") else []
    code = nbdsh_code(cell, (cell.get("prepared") or {}).get("sparse_by"), a["plan_disk_size"])
    nbdsh = f'DISK={disk} nbdsh -u "{uri}" -c {shlex.quote(code)}'
    lines = ["#!/bin/bash", f"# {a['label']}: {cell['key']} ({cell['position']} on its connection) reads back "
             "non-zero; exits 1 while the bug is there", "set -u",
             f'D=$(mktemp -d "${{REPRO_DIR:-{base}}}/nbd-zero-repro.XXXXXX")', *setup, *make_disk, *start,
             nbdsh, "rc=$?", stop, *cleanup, 'rm -rf "$D"', "exit $rc"]
    if s.get("plugin") == "memory" or place in ("", "memory"):
        lines = [ln for ln in lines if "truncate -s" not in ln]
    return {"cell": cell["cell"], "request": cell["key"], "position": cell["position"],
            "server": " ".join(start), "audit_argv": s.get("argv"), "nbdsh": nbdsh,
            "check": "nbdsh exits 1 and prints STALE with the first non-zero offset while the bug is there",
            "script": "\n".join(lines) + "\n"}


def reproducers(a: dict[str, Any]) -> list[dict[str, Any]]:
    bad = [c for c in a["cells"] if c.get("unsafe")]
    a = {**a, "plan_disk_size": a["plan"]["disk_size"]}
    return [reproducer(a, c) for c in bad]


def known_defect(a: dict[str, Any]) -> str | None:
    """The upstream defect this failure matches, when the evidence says so (stale data from +64 MiB on)."""
    fb = a["safety"].get("first_bad") or {}
    rel = fb.get("offset_in_request")
    if rel is None or rel % (64 << 20):
        return None
    s = a["server"]
    if s.get("kind") == "nbd-server":
        return KNOWN["nbd-server"]
    if s.get("kind") == "nbdkit" and _older(s.get("version", ""), (1, 44, 1)):
        return KNOWN["nbdkit"]
    return None


def _older(version: str, than: tuple[int, ...]) -> bool:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    return bool(m) and tuple(int(x) for x in m.groups()) < than


def upstream_report(a: dict[str, Any]) -> str:
    s, fb, host = a["server"], a["safety"]["first_bad"], a["host"]
    store = s.get("storage") if isinstance(s.get("storage"), dict) else {}
    bad = sorted({c["key"] for c in a["cells"] if c.get("unsafe")})
    good = sorted({c["key"] for c in a["cells"] if c.get("outcome") == "ok" and not c.get("unsafe")})
    repro = a["reproducers"][0]["script"] if a.get("reproducers") else "(none)"
    known = known_defect(a)
    rel = fb.get("offset_in_request") or 0
    return "\n".join([
        f"Subject: {s.get('version', s.get('kind'))}: WRITE_ZEROES of {fb['request']} returns success but leaves "
        f"{fb['bytes']} bytes unzeroed from +{format_size(rel)}",
        "",
        f"Server: {s.get('version')} ({' '.join(s.get('argv') or [])})",
        f"Storage: {store.get('place', '-')} ({store.get('filesystem', '-')}); "
        f"{(store.get('capabilities') or {}).get('line', '')}",
        f"Client: libnbd {host.get('libnbd')}; kernel {host.get('kernel')}",
        "",
        f"Expected: the whole range reads back as zeroes ({SPEC_SENTENCE}).",
        f"Actual: the request succeeded ({fb['position']} request of its kind on the connection); "
        f"{fb['bytes']} bytes still hold the data written before, first at offset {fb['offset']} "
        f"(+{format_size(rel)} into the request); stale ranges [offset, length]: {fb.get('ranges')}",
        f"Requests that read back wrong: {', '.join(bad)}",
        f"Requests that read back zero: {', '.join(good) or '-'}",
        *([f"Probable cause: {known}"] if known else []),
        "",
        "Reproducer (root; it cleans up and exits 1 while the bug is there):",
        repro,
    ])
