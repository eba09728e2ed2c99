"""Source images: recipes built once into a cache, with per-chunk hashes for verification.

A recipe is (size, pattern). The raw sparse file is written here with recognisable data
(every 4 KiB block carries its own offset, so a misplaced write cannot pass verification),
then `qemu-img convert` makes the qcow2 the talk copies from; its holes are real qcow2
holes. The chunk hashes of the raw file are what a destination must match.

Entries are used under a shared flock and evicted least-recently-used under an
exclusive one, so a build, a run and an eviction in other processes never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.domain.layout import BLOCK, parse_pattern
from lab.domain.units import format_size
from lab.host import procs
from lab.host.places import Places, resolve

RECIPE_VERSION = 2
CHUNK = 1 << 20  # verification granularity
_MAGIC = b"FZLABDAT"

def block_bytes(offset: int) -> bytes:
    """The recognisable content of the 4 KiB block at `offset` (never all zero)."""
    fill = (offset // BLOCK) % 251 + 1
    head = offset.to_bytes(8, "big") + _MAGIC
    return head + bytes([fill]) * (BLOCK - len(head))


def data_bytes(offset: int, length: int) -> bytes:
    """Content of [offset, offset+length) of any data extent (4 KiB aligned)."""
    return b"".join(block_bytes(o) for o in range(offset, offset + length, BLOCK))


def chunk_digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Image:
    """A built recipe in the cache."""

    size: int
    pattern: str
    dir: Path
    extents: tuple[tuple[int, int], ...]
    chunk_hashes: tuple[str, ...]

    @property
    def raw(self) -> Path:
        return self.dir / "source.raw"

    @property
    def qcow2(self) -> Path:
        return self.dir / "source.qcow2"

    @property
    def data_bytes(self) -> int:
        return sum(n for _, n in self.extents)

    def path(self, fmt: str) -> Path:
        return self.qcow2 if fmt == "qcow2" else self.raw

    def segments(self) -> Iterator[tuple[int, int, bool]]:
        """(offset, length, is_data) covering the whole image in order: the block status view."""
        pos = 0
        for off, n in self.extents:
            if off > pos:
                yield pos, off - pos, False
            yield off, n, True
            pos = off + n
        if pos < self.size:
            yield pos, self.size - pos, False


def cache_root(places: Places | None = None) -> Path:
    """The cache directory (made on first use): the places' image dir."""
    return resolve(places).images()


def _key(size: int, pattern: str) -> str:
    digest = hashlib.sha1(f"v{RECIPE_VERSION}|{size}|{pattern}".encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9]+", "-", pattern).strip("-")
    return f"{format_size(size)}-{safe}-{digest}"


@contextlib.contextmanager
def acquire(size: int, pattern: str, max_cache_bytes: int | None = None,
            places: Places | None = None) -> Iterator[Image]:
    """Yield the cached image for a recipe, building it if needed; held in use until exit."""
    root = cache_root(places)
    entry = root / _key(size, pattern)
    with _flock(root / ".build.lock", fcntl.LOCK_EX):
        if not (entry / "meta.json").exists():
            if max_cache_bytes is not None:
                _evict(max_cache_bytes - _estimate_bytes(size, pattern), root)
            _build(entry, size, pattern)
        inuse = _open_lock(entry / ".inuse")
        fcntl.flock(inuse, fcntl.LOCK_SH)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        os.utime(entry / "meta.json")  # LRU clock
        yield Image(
            size=size,
            pattern=pattern,
            dir=entry,
            extents=tuple((o, n) for o, n in meta["extents"]),
            chunk_hashes=tuple(meta["chunk_hashes"]),
        )
    finally:
        os.close(inuse)


def _evict(budget: int, root: Path) -> list[str]:
    entries = [e for e in root.iterdir() if (e / "meta.json").exists()]
    entries.sort(key=lambda e: (e / "meta.json").stat().st_mtime)
    total = sum(_disk_bytes(e) for e in entries)
    removed = []
    for e in entries:
        if total <= budget:
            break
        fd = _open_lock(e / ".inuse")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            size = _disk_bytes(e)
            (e / "meta.json").unlink()
            shutil.rmtree(e, ignore_errors=True)
            total -= size
            removed.append(e.name)
        finally:
            os.close(fd)
    return removed


def _estimate_bytes(size: int, pattern: str) -> int:
    data = sum(n for _, n in parse_pattern(pattern, size))
    return 2 * data + (1 << 20)  # raw + qcow2, plus metadata


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file())


def _build(entry: Path, size: int, pattern: str) -> None:
    extents = parse_pattern(pattern, size)
    tmp = entry.with_name(entry.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    raw = tmp / "source.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        for off, n in extents:
            for o in range(off, off + n, CHUNK):
                f.seek(o)
                f.write(data_bytes(o, min(CHUNK, off + n - o)))
    hashes = _hash_file(raw, size)
    argv = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp / "source.qcow2")]
    proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:  # spawned like every helper: it dies with us, even mid-build
        out, _ = proc.communicate()
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, out)
    meta = {"version": RECIPE_VERSION, "size": size, "pattern": pattern, "extents": extents,
            "chunk": CHUNK, "chunk_hashes": hashes}
    (tmp / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)


def _hash_file(path: Path, size: int) -> list[str]:
    hashes = []
    with open(path, "rb") as f:
        for off in range(0, size, CHUNK):
            hashes.append(chunk_digest(f.read(min(CHUNK, size - off))))
    return hashes


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)
