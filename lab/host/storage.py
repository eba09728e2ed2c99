"""Where a file-backed server keeps its disk: provisioned per server, released on every path.

Storages:
    tmpfs     a private tmpfs mount (needs mount rights)
    ramfs     a private ramfs mount: no fallocate at all, so every zero a server does is written out
    datadir   a private dir on the data dir's own filesystem (Places.scratch_dir; nothing to mount)
    shm       a private dir on a tmpfs that is already mounted and writable (the runtime dir when it is a
              tmpfs, else /dev/shm): tmpfs without mount rights (a container's /dev/shm is 64 MiB unless
              compose's `shm_size` says more; a disk larger than the room left is refused, not half-written)
    ext4/xfs/btrfs/ext2/vfat  a filesystem image the lab makes (mkfs.*), loop-attached and mounted
              privately (ext2: punch hole only, no zero-range or allocate; vfat: where the kernel has it)
    blockdev  a raw loop block device over a sparse file: the server gets /dev/loopN, so
              BLKZEROOUT / BLKDISCARD are the kernel's real block-layer paths

The audit (lab.nbd.audit) also takes a place the user names (lab.host.userstore): an existing
directory, or a block device on an allow-list.

Ownership is by path, never by guess: everything we create lives in one private dir of ours
(`sto-*`, its owner pid recorded beside it): the mount points are inside it and the loop
devices' backing files are inside it. So cleanup, and the start-up sweep after a `kill -9`,
unmount only mounts below such a dir and detach only loop devices whose backing file is
in such a dir. Nothing else on the machine is ever touched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.domain.spec import STORAGES
from lab.host import procs
from lab.host.places import Places, resolve

FILESYSTEMS = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"],
               "xfs": ["mkfs.xfs", "-q", "-f", "-K"],
               "btrfs": ["mkfs.btrfs", "-q", "-f", "-K"],
               "ext2": ["mkfs.ext2", "-q", "-F", "-E", "nodiscard"],
               "vfat": ["mkfs.vfat"]}
PACKAGES = {"ext4": "e2fsprogs", "xfs": "xfsprogs", "btrfs": "btrfs-progs", "ext2": "e2fsprogs", "vfat": "dosfstools"}
MEMORY_FS = ("tmpfs", "ramfs")  # mounted from memory: no loop device
XFS_MIN = 320 << 20  # mkfs.xfs refuses filesystems under 300 MiB
PREFIX = "sto-"
TOOL_TIMEOUT = 120.0
BUSY_WAIT_S = 5.0  # how long a release waits for a dying server to let go of its files


class StorageError(RuntimeError):
    pass


def _run(argv: list[str], what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
                             env=procs.child_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StorageError(f"{what}: {e}") from None
    if out.returncode != 0:
        raise StorageError(f"{what}: {argv[0]} exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")
    return out.stdout


def data_root(places: Places | None = None) -> Path:
    """Scratch space on the data dir's filesystem (the `datadir` storage), made 0700 on first use."""
    return resolve(places).scratch()


# --- what this machine allows -----------------------------------------------------------

TMPFS_TYPES = ("tmpfs", "ramfs")
SHM_DIR = Path("/dev/shm")


def fs_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (from /proc/self/mountinfo; "" if unknown)."""
    try:
        target = os.path.realpath(path)
        best, kind = "", ""
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts = left.split()
                if len(parts) < 5 or not right:
                    continue
                mp = parts[4].replace("\\040", " ")
                if (target == mp or target.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, kind = mp, right.split()[0]
        return kind
    except OSError:
        return ""


def room(path: Path) -> tuple[int, int]:
    """(size, free) in bytes of the filesystem holding `path` (what this user may fill)."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _shm_dir() -> Path:
    return SHM_DIR / f"fastzero-lab-{os.getuid()}"


def shm_root(places: Places | None = None, make: bool = True) -> Path:
    """The `shm` storage's parent: the runtime dir when it is on tmpfs (ours already), else a
    private per-user dir under /dev/shm (made on first use, unless `make` is False: then only
    checked). OSError when neither is a writable tmpfs."""
    where = resolve(places)
    runtime = where.runtime()
    if fs_type(runtime) == "tmpfs":
        return runtime
    if fs_type(SHM_DIR) != "tmpfs":
        raise OSError(f"no tmpfs at {SHM_DIR} and the runtime dir {runtime} is not on tmpfs")
    if not os.access(SHM_DIR, os.W_OK | os.X_OK):
        raise OSError(f"{SHM_DIR} is not writable by uid {os.geteuid()}")
    d = _shm_dir()
    if not make and not d.exists():
        return d
    d.mkdir(mode=0o700, exist_ok=True)
    if d.is_symlink() or d.stat().st_uid != os.getuid():  # someone else's: never ours to use
        raise OSError(f"{d} is not owned by uid {os.getuid()}")
    os.chmod(d, 0o700)
    return d


def parent_dir(name: str, places: Places | None = None, make: bool = True) -> Path | None:
    """Where a storage that uses an existing filesystem puts its disks (datadir, shm); None for the
    storages the lab makes itself (a mount or a loop device). OSError when it cannot be had."""
    if name == "datadir":
        return resolve(places).scratch()
    if name == "shm":
        return shm_root(places, make)
    return None


def too_small(name: str, size: int, places: Places | None = None) -> str | None:
    """Why a disk of `size` bytes cannot fit on storage `name` at all (its filesystem is smaller), else
    None. Only the storages on an existing filesystem have a fixed size; the free room is checked when
    the disk is provisioned."""
    try:
        parent = parent_dir(name, places, make=False)
        if parent is None:
            return None
        total, _ = room(parent if parent.exists() else parent.parent)
    except OSError:
        return None  # availability() says why
    if size > total:
        hint = " (a container: compose's shm_size, docker run --shm-size)" if name == "shm" else ""
        return f"{name} at {parent} holds {total >> 20} MiB, this disk needs {size >> 20} MiB{hint}"
    return None

@functools.cache
def _mount_reason(runtime: Path) -> str | None:
    """None if we may mount (checked once per runtime dir by mounting a tiny private tmpfs), else why not."""
    if os.geteuid() != 0:
        return f"mounting needs root (the service runs as uid {os.geteuid()})"
    if not shutil.which("mount") or not shutil.which("umount"):
        return "mount/umount not installed"
    d = Path(tempfile.mkdtemp(prefix="mnt-check-", dir=runtime))
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(d)],
                           capture_output=True, text=True, timeout=10, check=False)
        if r.returncode != 0:
            why = r.stderr.strip() or f"exit {r.returncode}"
            return f"mount is not allowed here ({why}); a container needs --privileged (or CAP_SYS_ADMIN)"
        subprocess.run(["umount", str(d)], capture_output=True, timeout=10, check=False)
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"mount check failed: {e}"
    finally:
        with contextlib.suppress(OSError):
            d.rmdir()


@functools.cache
def _loop_reason() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if not shutil.which("losetup"):
        return "losetup not installed (util-linux)"
    if not os.access("/dev/loop-control", os.W_OK):
        return "no /dev/loop-control: a container needs --privileged (or --device /dev/loop-control and loop devices)"
    return None


def kernel_filesystems() -> frozenset[str]:
    """What the running kernel can mount now (/proc/filesystems)."""
    try:
        with open("/proc/filesystems") as f:
            return frozenset(line.split()[-1] for line in f if line.strip())
    except OSError:
        return frozenset()


def _reason(name: str, where: Places) -> str | None:
    if name == "datadir":
        try:
            where.scratch()
        except OSError as e:
            return f"data dir not writable: {e}"
        return None
    if name == "shm":
        try:
            shm_root(where, make=False)
        except OSError as e:
            return f"no writable tmpfs already mounted: {e}"
        return None
    if name in MEMORY_FS:
        reason = _mount_reason(where.runtime())
    else:
        reason = _loop_reason() or (None if name == "blockdev" else _mount_reason(where.runtime()))
    if reason is None and name not in ("blockdev", "tmpfs") and name not in kernel_filesystems():
        return f"the kernel cannot mount {name} (not in /proc/filesystems; no module loaded)"
    if reason is None and name in FILESYSTEMS and not shutil.which(FILESYSTEMS[name][0]):
        return f"{FILESYSTEMS[name][0]} not installed (Debian package {PACKAGES[name]})"
    return reason


def availability(places: Places | None = None) -> dict[str, dict[str, object]]:
    """Each storage with `available` and, when not, `reason`."""
    where = resolve(places)
    out: dict[str, dict[str, object]] = {}
    for name in STORAGES:
        reason = _reason(name, where)
        out[name] = {"available": reason is None, **({"reason": reason} if reason else {})}
    return out


def check_available(name: str, places: Places | None = None) -> None:
    if name not in STORAGES:
        raise StorageError(f"unknown storage {name!r}; choose one of {', '.join(STORAGES)}")
    info = availability(places)[name]
    if not info["available"]:
        raise StorageError(f"storage {name} is not available here: {info['reason']}")


# --- one provisioned storage ---------------------------------------------------------------

@dataclass
class Provisioned:
    """A disk of `size` bytes on `storage`: `disk` is a regular file or a block device."""

    storage: str
    size: int
    dir: Path
    disk: Path | None = None
    mounts: list[Path] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    fs_type: str = ""

    @property
    def is_block(self) -> bool:
        return self.storage in ("blockdev", "device")

    def info(self) -> dict[str, object]:
        return {"storage": self.storage, "dir": str(self.dir), "disk": str(self.disk) if self.disk else None,
                "filesystem": self.fs_type, "loop_devices": list(self.loops),
                "mounts": [str(m) for m in self.mounts]}

    def release(self) -> None:
        """Unmount, detach, remove: idempotent, never raises."""
        release_dir(self.dir)


def provision(storage: str, size: int, disk_name: str = "disk.img", places: Places | None = None) -> Provisioned:
    """Make room for a disk of `size` bytes on `storage` (the disk file itself is not created
    for file storages: the kind creates it, raw or qcow2). Cleans up after itself on failure."""
    where = resolve(places)
    check_available(storage, where)
    parent = parent_dir(storage, where) or where.runtime()
    if storage == "shm":  # a shared tmpfs: refuse a disk that would fill it mid-copy
        _, free = room(parent)
        if size > free:
            raise StorageError(f"not enough room on {parent}: {free >> 20} MiB free, the disk needs {size >> 20} "
                               "MiB (a container: compose's shm_size)")
    d = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    (d / procs.OWNER_FILE).write_text(str(os.getpid()))
    p = Provisioned(storage, size, d)
    try:
        if storage in ("datadir", "shm"):
            p.disk = d / disk_name
            p.fs_type = fs_type(d) or "unknown"
        elif storage in MEMORY_FS:
            mnt = d / "mnt"
            mnt.mkdir()
            # Room for the disk plus a qcow2's metadata; pages are only used when written.
            # (ramfs has no size limit: the size the spec allows is its bound.)
            opts = f"size={size + (64 << 20)},mode=0700" if storage == "tmpfs" else "mode=0700"
            _run(["mount", "-t", storage, "-o", opts, storage, str(mnt)], f"mounting a {storage}")
            p.mounts.append(mnt)
            p.disk = mnt / disk_name
            p.fs_type = storage
        elif storage == "blockdev":
            backing = d / "blockdev.img"
            _sparse(backing, size)
            p.loops.append(_attach(backing))
            p.disk = Path(p.loops[-1])
            p.fs_type = "block device (loop)"
        else:
            image = d / f"{storage}.img"
            _sparse(image, max(XFS_MIN, size + size // 8 + (128 << 20)))
            _run([*FILESYSTEMS[storage], str(image)], f"making an {storage} filesystem")
            loop = _attach(image)
            p.loops.append(loop)
            mnt = d / "mnt"
            mnt.mkdir()
            _run(["mount", "-t", storage, loop, str(mnt)], f"mounting the {storage} filesystem")
            p.mounts.append(mnt)
            p.disk = mnt / disk_name
            p.fs_type = storage
    except BaseException:
        p.release()
        raise
    return p


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _attach(backing: Path) -> str:
    return _run(["losetup", "--find", "--show", str(backing)], "attaching a loop device").strip()


# --- release, and the sweep of what a killed service left ------------------------------------

def _mounts_under(d: Path) -> list[Path]:
    """Mount points at or below d (from /proc/self/mountinfo), deepest first."""
    base = str(d.resolve())
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4:
                mp = parts[4].replace("\\040", " ")
                if mp == base or mp.startswith(base + "/"):
                    found.append(Path(mp))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _loops_backed_by(d: Path) -> list[str]:
    """Loop devices whose backing file lives in d (read from sysfs; '(deleted)' counts too)."""
    base = str(d.resolve()) + "/"
    found = []
    for bf in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if bf.read_text().strip().startswith(base):
                found.append("/dev/" + bf.parent.parent.name)
    return found


def release_dir(d: Path) -> list[str]:
    """Unmount every mount below d, detach every loop device backed by a file in d, remove d.

    Returns what it did (for logs and tests). Safe to call twice and on a dir that holds
    no mount. Only ever acts on our own private dirs (checked by name).
    """
    if not d.name.startswith(PREFIX):
        raise ValueError(f"refusing to release {d}: not a lab storage dir")
    done: list[str] = []
    for mp in _mounts_under(d):
        # Busy while a server that was just killed still closes its files: retry a moment,
        # then detach lazily (the kernel frees it when the last file is closed).
        deadline = time.monotonic() + BUSY_WAIT_S
        while subprocess.run(["umount", str(mp)], capture_output=True, timeout=60, check=False).returncode:
            if time.monotonic() > deadline:
                subprocess.run(["umount", "-l", str(mp)], capture_output=True, timeout=60, check=False)
                break
            time.sleep(0.05)
        done.append(f"umount {mp}")
    loops = _loops_backed_by(d)
    for dev in loops:
        # On a device still in use this sets autoclear: it detaches when its last user goes.
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60, check=False)
        done.append(f"losetup -d {dev}")
    deadline = time.monotonic() + BUSY_WAIT_S
    while loops and _loops_backed_by(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _mounts_under(d):  # never rmtree through a mount that would not go
        procs.remove_dir(d)
    return done


def sweep_stale(places: Places | None = None) -> list[str]:
    """Release the storage dirs whose owning process is gone (a service killed with -9)."""
    where = resolve(places)
    done: list[str] = []
    roots = [where.runtime()]
    with contextlib.suppress(OSError):
        roots.append(where.scratch())
    shared = _shm_dir()  # only looked at, never made, here
    if shared.is_dir() and not shared.is_symlink():
        roots.append(shared)
    for root in roots:
        for entry in sorted(root.glob(PREFIX + "*")):
            if entry.is_dir() and not procs.owner_alive(entry):
                done += release_dir(entry) or [f"rm {entry}"]
    return done
