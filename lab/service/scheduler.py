"""The one scheduler: every measurement job (a run, a sweep's row, a calibration point, a probe, an
audit step) is queued here, and only here is it decided what may run beside what, where, and in
which order; one cancel stops any of them.

What it decides, per machine (this one, and remote workers when an executor offers them):
- at most `slots` jobs; a CPU-bound job (`needs.alone`) has its machine to itself, and while it
  waits for that machine to empty nothing ordered after it starts there;
- a job timed from a process's spawn (`needs.spawn_clocked`, a real binary) starts only when no
  job started on its machine in the last LAUNCH_QUIET_S, and nothing starts beside it for as long;
- a managed server (`needs.server_id`) serves one job at a time; a sweep (`group`) runs at most
  `group_limit` of its rows at once, or, without one, its rows run beside each other only while their
  estimated CPU together stays within `group_cores` (a sweep does not contend with itself);
- order: the service's own jobs, then the teacher's, then the fair lane where each student and
  the anonymous callers (as one) take turns (round-robin), and anonymous callers take turns among
  themselves; `priority` orders one owner's own jobs, then queue order.

The policy (who may queue how much, the order, where and beside what a job may start, when each
queued job may start) is lab.service.policy's pure functions; this module keeps the bookkeeping:
the queue, what runs where, the dispatcher, the one cancel and what executors report.

Jobs are plain data (lab.service.jobs.Job); an `Executor` carries them out on a machine and reports
events and the outcome back through the scheduler (`Report`). `LocalExecutor` runs them in threads
of this process; a remote executor (Celery workers) implements the same seam.

The owner's callbacks: `on_queued(job)` (under the lock: the job is queued), `on_event(job, ev)`
(in emit order, from the executor's thread), `on_finish(job)` (the job reached its final state,
run or not; a queued job stopped by cancel is finished under the lock, so nothing starts it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lab.domain.errors import ShuttingDown
from lab.nbd.backends import Machine
from lab.service.jobs import HANDLERS, Context, Job, LocalContext, settle
from lab.service.policy import LAUNCH_QUIET_S, LOCAL, Admission, Outlook, Worker, eligible, fits, order, simulate

__all__ = ["CANCELLED", "LAUNCH_QUIET_S", "LOCAL", "Admission", "Executor", "LocalExecutor", "Report", "Scheduler",
           "Stop", "Worker"]

log = logging.getLogger("lab.service.scheduler")



@dataclass(frozen=True)
class Stop:
    """How stopped jobs end: the final status and error of a queued one, and of a running one."""

    status: str = "cancelled"
    error: str = "cancelled"
    error_running: str | None = None  # when a running job's error differs (default: `error`)


CANCELLED = Stop()  # a user's cancel: the job reports itself cancelled


class Report(Protocol):
    """The scheduler's side of the seam: executors report through it, from any thread."""

    def event(self, job_id: str, event: dict[str, Any]) -> None: ...

    def finished(self, job_id: str, outcome: dict[str, Any]) -> None: ...

    def workers_changed(self) -> None: ...


class Executor(Protocol):
    """Carries out jobs on the machines it offers. launch() must not block for long nor refuse: the
    job ends through report.finished (status "lost" when its machine died or left)."""

    def workers(self) -> list[Worker]: ...

    def launch(self, job: Job, worker_id: str, report: Report) -> None: ...

    def cancel(self, job_id: str) -> None: ...

    def close(self) -> None: ...


ContextFactory = Callable[[Job, Callable[[dict[str, Any]], None]], Context]


class LocalExecutor:
    """Jobs in threads of this process, on one machine (LOCAL) with `slots` at once."""

    def __init__(self, slots: int, context: ContextFactory | None = None, capabilities: Iterable[str] | None = None,
                 name: str = "lab-worker", only: Iterable[str] = ()) -> None:
        # default: managed servers and what this machine has (lab.nbd.backends.Machine: its kinds and storages)
        caps = ("managed", *Machine().capabilities()) if capabilities is None else capabilities
        self.worker = Worker(LOCAL, slots, frozenset(caps), only=frozenset(only))
        self.name = name
        self._context = context or (lambda job, emit: LocalContext(emit, job.cancel))
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def workers(self) -> list[Worker]:
        return [self.worker]

    def launch(self, job: Job, worker_id: str, report: Report) -> None:
        t = threading.Thread(target=self._carry_out, args=(job, report), name=f"{self.name}-{job.id}", daemon=True)
        with self._lock:
            self._jobs[job.id] = job
            self._threads[job.id] = t
        t.start()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            job.cancel.set()

    def busy(self) -> list[str]:
        """Names of the threads still carrying a job out."""
        with self._lock:
            return [t.name for t in self._threads.values() if t.is_alive()]

    def close(self) -> None:
        return None

    def _carry_out(self, job: Job, report: Report) -> None:
        outcome: dict[str, Any]
        try:
            ctx = self._context(job, lambda ev: report.event(job.id, ev))
            result = HANDLERS[job.kind](job.payload, ctx)
            outcome = {"status": "cancelled" if job.cancel.is_set() else "succeeded", "result": result,
                       "error": None}
        except Exception as e:  # a run's handler does not raise; others' errors say what and where
            if job.kind == "run":
                log.exception("job %s (%s)", job.id, job.kind)
            outcome = {"status": "cancelled" if job.cancel.is_set() else "failed", "result": None,
                       "error": f"{type(e).__name__}: {e}" if job.kind == "run" else str(e),
                       "error_kind": type(e).__name__, "error_field": getattr(e, "field", None)}
        outcome["started_copying"] = job.started_copying
        try:
            report.finished(job.id, outcome)
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)
                self._threads.pop(job.id, None)


class Scheduler:
    def __init__(self, executors: Executor | Sequence[Executor], admission: Admission | None = None, *,
                 on_finish: Callable[[Job], None], on_event: Callable[[Job, dict[str, Any]], None] | None = None,
                 on_queued: Callable[[Job], None] | None = None, estimate: Callable[[Job], float] | None = None,
                 cores: Callable[[Job], float] | None = None, name: str = "lab-scheduler") -> None:
        self.executors: list[Executor] = list(executors) if isinstance(executors, Sequence) else [executors]
        self.admission = admission or Admission()
        self.name = name
        self._on_finish, self._on_event = on_finish, on_event or (lambda _j, _e: None)
        self._on_queued = on_queued or (lambda _j: None)
        self.outlook = Outlook(estimate, cores)
        self.lock = threading.Condition(threading.RLock())
        self._pending: dict[str, Job] = {}  # queue order = insertion order (seq)
        self._active: dict[str, Job] = {}
        self._on: dict[str, dict[str, Job]] = {}  # machine id -> its running jobs
        self._busy: set[str] = set()  # managed servers in use
        self._served: dict[str, int] = {}  # owner -> the turn it last started a job at (round-robin)
        self._served_client: dict[str, int] = {}  # anonymous client -> the same, inside the anonymous owner
        self._turn = 0
        self._seq = 0
        self._machines: list[tuple[Worker, Executor]] = []
        self._machines_stale = True
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        """Start dispatching; an executor with a `bind(report)` gets this scheduler first (so it can say
        its workers changed before its first launch)."""
        for ex in self.executors:
            bind = getattr(ex, "bind", None)
            if bind is not None:
                bind(self)
        with self.lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch_loop, name=self.name, daemon=True)
                self._thread.start()
        return self

    def shutdown(self, stop: Stop, grace: float, keep: Callable[[Job], bool] | None = None) -> list[str] | None:
        """Stop every job with `stop` and wait up to `grace` s for the running ones to end; returns
        the ids of jobs still running (None when shutdown had already begun). Queued jobs `keep`
        picks are left as they are (their owner has kept them for the next start: see requeue())."""
        with self.lock:
            if self._stopping:
                return None
            self._stopping = True
            if keep is not None:
                for job in [j for j in self._pending.values() if keep(j)]:
                    del self._pending[job.id]
            running = self.cancel(lambda _j: True, stop)
            self.lock.notify_all()
        deadline = time.monotonic() + grace
        for job in running:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        for ex in self.executors:
            try:
                ex.close()
            except Exception:
                log.exception("closing an executor")
        return [j.id for j in running if not j.done.is_set()]

    @property
    def stopping(self) -> bool:
        return self._stopping

    def check_open(self) -> None:
        if self._stopping:
            raise ShuttingDown("the service is shutting down")

    # -- submitting --------------------------------------------------------------------------------
    def submit(self, jobs: Sequence[Job], admit: Callable[[int], None] | None = None) -> list[Job]:
        """Queue `jobs` in order, all or none. Refused (raises) by the admission rules (QueueFull,
        StudentLimit, AnonymousLimit: each says which limit) or by `admit(free)`, called under the
        lock with the free places of the jobs' lane after the rules passed (it may announce what
        the jobs belong to before they are queued)."""
        with self.lock:
            self.check_open()
            free = self._admit(jobs)
            if admit is not None:
                admit(free)
            for job in jobs:
                self._seq += 1
                job.seq, job.status = self._seq, "queued"
                if job.run is not None:
                    job.run.status = "queued"
                self._on_queued(job)
                self._pending[job.id] = job
            self.lock.notify_all()
            return list(jobs)

    def requeue(self, jobs: Sequence[Job]) -> list[Job]:
        """Queue jobs that were queued before a restart, in their old order, without admission (they
        were admitted then)."""
        with self.lock:
            self.check_open()
            for job in jobs:
                self._seq += 1
                job.seq, job.status = self._seq, "queued"
                self._pending[job.id] = job
            self.lock.notify_all()
            return list(jobs)

    def _admit(self, jobs: Sequence[Job]) -> int:
        """The admission rules for `jobs` (lab.service.policy.Admission); the free places of their lane."""
        return self.admission.check(jobs, self._pending.values(),
                                    lambda owner: self.count(lambda j: j.who.owner == owner))

    # -- cancel ----------------------------------------------------------------------------------
    def cancel(self, match: Callable[[Job], bool], stop: Stop = CANCELLED, wait: float = 0.0) -> list[Job]:
        """Stop every queued or running job `match` picks: queued ones end at once with `stop`'s
        status and error; running ones are asked to stop (their executor's cancel) and end with
        `stop`'s status once they report; wait up to `wait` s in all for them. Returns the jobs."""
        with self.lock:
            queued = [j for j in self._pending.values() if match(j)]
            for job in queued:
                del self._pending[job.id]
                self._end_unstarted(job, stop)
            running = [j for j in self._active.values() if match(j)]
            for job in running:
                if stop is not CANCELLED:
                    job.stop = stop
                job.cancel.set()
            self.lock.notify_all()
        for job in running:
            ex = self._executor_of(job)
            if ex is not None:
                try:
                    ex.cancel(job.id)
                except Exception:
                    log.exception("cancelling job %s", job.id)
        deadline = time.monotonic() + wait
        for job in running:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        return queued + running

    # -- looking ---------------------------------------------------------------------------------
    def find(self, job_id: str) -> Job | None:
        with self.lock:
            return self._active.get(job_id) or self._pending.get(job_id)

    def jobs(self) -> list[Job]:
        """Queued (in the order they would start) and running jobs, a snapshot."""
        with self.lock:
            return [*self._order(), *self._active.values()]

    def count(self, match: Callable[[Job], bool]) -> int:
        """Queued and running jobs `match` picks."""
        with self.lock:
            return sum(1 for j in self._pending.values() if match(j)) + sum(1 for j in self._active.values()
                                                                             if match(j))

    def busy(self, resource: str) -> bool:
        """Whether a job is using managed server `resource` now (no lock: a set lookup is atomic)."""
        return resource in self._busy

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._active)

    def workers(self) -> list[Worker]:
        with self.lock:
            return [m for m, _ex in self._current_machines()]

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Each queued job's place in the order they would start (`queue_position`, 1: next) and
        when it may start (`estimated_start_s`, seconds from now, from the estimates of the jobs
        running and ahead of it and the machines' slots; None while no worker can take it). A snapshot;
        new arrivals may change it."""
        with self.lock:
            queued = self._order()
            active = [(j, j.started_at) for j in self._active.values()]
            machines = [m for m, _ex in self._current_machines()]
        now = time.monotonic()
        running = [(j, max(0.0, self.estimate(j) - (now - (t or now)))) for j, t in active]
        starts = simulate(queued, running, machines, self.estimate)
        return {j.id: {"queue_position": i + 1,
                       "estimated_start_s": round(starts[j.id], 1) if j.id in starts else None}
                for i, j in enumerate(queued)}

    def cores(self, job: Job) -> float:
        """How much CPU `job` should use while it runs, in cores (lab.service.policy.Outlook)."""
        return self.outlook.cores(job)

    def estimate(self, job: Job) -> float:
        """How long `job` should take, in seconds (lab.service.policy.Outlook)."""
        return self.outlook.estimate(job)

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job in the order they would start; None when it is not queued."""
        with self.lock:
            for i, job in enumerate(self._order()):
                if job.id == job_id:
                    return i + 1
        return None

    # -- Report: what executors call ----------------------------------------------------------------
    def event(self, job_id: str, event: dict[str, Any]) -> None:
        job = self._active.get(job_id)
        if job is None:
            return
        if event.get("type") == "state" and event.get("phase") == "copy":
            job.started_copying = True
        try:
            self._on_event(job, event)
        except Exception:
            log.exception("job %s: an event", job_id)

    def finished(self, job_id: str, outcome: dict[str, Any]) -> None:
        job = self._active.get(job_id)
        if job is None:
            return
        job.started_copying = job.started_copying or bool(outcome.get("started_copying"))
        if outcome.get("status") == "lost" and not job.started_copying and job.attempt == 0 and not job.cancel.is_set():
            self._release(job)
            with self.lock:
                job.attempt, job.worker, job.started_at, job.status = 1, None, None, "queued"
                job.seq = -job.seq  # the front of its owner's queue
                self._pending[job.id] = job
                self.lock.notify_all()
            log.warning("job %s: its worker was lost before it started copying; queued again", job_id)
            return
        try:
            settle(job, outcome)
            self._end(job)
        finally:
            self._release(job)

    def workers_changed(self) -> None:
        with self.lock:
            self._machines_stale = True
            self.lock.notify_all()

    # -- internals --------------------------------------------------------------------------------
    def _end_unstarted(self, job: Job, stop: Stop) -> None:
        job.status = stop.status
        job.outcome = {"status": stop.status, "result": None, "error": stop.error, "started_copying": False}
        if job.run is not None:
            job.run.status, job.run.error, job.run.finished_at = stop.status, stop.error, time.time()  # type: ignore
        self._end(job)

    def _end(self, job: Job) -> None:
        try:
            self._on_finish(job)
        except Exception:
            log.exception("job %s: finishing", job.id)
        finally:
            job.done.set()

    def _release(self, job: Job) -> None:
        with self.lock:
            self._active.pop(job.id, None)
            if job.worker is not None:
                self._on.get(job.worker, {}).pop(job.id, None)
            if job.needs.server_id is not None:
                self._busy.discard(job.needs.server_id)
            self.lock.notify_all()

    def _executor_of(self, job: Job) -> Executor | None:
        with self.lock:
            for m, ex in self._current_machines():
                if m.id == job.worker:
                    return ex
        return None

    def _current_machines(self) -> list[tuple[Worker, Executor]]:
        if self._machines_stale:
            seen: set[str] = set()
            out = []
            for ex in self.executors:
                try:
                    ms = ex.workers()
                except Exception:
                    log.exception("asking an executor for its machines")
                    continue
                for m in ms:
                    if m.id not in seen:
                        seen.add(m.id)
                        out.append((m, ex))
            self._machines, self._machines_stale = out, any(not isinstance(ex, LocalExecutor)
                                                             for ex in self.executors)
        return self._machines

    def _order(self) -> list[Job]:
        """Queued jobs in the order they would start if nothing else arrived (see the module doc)."""
        return order(self._pending.values(), self._served, self._served_client)

    def _dispatch_loop(self) -> None:
        while True:
            with self.lock:
                picks: list[tuple[Job, Executor]] = []
                while not picks:
                    if self._closed:
                        return
                    if not self._stopping:
                        picks = self._pick()
                    if not picks:
                        self.lock.wait(self._launch_window_left())
            for job, ex in picks:
                try:
                    ex.launch(job, job.worker or LOCAL, self)
                except Exception as e:
                    log.exception("launching job %s", job.id)
                    self.finished(job.id, {"status": "failed", "result": None, "error": f"{type(e).__name__}: {e}",
                                           "started_copying": False})

    def _pick(self) -> list[tuple[Job, Executor]]:
        """Take every job that may start now, each on a machine (under the lock)."""
        picks = []
        while True:
            found = self._pick_one(time.monotonic())
            if found is None:
                return picks
            job, machine, ex = found
            del self._pending[job.id]
            self._turn += 1
            self._served[job.who.owner] = self._turn
            if job.who.lane == "anonymous" and job.who.client is not None:
                self._served_client[job.who.client] = self._turn
            job.worker, job.started_at, job.status = machine.id, time.monotonic(), "running"
            if job.run is not None:
                job.run.status = "running"
            self._active[job.id] = job
            self._on.setdefault(machine.id, {})[job.id] = job
            if job.needs.server_id is not None:
                self._busy.add(job.needs.server_id)
            picks.append((job, ex))

    def _pick_one(self, now: float) -> tuple[Job, Worker, Executor] | None:
        machines = self._current_machines()
        running_in = Counter(j.group for j in self._active.values() if j.group is not None)
        reserved: set[str] = set()  # machines a CPU-bound job waits to have to itself
        for job in self._order():
            if self._waits_for_its_own(job, running_in):
                continue

            candidates = [(m, ex) for m, ex in machines if eligible(job, m) and m.id not in reserved]
            for m, ex in sorted(candidates, key=lambda p: len(self._on.get(p[0].id, {}))):
                if fits(job, m, list(self._on.get(m.id, {}).values()), now, self.cores):
                    return job, m, ex
            if job.alone and candidates:  # it waits for the least busy one to empty; nothing after it starts there
                reserved.add(min(candidates, key=lambda p: len(self._on.get(p[0].id, {})))[0].id)
        return None

    def _waits_for_its_own(self, job: Job, running_in: Counter[str]) -> bool:
        """Its managed server is busy, or its sweep runs as many rows as its parallelism allows."""
        if job.needs.server_id is not None and job.needs.server_id in self._busy:
            return True
        return job.group_limit is not None and running_in.get(job.group or "", 0) >= job.group_limit

    def _launch_window_left(self) -> float | None:
        """Seconds until the youngest running job's start-up window ends (None: none is open), so the
        dispatcher looks again when a job held back by LAUNCH_QUIET_S may start; remote machines'
        slots are looked at again every few seconds."""
        now = time.monotonic()
        left = [LAUNCH_QUIET_S - (now - j.started_at) for j in self._active.values()
                if j.started_at is not None and j.launching(now, LAUNCH_QUIET_S)]
        if left:
            return max(0.01, min(left))
        return 2.0 if self._machines_stale and self._pending else None
