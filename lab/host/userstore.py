"""Places the user names for an audit's disk: one of the lab's storages, a directory, or a block device.

    tmpfs, ext2, ...   a storage the lab makes and removes (lab.host.storage)
    path:/srv/scratch  an existing directory: the disk is a file in a private `sto-*` dir made inside it
                       (removed afterwards); over the API only below a directory listed in LAB_AUDIT_PATHS
    dev:/dev/sdX       a whole block device, overwritten from its start: only when listed in
                       LAB_AUDIT_DEVICES, not mounted, not held by anything (no partition in use, no
                       device-mapper or md above it), and only with destructive

Nothing here connects or writes until `provision_place`; the checks read sysfs and
/proc/self/mountinfo only, so a refused place costs nothing.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.spec import STORAGES
from lab.host import procs, storage
from lab.host.places import Places, resolve
from lab.host.storage import Provisioned, StorageError


@dataclass(frozen=True)
class Place:
    kind: str  # "storage" (one the lab makes), "path" or "device"
    name: str  # the storage's name, the directory, or the device path
    text: str  # as the user gave it

    @property
    def label(self) -> str:
        return self.name if self.kind == "storage" else self.text


class PlaceError(StorageError):
    """A place that may not be used; the message says why (the `storage` field is at fault)."""


def parse_place(text: str) -> Place:
    text = (text or "").strip()
    if text in STORAGES:
        return Place("storage", text, text)
    for prefix, kind in (("path:", "path"), ("dev:", "device")):
        if text.startswith(prefix):
            where = text[len(prefix):]
            if not where.startswith("/") or "\0" in where or len(where) > 300:
                raise PlaceError(f"{prefix} takes an absolute path (got {where[:80]!r})")
            return Place(kind, os.path.normpath(where), text)
    raise PlaceError(f"{text[:80]!r} is not a storage: use one of {', '.join(STORAGES)}, path:/DIR or dev:/dev/X")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == os.path.realpath(r) or real.startswith(os.path.realpath(r).rstrip("/") + "/") for r in roots)


def check_place(place: Place, size: int, limits: Limits = DEFAULT_LIMITS, *, destructive: bool = False,
                api: bool = False, places: Places | None = None) -> None:
    """PlaceError unless `place` may hold a disk of `size` bytes. Writes nothing."""
    if place.kind == "storage":
        try:
            storage.check_available(place.name, places)
        except StorageError as e:
            raise PlaceError(str(e)) from None
        return
    if place.kind == "path":
        _check_dir(place.name, limits, api)
        return
    _check_device(place.name, size, limits, destructive)


def _check_dir(d: str, limits: Limits, api: bool) -> None:
    if not os.path.isdir(d):
        raise PlaceError(f"path:{d} is not an existing directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise PlaceError(f"path:{d} is not writable by uid {os.geteuid()}")
    if api and not _under(d, limits.audit_paths):
        raise PlaceError(f"path:{d} is not below a directory listed in LAB_AUDIT_PATHS; refused")


def _check_device(dev: str, size: int, limits: Limits, destructive: bool) -> None:
    if os.path.realpath(dev) not in {os.path.realpath(d) for d in limits.audit_devices}:
        raise PlaceError(f"dev:{dev} is not listed in LAB_AUDIT_DEVICES; refused without opening it")
    try:
        st = os.stat(dev)
    except OSError as e:
        raise PlaceError(f"dev:{dev}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise PlaceError(f"dev:{dev} is not a block device")
    if not destructive:
        raise PlaceError(f"the audit overwrites the first {size} bytes of {dev}: say destructive to allow it")
    if busy := device_busy(st.st_rdev):
        raise PlaceError(f"dev:{dev} is in use ({busy}); refused")
    have = device_size(st.st_rdev)
    if have is not None and have < size:
        raise PlaceError(f"dev:{dev} holds {have} bytes, fewer than the audit's {size}")


def _sysdev(rdev: int) -> Path:
    return Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}").resolve()


def device_size(rdev: int) -> int | None:
    try:
        return int((_sysdev(rdev) / "size").read_text()) * 512
    except (OSError, ValueError):
        return None


def device_busy(rdev: int) -> str | None:
    """Why a device is in use (mounted, or it or a partition of it held by another device), or None."""
    ids = {f"{os.major(rdev)}:{os.minor(rdev)}"}
    sysdev = _sysdev(rdev)
    parts = [p for p in sysdev.iterdir() if (p / "partition").exists()] if sysdev.is_dir() else []
    for p in parts:
        try:
            ids.add((p / "dev").read_text().strip())
        except OSError:
            continue
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[2] in ids:
                    return f"mounted at {fields[4]}"
    except OSError:
        pass
    for d in [sysdev, *parts]:
        holders = d / "holders"
        if holders.is_dir() and any(holders.iterdir()):
            return f"held by {', '.join(h.name for h in holders.iterdir())}"
    return None


def provision_place(place: Place, size: int, places: Places | None = None, limits: Limits = DEFAULT_LIMITS, *,
                    destructive: bool = False, api: bool = False) -> Provisioned:
    """Room for a disk of `size` bytes at `place` (checked first); release() undoes it."""
    check_place(place, size, limits, destructive=destructive, api=api, places=places)
    if place.kind == "storage":
        return storage.provision(place.name, size, places=places)
    if place.kind == "path":
        d = Path(tempfile.mkdtemp(prefix=storage.PREFIX, dir=place.name))
        (d / procs.OWNER_FILE).write_text(str(os.getpid()))
        p = Provisioned("path", size, d, disk=d / "disk.img")
        p.fs_type = storage.fs_type(d) or "unknown"
        return p
    # A device: only a private bookkeeping dir of ours; the device itself is the disk.
    d = Path(tempfile.mkdtemp(prefix=storage.PREFIX, dir=resolve(places).runtime()))
    (d / procs.OWNER_FILE).write_text(str(os.getpid()))
    return Provisioned("device", size, d, disk=Path(place.name), fs_type="block device")
