"""The worker pool: a bounded queue of runs, a fixed set of worker threads, one way to stop jobs.

It knows nothing of events, sweeps or servers beyond a run's `server_id`: a run on a managed
server waits while another run uses that server (workers take runs in order, skipping those).
What a job does, and what happens when it ends, are the owner's callbacks:

- `work(job)` carries the run out (in a worker thread; it should not raise);
- `finish(job)` records a run that reached a final status, run or not (a cancelled queued
  run is finished under the pool's lock, so nothing can start it meanwhile).

`cancel(match, stop)` is the one way to stop jobs, whoever asks (a user, a sweep, a deleted
server, shutdown): queued ones end at once with `stop`'s status and error, running ones get
their cancel event set and end with `stop`'s status when execute() reports them cancelled.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lab.domain.clients import CLIENTS, ClientInfo
from lab.domain.errors import QueueFull, ShuttingDown
from lab.domain.run import FINAL, Run
from lab.measure import contention

log = logging.getLogger("lab.service.scheduler")

# A real binary (qemu-img) is clocked from spawn to exit, so its own start-up is in its time; the
# era clients clock themselves once connected. A run clocked from spawn starts only when no other
# run started less than this long ago, and none starts beside it for as long: a burst of servers
# and client processes starting at once would otherwise land inside its measurement.
LAUNCH_QUIET_S = 1.0


@dataclass(frozen=True)
class Stop:
    """How stopped jobs end: the final status and error of a queued one, and of a running one."""

    status: str = "cancelled"
    error: str = "cancelled"
    error_running: str | None = None  # when a running job's error differs (default: `error`)


CANCELLED = Stop()  # a user's cancel: execute() reports the run cancelled itself


@dataclass
class Job:
    run: Run
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    stop: Stop | None = None  # why it was stopped, when not by a user's plain cancel
    priority: int = 0  # higher starts first; equal priorities in queue order
    group: str | None = None  # a sweep whose runs share `group_limit` (its parallelism)
    group_limit: int | None = None
    started_at: float | None = None  # time.monotonic() when a worker took it

    @property
    def resource(self) -> str | None:
        """What the job needs to itself while it runs (its managed server)."""
        return self.run.server_id

    @functools.cached_property
    def client(self) -> ClientInfo | None:
        """The run's client, looked up once (None for an unknown id: execute() fails such a run)."""
        return CLIENTS.get(self.run.client)

    @functools.cached_property
    def exclusive(self) -> bool:
        """A CPU-bound run (parallel client, queue depth > 1, no delays) gets the machine alone."""
        parallel = self.client is not None and self.client.parallel
        return contention.cpu_bound(parallel, self.run.queue_depth, self.run.server)

    @property
    def clocked_from_spawn(self) -> bool:
        """Its client's time includes the client's own start (a real binary): see LAUNCH_QUIET_S."""
        return self.client is not None and self.client.real_binary

    def launching(self, now: float) -> bool:
        return self.started_at is not None and now - self.started_at < LAUNCH_QUIET_S


def _holds_machine(job: Job, now: float) -> bool:
    """A CPU-bound run has the machine alone; a real binary starts undisturbed (LAUNCH_QUIET_S)."""
    return job.exclusive or (job.launching(now) and job.clocked_from_spawn)


def _held_back(job: Job, barrier: int | None, launching: bool) -> bool:
    """Queued behind a CPU-bound job (starting it would keep that one waiting), or a real
    binary while others are starting (it waits for their start-up to pass)."""
    return (barrier is not None and job.priority <= barrier) or (launching and job.clocked_from_spawn)


def _launch_window_left(active: Iterable[Job]) -> float | None:
    """Seconds until the youngest running job's start-up window ends (None: none is open),
    so a worker held back by LAUNCH_QUIET_S looks again when it closes."""
    now = time.monotonic()
    left = [LAUNCH_QUIET_S - (now - j.started_at) for j in active if j.launching(now) and j.started_at is not None]
    return max(0.01, min(left)) if left else None


Admit = Callable[[int], None]  # called under the lock with the free slots; raises to refuse


class WorkerPool:
    def __init__(self, workers: int, queue_size: int, work: Callable[[Job], None],
                 finish: Callable[[Job], None], queued: Callable[[Job], None] | None = None,
                 name: str = "lab-worker") -> None:
        self.workers, self.queue_size, self.name = workers, queue_size, name
        self._work, self._finish, self._queued = work, finish, queued or (lambda _j: None)
        self.lock = threading.Condition(threading.RLock())
        self._pending: deque[Job] = deque()
        self._active: dict[str, Job] = {}
        self._busy: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def shutdown(self, stop: Stop, grace: float) -> list[str] | None:
        """Stop every job with `stop`, wait `grace` s for the workers; returns the names of
        workers still busy (None when shutdown had already begun)."""
        with self.lock:
            if self._stopping:
                return None
            self._stopping = True
            self.cancel(lambda _j: True, stop)
            self.lock.notify_all()
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    @property
    def stopping(self) -> bool:
        return self._stopping

    def check_open(self) -> None:
        if self._stopping:
            raise ShuttingDown("the service is shutting down")

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, runs: Sequence[Run], admit: Admit | None = None, priority: int = 0,
               group: str | None = None, group_limit: int | None = None) -> list[Job]:
        """Queue `runs` in order, all or none. `admit(free)` may refuse (raise) or announce
        what the runs belong to before they are queued; by default a full queue refuses.
        `priority`: higher starts before lower; `group_limit`: at most that many of the
        runs of `group` run at once (a sweep's parallelism)."""
        with self.lock:
            self.check_open()
            free = self.queue_size - len(self._pending)
            if admit is not None:
                admit(free)
            elif len(runs) > free:
                raise QueueFull(f"the run queue is full ({self.queue_size} runs waiting)")
            jobs = [Job(run, priority=priority, group=group, group_limit=group_limit) for run in runs]
            for job in jobs:
                job.run.status = "queued"
                self._queued(job)
                self._pending.append(job)
            self.lock.notify_all()
            return jobs

    def cancel(self, match: Callable[[Job], bool], stop: Stop = CANCELLED, wait: float = 0.0) -> list[Job]:
        """Stop every queued or running job `match` picks (see the module doc); wait up to
        `wait` s in all for the running ones to end. Returns the jobs stopped."""
        with self.lock:
            queued = [j for j in self._pending if match(j)]
            for job in queued:
                self._pending.remove(job)
                self._end_unstarted(job, stop)
            running = [j for j in self._active.values() if match(j)]
            for job in running:
                if stop is not CANCELLED:
                    job.stop = stop
                job.cancel.set()
        deadline = time.monotonic() + wait
        for job in running:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        return queued + running

    def find(self, run_id: str) -> Job | None:
        with self.lock:
            return self._active.get(run_id) or next((j for j in self._pending if j.run.id == run_id), None)

    def position(self, run_id: str) -> int | None:
        """1-based place of a queued run in the queue (1: next to start), None when not queued:
        the runs before it by priority, then by queue order."""
        with self.lock:
            order = sorted(self._pending, key=lambda j: -j.priority)  # stable: queue order within a priority
            for i, job in enumerate(order):
                if job.run.id == run_id:
                    return i + 1
        return None

    def jobs(self) -> list[Job]:
        """Queued and running jobs, a snapshot."""
        with self.lock:
            return [*self._pending, *self._active.values()]

    def count(self, match: Callable[[Job], bool]) -> int:
        """Queued and running jobs `match` picks."""
        with self.lock:
            return sum(1 for j in self._pending if match(j)) + sum(1 for j in self._active.values() if match(j))

    def busy(self, resource: str) -> bool:
        """Whether a run is using `resource` now (no lock: a set lookup is atomic)."""
        return resource in self._busy

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._active)

    # -- internals ---------------------------------------------------------------------------
    def _end_unstarted(self, job: Job, stop: Stop) -> None:
        run = job.run
        run.status, run.error, run.finished_at = stop.status, stop.error, time.time()
        self._end(job)

    def _end(self, job: Job) -> None:
        try:
            self._finish(job)
        finally:
            job.done.set()

    def _take_next(self) -> Job | None:
        """The first runnable job of the highest priority: its managed server free, its sweep
        under its parallelism, and the machine to itself if it is CPU-bound (sleep-bound runs share
        it; a CPU-bound one waits for the machine to empty and nothing queued after it starts meanwhile),
        and a run clocked from spawn starting only outside the others' start-up (LAUNCH_QUIET_S)."""
        now = time.monotonic()
        active = self._active.values()
        if any(_holds_machine(j, now) for j in active):
            return None
        launching = any(j.launching(now) for j in active)
        running_in = Counter(j.group for j in active if j.group is not None)
        best: Job | None = None
        barrier: int | None = None  # priority of a CPU-bound job waiting for the machine to empty
        for job in self._pending:
            if not self._may_start(job, running_in):
                continue
            if job.exclusive and self._active:
                barrier = job.priority if barrier is None else max(barrier, job.priority)
            elif not _held_back(job, barrier, launching) and (best is None or job.priority > best.priority):
                best = job
        if best is not None:
            self._pending.remove(best)
        return best

    def _may_start(self, job: Job, running_in: Counter[str]) -> bool:
        """Its managed server free and its sweep under its parallelism."""
        if job.resource is not None and job.resource in self._busy:
            return False
        return job.group_limit is None or running_in.get(job.group or "", 0) < job.group_limit

    def _worker(self) -> None:
        while True:
            with self.lock:
                job = None
                while job is None:
                    if self._stopping:
                        return
                    job = self._take_next()
                    if job is None:
                        self.lock.wait(_launch_window_left(self._active.values()))
                job.started_at = time.monotonic()
                self._active[job.run.id] = job
                if job.resource is not None:
                    self._busy.add(job.resource)
            try:
                self._carry_out(job)
            finally:
                with self.lock:
                    self._active.pop(job.run.id, None)
                    if job.resource is not None:
                        self._busy.discard(job.resource)
                    self.lock.notify_all()

    def _carry_out(self, job: Job) -> None:
        run = job.run
        try:
            self._work(job)
        except Exception as e:  # work() should not raise; a worker must survive if it does
            log.exception("run %s", run.id)
            run.status, run.error, run.finished_at = "failed", f"{type(e).__name__}: {e}", time.time()
        stop = job.stop
        if run.status == "cancelled" and stop is not None:
            run.status, run.error = stop.status, stop.error_running or stop.error
        elif run.status not in FINAL:
            run.status, run.error = "failed", run.error or f"the run ended in state {run.status}"
        self._end(job)
