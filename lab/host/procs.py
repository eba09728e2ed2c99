"""Child-process hygiene: every helper binary the lab starts dies with us.

Three layers, because each covers a hole in the others:
- PR_SET_PDEATHSIG(SIGKILL) in the child: the kernel kills it if we die, even by SIGKILL.
  The signal is tied to the *thread* that forked, so every spawn goes through one
  long-lived spawner thread (a worker thread that exits would take its children with it).
- Each child gets its own process group, so a kill reaches its helpers too.
- Private runtime dirs carry our pid; a later start sweeps the dirs of dead owners.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from lab.host.places import Places, resolve

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_spawner = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-spawner")

_live_lock = threading.Lock()
_live: set[subprocess.Popen] = set()


def _child_setup() -> None:
    # Runs in the child between fork and exec: async-signal-safe calls only.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_env() -> dict[str, str]:
    """Our environment minus secrets: nbdkit and the clients have no use for the service's token
    or the broker's password (LAB_BROKER_URL).

    This passes the environment on (PATH, locale, TMPDIR for the tools); it reads no setting.
    """
    return {k: v for k, v in os.environ.items() if not (k.startswith("LAB_") and ("TOKEN" in k or "BROKER" in k))}


def spawn(argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start argv (a list, never a shell string) tied to this process's life.

    Without an explicit `env` the child gets child_env(): no LAB_*TOKEN* or LAB_*BROKER* variable; without an
    explicit `stdin`, /dev/null (a child in a background process group must never read a tty).

    The child leads a process group of its own (stop() signals the whole group), in this
    process's session: a new session per child would give each one its own scheduler autogroup
    (Linux, `kernel.sched_autogroup_enabled`), and a copy split into a server group and a client
    group ran ~2% slower at full speed than the same processes started by `nbdkit --run`.
    """
    if isinstance(argv, str):
        raise TypeError("spawn takes an argv list, not a shell string")
    argv = [str(a) for a in argv]
    if kwargs.get("env") is None:
        kwargs["env"] = child_env()
    kwargs.setdefault("stdin", subprocess.DEVNULL)

    def _start() -> subprocess.Popen:
        return subprocess.Popen(
            argv,
            preexec_fn=_child_setup,
            process_group=0,
            close_fds=True,
            **kwargs,
        )

    proc = _spawner.submit(_start).result()
    with _live_lock:
        _live.add(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 2.0) -> int:
    """TERM the process group, KILL it after `grace` seconds; always reaps.

    A second stop of the same process signals nothing: its group was killed by the first,
    and its pid (so its group id) may belong to a new process by now.
    """
    with _live_lock:
        stopped_before = proc not in _live
    if stopped_before and proc.poll() is not None:
        return proc.returncode
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        else:
            # The leader is gone; make sure nothing it left in its group lingers.
            _signal_group(proc, signal.SIGKILL)
        return proc.returncode
    finally:
        with _live_lock:
            _live.discard(proc)


def kill_all() -> None:
    """Last resort at shutdown: kill every child we still know of."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        stop(proc, grace=0.5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


# --- private runtime directories -------------------------------------------------------

OWNER_FILE = "owner.pid"


def runtime_root(places: Places | None = None) -> Path:
    """Where private per-server dirs live (made 0700): the places' runtime dir."""
    return resolve(places).runtime()


def private_dir(prefix: str, places: Places | None = None) -> Path:
    """A fresh 0700 dir owned by this process (its pid recorded for the sweeper)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=runtime_root(places)))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale_dirs(places: Places | None = None) -> int:
    """Remove private dirs whose owning process is gone (left by a SIGKILLed service). Storage dirs
    (mounts, loop devices) must be released before: lab.host.leftovers does both in that order."""
    removed = 0
    root = runtime_root(places)
    for entry in root.iterdir():
        if not entry.is_dir() or owner_alive(entry):
            continue
        remove_dir(entry)
        removed += 1
    return removed


def owner_alive(entry: Path) -> bool:
    """Is the process that made this private dir still running (and so still its owner)?"""
    try:
        pid = int((entry / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        pid = 0
    return pid == os.getpid() or (pid != 0 and _pid_alive(pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
