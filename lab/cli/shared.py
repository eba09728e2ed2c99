"""What `lab`'s commands share (lab/cli/commands.py, lab/cli/sweep.py): the one way a bad argument ends
(a message naming it on stderr, exit status 2), Ctrl-C/SIGTERM as a clean cancel, and a sweep
(a named scenario or a custom one) run in this process."""

from __future__ import annotations

import signal
import sys
import threading
import time

from lab.host.places import Core
from lab.nbd.backends import Machine
from lab.service.estimate import Estimator
from lab.service.jobs import Job, LocalContext
from lab.service.scheduler import Admission, LocalExecutor, Scheduler, Stop
from lab.service.sweeps import Sweep, SweepService

EXIT_USAGE = 2
MAX_WORKERS = 16


def bad(message: str) -> int:
    """A bad argument: say which and what is wrong; the command returns this (2) as its exit status."""
    print(f"lab: error: {message}", file=sys.stderr)
    return EXIT_USAGE


MAX_TIMEOUT_S = 86_400


def timeout_problem(timeout: float | None) -> str | None:
    """--timeout's problem, if any (None: not given, the setting's value applies)."""
    if timeout is None or 0 < timeout <= MAX_TIMEOUT_S:
        return None
    return f"--timeout: must be a positive number of seconds up to {MAX_TIMEOUT_S} (got {timeout:g})"


def workers_problem(workers: int) -> str | None:
    if 1 <= workers <= MAX_WORKERS:
        return None
    return f"--workers: must be between 1 and {MAX_WORKERS} (got {workers})"


class Interrupt:
    """Ctrl-C / SIGTERM cancels the runs cleanly (servers and clients stopped) instead of dying."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> threading.Event:
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self.event

    def _handle(self, _sig: int, _frame: object) -> None:
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class LocalSweep:
    """A sweep run here: a private scheduler carries out up to `workers` runs at once (with the
    service's rules: CPU-bound runs alone...), a SweepService queues them (`service.start` or
    `service.start_custom`), and each finished run prints a line on stderr unless `quiet`. Nothing
    runs before run(). `core`: the settings' limits and places, handed to every run; `timeout_s`:
    a run still going after it is stopped and failed."""

    def __init__(self, workers: int, name: str, quiet: bool, core: Core | None = None,
                 queue_size: int = 10_000, timeout_s: float | None = None) -> None:
        self.quiet = quiet
        core = core or Core()
        executor = LocalExecutor(workers, context=lambda job, emit: LocalContext(emit, job.cancel, core), name=name)
        guess = Estimator(lambda _client: [])  # no history here: the request x delay floor
        self.scheduler = Scheduler(executor, Admission(queue_size), on_finish=self._finished, estimate=guess,
                                   cores=guess.cores, name=name)
        self.service = SweepService(self.scheduler, core.limits, timeout_s=timeout_s,
                                    machine=Machine(core.places))
        self._sweep: Sweep | None = None
        self._lock = threading.Lock()
        self._done = 0
        self._t0 = time.perf_counter()

    def run(self, sweep: Sweep) -> float:
        """Run the queued `sweep` to its end, or until Ctrl-C/SIGTERM cancels it; returns the wall
        time since this LocalSweep was made (planning and queueing included)."""
        self._sweep = sweep
        if not self.quiet and sweep.runs:
            print(f"{len(sweep.runs)} runs queued; {self.outlook()}", file=sys.stderr)
        self.scheduler.start()
        with Interrupt() as cancel:
            while not sweep.done.wait(0.1):
                if cancel.is_set():
                    self.service.cancel(sweep.id, wait=0)
        self.scheduler.shutdown(Stop(), grace=5)
        return time.perf_counter() - self._t0

    def outlook(self) -> str:
        """When the last queued run should start and about when all should be done, from each run's
        estimate (the request x delay floor: a lower bound) and the workers."""
        waiting = self.scheduler.waiting()
        if not waiting:
            return "nothing waits"
        last_id = max(waiting, key=lambda rid: waiting[rid]["queue_position"])
        last = self.scheduler.find(last_id)
        took = self.scheduler.estimate(last) if last is not None else 0.0
        start = waiting[last_id]["estimated_start_s"]
        if start is None:
            return "no worker here can run the last one"
        return (f"the last should start in about {start:.0f} s and all be done "
                f"in about {start + took:.0f} s (at least: estimates are floors)")

    def _finished(self, job: Job) -> None:
        with self._lock:
            self._done += 1
            if not self.quiet:
                total = len(self._sweep.runs) if self._sweep else "?"
                print(f"[{self._done}/{total}] {job.run.label}: {job.run.status} {job.run.duration_s or 0:.2f} s",
                      file=sys.stderr)
        self.service.run_finished(job.run)  # the last one ends the sweep: print before
