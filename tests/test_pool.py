"""The manager's parts on their own: the worker pool's one cancel, a server's turn, and the
sweep service without a store (as `lab scenario` uses it), with real runs."""

from __future__ import annotations

import threading
import time

import pytest

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.measure.execute import execute
from lab.service.scheduler import Job, Stop, WorkerPool
from lab.service.sweeps import SweepService

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "8M", "delay_write": "60ms", "delay_zero": "1ms"}  # about 2 s


class Spans(dict[str, tuple[float, float]]):
    """Run id -> (start, end) of a job that only sleeps `hold` s: when each job held a worker."""

    hold = 0.3

    def work(self, job: Job) -> None:
        t0 = time.monotonic()
        time.sleep(self.hold)
        job.run.status = "succeeded"
        self[job.run.id] = (t0, time.monotonic())

    def overlap(self, a: Run, b: Run) -> bool:
        (a0, a1), (b0, b1) = self[a.id], self[b.id]
        return a0 < b1 and b0 < a1

    def run(self, runs: list[Run], workers: int = 4) -> None:
        """All `runs` through a pool of `workers` whose jobs only sleep, until each has ended."""
        pool = WorkerPool(workers, queue_size=16, work=self.work, finish=lambda _job: None).start()
        try:
            pool.submit(runs)
            deadline = time.monotonic() + 30
            while len(self) < len(runs) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            pool.shutdown(Stop("interrupted", "shutdown"), grace=10)
        assert len(self) == len(runs)


@pytest.fixture
def spans() -> Spans:
    return Spans()


def _pool(workers: int, finished: list[Job], started: threading.Event | None = None) -> WorkerPool:
    def work(job: Job) -> None:
        if started is not None:
            started.set()
        execute(job.run, cancel=job.cancel)

    return WorkerPool(workers, queue_size=8, work=work, finish=finished.append)


def test_one_cancel_for_queued_and_running_jobs(no_leftovers):
    finished: list[Job] = []
    started = threading.Event()
    pool = _pool(1, finished, started).start()
    try:
        runs = [Run(client="qemu-img", server=build_spec(SLOW)) for _ in range(3)]
        jobs = pool.submit(runs)
        assert started.wait(30)
        time.sleep(0.3)  # the first is copying, the two others wait in the queue
        gone = Stop("cancelled", "server x was deleted", "server x was deleted during the run")
        stopped = pool.cancel(lambda j: j.run.id in {runs[0].id, runs[1].id}, gone, wait=10)
        assert {j.run.id for j in stopped} == {runs[0].id, runs[1].id}
        assert jobs[0].done.is_set() and jobs[1].done.is_set()
        assert (runs[1].status, runs[1].error) == ("cancelled", "server x was deleted")  # never started
        assert (runs[0].status, runs[0].error) == ("cancelled", "server x was deleted during the run")
        assert jobs[2].done.wait(30) and runs[2].status == "succeeded", "an unmatched job is untouched"
        assert pool.cancel(lambda j: j.run.id == runs[2].id) == [], "nothing left to cancel"
    finally:
        assert pool.shutdown(Stop("interrupted", "shutdown"), grace=10) == []
    assert [j.run.id for j in finished][:1] == [runs[1].id]


def test_jobs_on_one_resource_take_turns(no_leftovers, spans: Spans):
    spec = build_spec(FAST)
    runs = [Run(client="qemu-4.2", server=spec, server_id="s1"),
            Run(client="qemu-4.2", server=spec, server_id="s1"), Run(client="qemu-4.2", server=spec)]
    spans.run(runs, workers=3)
    assert not spans.overlap(runs[0], runs[1]), "two runs on one server overlapped"
    (_, a1), (_, b1), (c0, _) = (spans[r.id] for r in runs)
    assert c0 < max(a1, b1) - 0.2, "a run on no managed server did not wait for them"


def test_sweep_service_without_a_store_runs_a_scenario(no_leftovers):
    """`lab scenario`'s path: plan, queue all rows, count, end; the parallel client first."""
    finished: list[Job] = []
    events: list[tuple] = []

    def finish(job: Job) -> None:
        finished.append(job)
        sweeps.run_finished(job.run)

    pool = WorkerPool(2, queue_size=8, work=lambda j: execute(j.run, cancel=j.cancel), finish=finish)
    sweeps = SweepService(pool, publish=lambda t, _r, s, **kw: events.append((t, s, kw.get("status"))))
    only = ["ref-none", "ref-plugin-default"]
    sweep = sweeps.start("reference", only=only, overrides=FAST, order=lambda r: r.label != "ref-plugin-default")
    pool.start()
    try:
        assert sweep.done.wait(60)
    finally:
        pool.shutdown(Stop(), grace=5)
    assert [r.label for r in sweep.runs] == only, "the sweep keeps scenario order"
    assert sweep.status == "succeeded" and sweep.counts() == {"succeeded": 2}
    assert all(r.reference is None for r in sweep.runs), "overrides drop the talk's figures"
    assert sweeps.live(sweep.id) is None and sweeps.cancel(sweep.id) is False
    assert events[0][:2] == ("sweep", sweep.id) and events[-1] == ("sweep_done", sweep.id, "succeeded")


def test_cpu_bound_runs_get_the_machine_alone_and_sleep_bound_ones_share_it(spans: Spans):
    """nbdcopy, queue depth > 1 or no delays: alone; in-order clients on delayed servers: together.
    A CPU-bound run queued behind sleep-bound ones waits for them, and what is queued after it waits too."""
    sleepy = build_spec(FAST)
    nodelay = build_spec({**FAST, "delay_write": "0ms", "delay_zero": "0ms"})
    runs = [Run(client="qemu-3.1", server=sleepy), Run(client="qemu-2.8", server=sleepy),
            Run(client="nbdcopy", server=sleepy), Run(client="qemu-4.0", server=sleepy),
            Run(client="qemu-4.2", server=sleepy, queue_depth=16), Run(client="qemu-img", server=nodelay),
            Run(client="qemu-2.7", server=sleepy)]
    jobs = [Job(r) for r in runs]
    assert [j.exclusive for j in jobs] == [False, False, True, False, True, True, False]
    spans.run(runs)
    assert spans.overlap(runs[0], runs[1]), "two sleep-bound runs share the machine"
    for cpu in (runs[2], runs[4], runs[5]):
        assert not any(spans.overlap(cpu, other) for other in runs if other is not cpu), cpu.client
    assert spans[runs[3].id][0] >= spans[runs[2].id][1], "queued after a CPU-bound run: starts after it"


def test_a_run_clocked_from_spawn_starts_outside_the_others_start_up(spans: Spans):
    """qemu-img's time includes its own start, so it starts only when no other run started within
    LAUNCH_QUIET_S, and nothing starts beside it for as long; era clients (clocked once connected)
    start together."""
    from lab.service.scheduler import LAUNCH_QUIET_S

    spans.hold = 2 * LAUNCH_QUIET_S
    sleepy = build_spec(FAST)
    runs = [Run(client="qemu-2.8", server=sleepy), Run(client="qemu-img", server=sleepy),
            Run(client="qemu-2.7", server=sleepy), Run(client="qemu-4.0", server=sleepy)]
    spans.run(runs)
    start = {r.client: spans[r.id][0] for r in runs}
    img = start.pop("qemu-img")
    assert max(start.values()) - min(start.values()) < 0.5 * LAUNCH_QUIET_S, "era clients start together"
    assert min(abs(img - t) for t in start.values()) >= LAUNCH_QUIET_S - 0.05, start | {"qemu-img": img}
    assert all(t < img for t in start.values()), "queued after qemu-img, they went first rather than wait"
