"""What a storage can do about zeroes, and what it did: the evidence under an audit's verdict.

- `capabilities`: the storage's capability line, tried for real on a scratch file beside the
  disk (fallocate punch hole / zero range / allocate) or on the block device itself
  (BLKZEROOUT on its first 4 KiB, which the audit is about to overwrite anyway), plus the
  block queue's limits from sysfs (discard granularity, write-zeroes max bytes) of the device
  the storage sits on, when it sits on one.
- `allocated_bytes`: what a file (or a loop device's backing file) holds allocated.
- `device_written_bytes`: bytes the kernel counted as written to a block device
  (/sys/class/block/NAME/stat, sectors written). The block layer counts WRITE_ZEROES as
  writes too, so a BLKZEROOUT the device did in metadata still shows here: read it beside the
  allocation (lab.nbd.audit_cost says how the two are weighed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct
from pathlib import Path
from typing import Any

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
BLKZEROOUT = 0x127F  # _IO(0x12, 127)
PROBE_BYTES = 1 << 20
SECTOR = 512

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with any mode (os.posix_fallocate has none); OSError on failure."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _try(fn: Any) -> str:
    try:
        fn()
        return "yes"
    except OSError as e:
        return "no (" + (errno.errorcode.get(e.errno or 0) or str(e)) + ")"


def fallocate_modes(directory: Path) -> dict[str, str]:
    """Each fallocate mode the filesystem under `directory` accepts, tried on a 1 MiB scratch file of data."""
    probe = directory / ".cap-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.pwrite(fd, b"\xa5" * PROBE_BYTES, 0)
        return {"punch_hole": _try(lambda: fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536)),
                "zero_range": _try(lambda: fallocate(fd, FALLOC_FL_ZERO_RANGE, 65536, 65536)),
                "allocate": _try(lambda: fallocate(fd, 0, PROBE_BYTES, 65536))}
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            probe.unlink()


def blkzeroout(device: Path) -> str:
    """Does BLKZEROOUT work on `device`? Tried on its first 4 KiB (which the caller is about to overwrite)."""
    try:
        fd = os.open(device, os.O_WRONLY)
    except OSError as e:
        return f"no ({errno.errorcode.get(e.errno or 0, str(e))})"
    try:
        return _try(lambda: fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", 0, 4096)))
    finally:
        os.close(fd)


def sys_block(path: Path) -> Path | None:
    """The /sys/class/block entry of the device `path` is (a block device) or sits on (a file), if any."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    dev = st.st_rdev if stat.S_ISBLK(st.st_mode) else st.st_dev
    link = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    return link.resolve() if link.exists() else None


def _queue(sysdev: Path) -> Path:
    """A partition's queue is its disk's."""
    return sysdev / "queue" if (sysdev / "queue").exists() else sysdev.parent / "queue"


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def queue_limits(sysdev: Path | None) -> dict[str, Any]:
    if sysdev is None:
        return {"device": None}
    q = _queue(sysdev)
    return {"device": "/dev/" + sysdev.name,
            "discard_granularity": _read_int(q / "discard_granularity"),
            "discard_max_bytes": _read_int(q / "discard_max_bytes"),
            "write_zeroes_max_bytes": _read_int(q / "write_zeroes_max_bytes"),
            "rotational": _read_int(q / "rotational")}


def device_written_bytes(sysdev: Path | None) -> int | None:
    """Bytes written to the device so far (field 7 of its stat: sectors written, 512 bytes each)."""
    if sysdev is None:
        return None
    try:
        fields = (sysdev / "stat").read_text().split()
        return int(fields[6]) * SECTOR
    except (OSError, ValueError, IndexError):
        return None


def loop_backing_file(sysdev: Path | None) -> Path | None:
    if sysdev is None:
        return None
    try:
        text = (sysdev / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None
    return Path(text.removesuffix(" (deleted)")) if text else None


def allocated_bytes(path: Path) -> int | None:
    """Bytes allocated to a file; for a loop device, to its backing file; None for other devices."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        backing = loop_backing_file(sys_block(path))
        return allocated_bytes(backing) if backing is not None else None
    return st.st_blocks * SECTOR


def capabilities(disk: Path, is_block: bool) -> dict[str, Any]:
    """The capability line of the storage `disk` lives on (or is, for a block device)."""
    sysdev = sys_block(disk) if is_block or disk.exists() else sys_block(disk.parent)
    out: dict[str, Any] = {"fallocate": None, "blkzeroout": None, **queue_limits(sysdev)}
    if is_block:
        out["blkzeroout"] = blkzeroout(disk)
    else:
        out["fallocate"] = fallocate_modes(disk.parent)
    out["line"] = capability_line(out)
    return out


def capability_line(c: dict[str, Any]) -> str:
    parts = []
    if c.get("fallocate"):
        f = c["fallocate"]
        parts.append("fallocate: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in f.items()))
    if c.get("blkzeroout"):
        parts.append(f"BLKZEROOUT {c['blkzeroout']}")
    if c.get("device"):
        parts.append(f"on {c['device']}: discard granularity {_bytes(c.get('discard_granularity'))}, "
                     f"write-zeroes max {_bytes(c.get('write_zeroes_max_bytes'))}")
    else:
        parts.append("no block device under it")
    return "; ".join(parts)


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0 (none)"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
        if n >= size:
            return f"{n} B (~{n / size:.1f} {unit})"
    return f"{n} B"
