"""The scheduler's policy, apart from its bookkeeping (lab.service.scheduler): who may queue how much
(`Admission`), in which order queued jobs start (`order`), where and beside what a job may start
(`eligible`, `fits`), and when each queued job may start (`simulate`). Pure functions of the jobs
and workers they are handed: the scheduler calls them under its lock.

What a worker offers is a `Worker`: this process's threads (LOCAL) or a `lab worker` on some
machine, with its slots and capabilities.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.domain.errors import AnonymousLimit, QueueFull, StudentLimit
from lab.service.jobs import LANE_RANK, Job

log = logging.getLogger("lab.service.policy")

# A real binary (qemu-img) is clocked from spawn to exit, so its own start-up is in its time; the
# era clients clock themselves once connected. A job clocked from spawn starts only when no other
# job started on its worker less than this long ago, and none starts beside it for as long: a
# burst of servers and client processes starting at once would otherwise land inside its measurement.
LAUNCH_QUIET_S = 1.0
LOCAL = "local"  # the service's own machine
SIBLING_SHARE = 0.7  # of a sweep's group_cores, what its rows on one worker may use beside each other
FAIR = 2  # the rank of the fair lane (students and anonymous callers) in lab.service.jobs.LANE_RANK


@dataclass(frozen=True)
class Worker:
    """Where jobs run: this process's threads (LOCAL) or a `lab worker` on some machine; `slots`: jobs at
    once; `capabilities`: what jobs may ask for (lab.service.jobs.Needs)."""

    id: str
    slots: int
    capabilities: frozenset[str] = frozenset()
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # When set, it takes only jobs that ask for one of these (the service's own threads beside remote
    # workers take only runs on its managed servers: "managed"), or are pinned to it.
    only: frozenset[str] = frozenset()


# -- admission ---------------------------------------------------------------------------------------


def _too_many(n: int, most: int, limit: str) -> str:
    """The words of a refusal that waiting cannot help: `n` runs where a limit allows `most`."""
    return f"this needs {n} runs and {limit.format(most=most)}: it can never fit; queue fewer (a sweep's `only`)"


QUEUE_WORDS = "the queue holds at most {most} runs (LAB_QUEUE_SIZE)"


@dataclass(frozen=True)
class Admission:
    """Who may queue how much (0 or None: no limit).

    - `queue_size`: jobs waiting in the fair lane (students and anonymous callers); a student who
      has nothing queued or running is let in even when it is full (everyone gets a turn; at most
      `2 * queue_size` wait in all). The teacher's jobs are never refused because students filled it:
      they have a queue of `queue_size` of their own; the system's (a calibration's points) are never
      refused.
    - `per_student`: jobs one student may have queued or running.
    - `anonymous`: jobs all nameless callers together may have queued or running."""

    queue_size: int = 64
    per_student: int | None = None
    anonymous: int | None = None

    def check(self, jobs: Sequence[Job], pending: Iterable[Job], holding: Callable[[str], int]) -> int:
        """Refuse `jobs` (one submit: one caller) with the limit they break, or return the free places of
        their lane. `pending`: the queued jobs; `holding(owner)`: an owner's jobs queued or running."""
        if not jobs or jobs[0].who.lane == "system":
            return self.queue_size
        who, n = jobs[0].who, len(jobs)
        if who.lane == "teacher":
            return self._teacher(n, sum(1 for j in pending if j.who.lane == "teacher"))
        mine = holding(who.owner)
        if who.lane == "student":
            self._per_student(jobs, mine)
        else:
            self._anonymous(n, mine)
        fair = sum(1 for j in pending if LANE_RANK.get(j.who.lane) == FAIR)
        newcomer = who.lane == "student" and mine == 0 and n == 1 and fair < 2 * self.queue_size
        free = self.queue_size - fair
        if n > free and not newcomer:
            self._full(n, free)
        return max(free, 1 if newcomer else 0)

    def _full(self, n: int, free: int) -> None:
        if n > self.queue_size:
            raise QueueFull(_too_many(n, self.queue_size, QUEUE_WORDS), can_wait=False)
        raise QueueFull(f"the run queue is full ({self.queue_size} runs waiting): retry in a moment" if n == 1 else
                        f"the queue is full: {max(free, 0)} of {self.queue_size} places are free and this needs {n};"
                        " retry when some have started")

    def _teacher(self, n: int, waiting: int) -> int:
        free = self.queue_size - waiting
        if n > free:
            raise QueueFull(_too_many(n, self.queue_size, QUEUE_WORDS) if n > self.queue_size else
                            f"the teacher's queue is full: {max(free, 0)} of {self.queue_size} places are free and "
                            f"this needs {n}; retry when some have started", can_wait=n <= self.queue_size)
        return free

    def _per_student(self, jobs: Sequence[Job], mine: int) -> None:
        most, n = self.per_student, len(jobs)
        if not most or mine + n <= most:
            return
        shown = (jobs[0].payload.get("run") or {}).get("student") or jobs[0].who.name  # the name as typed
        raise StudentLimit(
            _too_many(n, most, f"{shown} may have at most {{most}} runs queued or running "
                      "(the per-student limit keeps the queue fair)") if n > most else
            f"{shown} already has {mine} of at most {most} runs queued or running and this needs {n} "
            f"more (the per-student limit keeps the queue fair): wait until one finishes", can_wait=n <= most)

    def _anonymous(self, n: int, held: int) -> None:
        most = self.anonymous
        if not most or held + n <= most:
            return
        raise AnonymousLimit(
            _too_many(n, most, "runs without a student name share {most} places (give a student name)")
            if n > most else
            f"runs without a student name already hold {held} of the {most} places they share and this needs {n} "
            f"more (the anonymous budget keeps the queue for everyone): give a student name, or wait until one "
            f"finishes", can_wait=n <= most)


# -- order -------------------------------------------------------------------------------------------


def order(pending: Iterable[Job], served: dict[str, int], served_client: dict[str, int]) -> list[Job]:
    """Jobs in the order they would start: by lane; within the system's and the teacher's lane by
    priority then queue order; in the fair lane in turns across owners (the one that started a job
    longest ago goes next; anonymous callers are one owner and take turns among themselves by client),
    each owner's own jobs by priority then queue order. `served`: owner -> the turn it last started a
    job at; `served_client`: the same for anonymous callers' clients."""
    by_lane: dict[int, list[Job]] = {}
    for job in pending:
        by_lane.setdefault(LANE_RANK.get(job.who.lane, FAIR), []).append(job)
    out: list[Job] = []
    for rank in sorted(by_lane):
        jobs = by_lane[rank]
        if rank < FAIR:
            out += sorted(jobs, key=_own_order)
            continue
        owners = _grouped(jobs, lambda j: j.who.owner)
        anonymous = owners.pop("anonymous", None)
        queues = {o: sorted(js, key=_own_order) for o, js in owners.items()}
        if anonymous is not None:
            queues["anonymous"] = _turns(_grouped(anonymous, lambda j: j.who.client or ""), served_client)
        out += _turns(queues, served, presorted=True)
    return out


def _own_order(j: Job) -> tuple[int, int]:
    return (-j.priority, j.seq)


def _grouped(jobs: Iterable[Job], key: Callable[[Job], str]) -> dict[str, list[Job]]:
    out: dict[str, list[Job]] = {}
    for job in jobs:
        out.setdefault(key(job), []).append(job)
    return out


def _turns(queues: dict[str, list[Job]], served: dict[str, int], presorted: bool = False) -> list[Job]:
    """Round-robin across `queues` (key -> its jobs): the key that was served longest ago (never: first,
    then by its earliest job) takes the next turn, then goes to the back."""
    its = {k: iter(js if presorted else sorted(js, key=_own_order)) for k, js in queues.items()}
    heap = [(served.get(k, -1), min(j.seq for j in js), k) for k, js in queues.items() if js]
    heapq.heapify(heap)
    turn = max(served.values(), default=0)
    out: list[Job] = []
    while heap:
        _t, first, k = heapq.heappop(heap)
        job = next(its[k], None)
        if job is None:
            continue
        out.append(job)
        turn += 1
        heapq.heappush(heap, (turn, first, k))
    return out


# -- placement ---------------------------------------------------------------------------------------


def eligible(job: Job, worker: Worker) -> bool:
    """The worker offers what the job asks for (and takes such jobs at all)."""
    n = job.needs
    if n.worker is not None and n.worker != worker.id:
        return False
    if worker.only and not (worker.only & set(n.capabilities)) and n.worker != worker.id:
        return False
    return all(c in worker.capabilities for c in n.capabilities)


def fits(job: Job, worker: Worker, there: Sequence[Job], now: float, cores: Callable[[Job], float]) -> bool:
    """May `job` start on `worker` now, beside the jobs running `there`: a free slot; nothing there that
    holds the machine (a CPU-bound job, or a spawn-clocked one still starting); the machine empty for a
    CPU-bound job; no start-up window open for a spawn-clocked one; a sweep's row only beside siblings
    it would not contend with (light_enough)."""
    if len(there) >= worker.slots:
        return False
    if job.group_cores is not None and not light_enough(job, [j for j in there if j.group == job.group], cores):
        return False
    if any(j.alone or (j.needs.spawn_clocked and j.launching(now, LAUNCH_QUIET_S)) for j in there):
        return False
    if job.alone and there:
        return False
    return not (job.needs.spawn_clocked and any(j.launching(now, LAUNCH_QUIET_S) for j in there))


def light_enough(job: Job, siblings: Sequence[Job], cores: Callable[[Job], float]) -> bool:
    """A row of a sweep without a parallelism joins its siblings on a worker only if none of them would
    see the others use more than SIBLING_SHARE of the sweep's `group_cores` (the rest is left for the
    worker's other work): each row's contention is the CPU of the others."""
    if not siblings:
        return True
    used = [cores(j) for j in (*siblings, job)]
    return sum(used) - min(used) <= SIBLING_SHARE * (job.group_cores or 0.0)


# -- when ---------------------------------------------------------------------------------------------


class Outlook:
    """How long a job should take and how much CPU it should use, from its owner's estimates (lab.service.
    estimate), asked once per job and kept on it; an estimate that fails counts as nothing to wait for (time)
    and a whole core (CPU: it then runs alone among its siblings)."""

    def __init__(self, estimate: Callable[[Job], float] | None = None,
                 cores: Callable[[Job], float] | None = None) -> None:
        self._estimate = estimate or (lambda _j: 5.0)
        self._cores = cores or (lambda j: 1.0 if j.alone else 0.1)

    def estimate(self, job: Job) -> float:
        if job.estimate_s is None:
            try:
                job.estimate_s = max(0.0, float(self._estimate(job)))
            except Exception:
                log.exception("estimating job %s", job.id)
                job.estimate_s = 0.0
        return job.estimate_s

    def cores(self, job: Job) -> float:
        if job.cores is None:
            try:
                job.cores = max(0.0, float(self._cores(job)))
            except Exception:
                log.exception("estimating job %s's CPU", job.id)
                job.cores = 1.0
        return job.cores


def simulate(queued: list[Job], running: list[tuple[Job, float]], workers: list[Worker],
             estimate: Callable[[Job], float]) -> dict[str, float]:
    """When each job of `queued` (in start order) would start, in seconds from now, if each took its
    estimate: `running` are (job, seconds it has left); every worker's slots free up as their jobs end;
    a CPU-bound job waits for its worker to empty and holds it whole. A job no worker offers what it
    needs is left out: nobody can say when it starts (a cluster with no worker connected yet)."""
    free: dict[str, list[float]] = {w.id: [0.0] * max(1, w.slots) for w in workers}
    for job, left in running:
        slots = free.get(job.worker or LOCAL)
        if slots is None:
            continue
        if job.alone:
            slots[:] = [left] * len(slots)
        else:
            i = slots.index(min(slots))
            slots[i] = max(slots[i], left)
    out: dict[str, float] = {}
    for job in queued:
        starts = [(max(free[w.id]) if job.alone else min(free[w.id]), w.id) for w in workers if eligible(job, w)]
        if not starts:
            continue
        at, wid = min(starts)
        took = max(0.0, estimate(job))
        slots = free[wid]
        if job.alone:
            slots[:] = [at + took] * len(slots)
        else:
            slots[slots.index(min(slots))] = at + took
        out[job.id] = at
    return out
