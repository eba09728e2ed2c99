"""What every copy client is given and gives back."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.domain.clients import ClientInfo
from lab.domain.counts import WireCounts
from lab.domain.flags import ServerFlags
from lab.host import cpu, procs
from lab.host.images import Image

CANCEL_CHECK_S = 0.05  # how soon a cancel reaches a running client process


class Cancelled(Exception):
    """The run was cancelled (or timed out) while the client was copying."""


class ClientError(RuntimeError):
    pass


@dataclass
class CopyContext:
    image: Image
    uri: str
    flags: ServerFlags
    source_format: str = "qcow2"
    queue_depth: int = 1
    cancel: threading.Event = field(default_factory=threading.Event)
    # Called by clients that count their own requests, with a partial result dict
    # (wire counts so far, phase); the run coalesces and streams it.
    report: Callable[[dict[str, Any]], None] = lambda _info: None
    # The re-enacted eras copy in this process instead of a child (the setting clients_in_process).
    in_process: bool = False

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()


@dataclass
class ClientResult:
    # None when the client cannot count its own requests: the server's log is the wire view.
    wire: WireCounts | None = None
    notes: list[str] = field(default_factory=list)
    # Copy time measured by the client itself, when it has one: the re-enacted eras clock
    # connect to disconnect (their Python child's start-up is not the era's cost); a real
    # binary is clocked from its spawn to its exit, as `time qemu-img ...` would.
    elapsed_s: float | None = None
    clock: str = "connect to disconnect"
    cpu_s: float | None = None  # the client process's CPU (rusage at its exit), for lab.measure.contention


class Client(ABC):
    """How one client of the catalog (lab.domain.clients) copies: `about` is its catalog entry."""

    def __init__(self, about: ClientInfo) -> None:
        self.about = about

    @property
    def id(self) -> str:
        return self.about.id

    @property
    def parallel(self) -> bool:
        return self.about.parallel

    @abstractmethod
    def copy(self, ctx: CopyContext) -> ClientResult:
        """Copy ctx.image to ctx.uri; Cancelled when ctx.cancel is set meanwhile."""


@contextlib.contextmanager
def supervised(proc: subprocess.Popen, ctx: CopyContext) -> Iterator[None]:
    """While the body waits on `proc`, a cancel kills it; on exit it is always reaped.

    The copy's own thread blocks on the process (no polling in the timed path); a side
    thread turns a cancel into a kill. Raises Cancelled after a cancel.
    """
    finished = threading.Event()

    def watch_cancel() -> None:
        while not finished.is_set():
            if ctx.cancel.wait(CANCEL_CHECK_S):
                procs.stop(proc, grace=0.2)
                return

    watcher = threading.Thread(target=watch_cancel, name=f"cancel-{proc.pid}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join(timeout=1)
        procs.stop(proc)
    if ctx.cancel.is_set():
        raise Cancelled()


def run_process(argv: Sequence[str], ctx: CopyContext) -> tuple[float, float | None]:
    """Run a real client binary to completion; cancel kills its whole process group.

    Returns its wall time from spawn to exit (the lab's clock stops when the process is
    reaped, before the cancel watcher is joined or anything else is tidied up) and its CPU."""
    t0 = time.perf_counter()
    proc = procs.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with supervised(proc, ctx):
        assert proc.stdout is not None
        output = proc.stdout.read()
        cpu_s = cpu.reap(proc)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        text = output.decode(errors="replace").strip()
        raise ClientError(f"{argv[0]} exited with status {proc.returncode}: {text[-500:]}")
    return elapsed, cpu_s
