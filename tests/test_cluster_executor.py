"""The scheduler with `lab worker`s for machines (lab.service.remote.CeleryExecutor), on a real broker:
a redis-server of the test's own and two workers, each a simulated machine (own dirs, own network
namespace where this process may make one). No timing asserts: what ran where, in which order, and
what is left afterwards."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service.jobs import Job, run_job
from lab.service.remote import CeleryExecutor
from lab.service.scheduler import Admission, Scheduler, Stop
from testkit import wait_for
from testkit.cluster import Cluster

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "64M", "delay_write": "20ms", "delay_zero": "5ms"}  # ~6 s of sleeps: long enough to act on

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Recorder:
    """The scheduler's owner in these tests: what finished, and every event per job in arrival order."""

    def __init__(self) -> None:
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.done: dict[str, Job] = {}
        self.lock = threading.Lock()

    def on_event(self, job: Job, ev: dict[str, Any]) -> None:
        with self.lock:
            self.events[job.id].append(ev)

    def on_finish(self, job: Job) -> None:
        with self.lock:
            self.done[job.id] = job


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, n=2, slots=2) as c:
        yield c


@pytest.fixture
def scheduled(cluster: Cluster) -> Iterator[tuple[Scheduler, CeleryExecutor, Recorder]]:
    ex = CeleryExecutor(cluster.url).start()
    rec = Recorder()
    sched = Scheduler([ex], Admission(queue_size=64), on_finish=rec.on_finish, on_event=rec.on_event).start()
    ex.bind(sched)
    wait_for(lambda: len(sched.workers()) == 2, 30, what="both workers as machines")
    try:
        yield sched, ex, rec
    finally:
        sched.shutdown(Stop("interrupted", "test over"), 20)


def _run(fields: dict[str, str], client: str = "qemu-2.8") -> Job:
    return run_job(Run(client=client, server=build_spec(fields)), timeout_s=120)


def test_workers_say_who_they_are(cluster: Cluster) -> None:
    for w in cluster.workers:
        beat = w.heartbeat(cluster.broker)
        assert beat is not None and beat["state"] == "ready" and beat["slots"] == 2
        assert len(beat["fingerprint"]) == 16 and beat["machine"]["nbdkit"]
        assert "kind:nbdkit" in beat["capabilities"]
        assert beat["calibration"] is None  # LAB_AUTO_CALIBRATE=0: no expectation from these workers


def test_runs_spread_over_both_workers_in_order_and_verified(scheduled: Any, cluster: Cluster) -> None:
    sched, _ex, rec = scheduled
    jobs = sched.submit([_run(FAST) for _ in range(8)])
    wait_for(lambda: len(rec.done) == len(jobs), 180, 0.1, what="8 runs done")
    names = {w.name for w in cluster.workers}
    ran_on = set()
    for job in jobs:
        run = job.run
        assert run is not None and run.status == "succeeded" and run.verified, (run.status, run.error)
        # zeromode none: the holes are written too, all 8 MiB in 256k requests (what a local run counts)
        assert run.backend is not None and (run.backend.write_ops, run.backend.write_bytes) == (32, 8 << 20)
        assert run.worker is not None and run.worker["name"] in names
        ran_on.add(run.worker["name"])
        assert run.trace, "the trace came back in chunks"
        kinds = [(e["type"], e.get("phase")) for e in rec.events[job.id] if e["type"] == "state"]
        assert kinds == [("state", "setup"), ("state", "copy"), ("state", "verify")]
        progress = [e for e in rec.events[job.id] if e["type"] == "progress"]
        assert progress and all(a["elapsed_s"] <= b["elapsed_s"] for a, b in itertools.pairwise(progress))
    assert ran_on == names


def test_cancel_reaches_a_remote_run_and_frees_its_processes(scheduled: Any, cluster: Cluster) -> None:
    sched, _ex, rec = scheduled
    (job,) = sched.submit([_run(SLOW)])
    wait_for(lambda: any(e.get("phase") == "copy" for e in rec.events[job.id]), 60, 0.02, what="copying")
    worker = next(w for w in cluster.workers if w.watch())
    assert any(p.name == "nbdkit" for p in worker.seen)
    sched.cancel(lambda j: j.id == job.id)
    wait_for(lambda: job.id in rec.done, 30, 0.02, what="the cancelled run reported")
    assert job.run is not None and job.run.status == "cancelled"
    wait_for(lambda: not worker.left(), 10, 0.05, what=f"{worker.name}'s helpers gone")


def test_kill_9_of_a_worker_mid_run_leaves_it_interrupted_and_nothing_running(scheduled: Any,
                                                                              cluster: Cluster) -> None:
    sched, _ex, rec = scheduled
    (job,) = sched.submit([_run(SLOW)])
    wait_for(lambda: any(e.get("phase") == "copy" for e in rec.events[job.id]), 60, 0.02, what="copying")
    worker = next(w for w in cluster.workers if w.watch())
    worker.kill9()
    wait_for(lambda: job.id in rec.done, 30, 0.1, what="the run of the killed worker ended")
    assert job.run is not None and job.run.status == "interrupted", (job.run.status, job.run.error)
    assert worker.name in (job.run.error or "")
    wait_for(lambda: not worker.left(), 10, 0.05, what="nothing of the killed worker left")
    assert sorted(m.id for m in sched.workers()) == sorted(w.name for w in cluster.workers if w is not worker)
    # what it left on its disk (its server's private dir) goes when a worker starts there again
    stale = [p for p in worker.runtime_dir.iterdir() if p.is_dir()]
    assert stale
    again = cluster.add_worker(cluster.workers.index(worker), name=worker.name)
    again.wait_ready(cluster.broker)
    assert not [p for p in stale if p.exists()]


def test_a_job_lost_before_it_started_copying_runs_again_elsewhere(tmp_path: Path) -> None:
    """A worker that stops answering (frozen: SIGSTOP) after a job was sent to it: the job is taken back
    when its heartbeat expires and runs on the other worker, once (attempt 1)."""
    import signal

    with Cluster(tmp_path, n=2, slots=1, started=1) as c:
        ex = CeleryExecutor(c.url).start()
        rec = Recorder()
        sched = Scheduler([ex], Admission(), on_finish=rec.on_finish, on_event=rec.on_event).start()
        try:
            wait_for(lambda: len(sched.workers()) == 1, 30, what="one worker")
            frozen = c.workers[0]
            frozen.proc.send_signal(signal.SIGSTOP)  # its last heartbeat stays valid for a few seconds
            (job,) = sched.submit([_run(FAST)])
            wait_for(lambda: job.worker == frozen.name, 10, 0.02, what="the job placed on the frozen worker")
            other = c.add_worker(1)
            other.wait_ready(c.broker)
            wait_for(lambda: job.id in rec.done, 60, 0.1, what="the job done after all")
            assert job.run is not None and job.run.status == "succeeded", (job.run.status, job.run.error)
            assert job.attempt == 1 and job.run.worker is not None and job.run.worker["name"] == other.name
        finally:
            c.workers[0].proc.send_signal(signal.SIGKILL)
            sched.shutdown(Stop("interrupted", "over"), 20)


def test_a_worker_refuses_pickled_messages(cluster: Cluster) -> None:
    """Celery on a worker accepts JSON only: a pickled job is never carried out, a JSON one is."""
    from celery import Celery

    from lab.service import broker, wire

    worker = cluster.workers[0]
    r = cluster.broker.client()
    r.set(broker.service_key("svc-t"), "1", ex=60)
    pickled, plain = _run(FAST), _run(FAST)
    sender = Celery("evil", broker=cluster.url, set_as_current=False)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    for job, app in ((pickled, sender), (plain, broker.celery_app(cluster.url))):
        msg = wire.JobMessage(job=job.to_dict(), service="svc-t", reply_to=broker.events_key("svc-t")).model_dump()
        app.send_task(broker.TASK, args=[msg], queue=broker.queue_name(worker.name))

    def ended() -> set[str]:
        entries = r.xrange(broker.events_key("svc-t"))
        return {f["job"] for _id, f in entries if f["type"] == "end"}

    wait_for(lambda: plain.id in ended(), 60, 0.1, what="the JSON job done")
    wait_for(lambda: "untrusted content" in worker.log_text(), 10, 0.1, what="the pickled job refused")
    assert pickled.id not in {f["job"] for _id, f in r.xrange(broker.events_key("svc-t"))}


def _overlap(a: Run, b: Run) -> bool:
    assert a.started_at and a.finished_at and b.started_at and b.finished_at
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def test_a_cpu_bound_run_has_its_worker_alone(scheduled: Any, cluster: Cluster) -> None:
    """nbdcopy without delays is CPU-bound (needs.alone): on whichever worker it runs, nothing else runs
    beside it there; sleep-bound runs share the workers meanwhile."""
    sched, _ex, rec = scheduled
    cpu = {"size": "32M", "delay_write": "0ms", "delay_zero": "0ms"}
    jobs = sched.submit([_run(FAST), _run(cpu, "nbdcopy"), _run(FAST), _run(FAST), _run(cpu, "nbdcopy"),
                         _run(FAST), _run(FAST)])
    assert [j.needs.alone for j in jobs] == [False, True, False, False, True, False, False]
    wait_for(lambda: len(rec.done) == len(jobs), 180, 0.1, what="all done")
    runs = [j.run for j in jobs if j.run is not None]
    assert all(r.status == "succeeded" for r in runs), [(r.status, r.error) for r in runs]
    for alone in (r for j, r in zip(jobs, runs, strict=True) if j.needs.alone):
        assert alone.worker is not None
        beside = [r for r in runs if r is not alone and r.worker and r.worker["name"] == alone.worker["name"]
                  and _overlap(r, alone)]
        assert not beside, f"{alone.id} ran beside {[r.id for r in beside]} on {alone.worker['name']}"


def test_students_take_turns_across_workers_and_the_teacher_goes_first(tmp_path: Path) -> None:
    """One queue for every machine: with a slot on each of two workers, three students' runs start
    round-robin (not first come, first served), and a teacher's run queued last starts first."""
    from lab.service.jobs import TEACHER, Who

    rec = Recorder()
    with Cluster(tmp_path, n=2, slots=1) as c:
        ex = CeleryExecutor(c.url).start()
        sched = Scheduler([ex], Admission(queue_size=64), on_finish=rec.on_finish, on_event=rec.on_event)
        ex.bind(sched)
        try:
            jobs = [run_job(Run(client="qemu-2.8", server=build_spec(FAST), student=student), Who("student", student),
                            timeout_s=120) for student in ("ana", "ben", "cleo") for _ in range(3)]
            teacher = run_job(Run(client="qemu-2.8", server=build_spec(FAST)), TEACHER, timeout_s=120)
            for i in (0, 3, 6):  # ana queues all hers first, then ben, then cleo; the teacher last
                sched.submit(jobs[i:i + 3])
            sched.submit([teacher])
            wait_for(lambda: len(sched.workers()) == 2, 30, what="both workers")
            sched.start()
            wait_for(lambda: len(rec.done) == 10, 180, 0.1, what="ten runs done")
        finally:
            sched.shutdown(Stop("interrupted", "over"), 20)
    # the order the scheduler handed them to the workers (its own clock of each launch)
    order = [j.who.name or j.who.lane for j in sorted([*jobs, teacher], key=lambda j: j.started_at or 0.0)]
    assert order[0] == "teacher", order  # queued last, in the teacher's lane: first
    students = order[1:]
    assert sorted(students[:3]) == ["ana", "ben", "cleo"], order  # one each before anyone's second
    assert sorted(students[3:6]) == ["ana", "ben", "cleo"], order
    assert {r.worker["name"] for r in (j.run for j in [*jobs, teacher]) if r and r.worker} == \
        {w.name for w in c.workers}


def _path_without(root: Path, missing: set[str]) -> str:
    """A PATH on which every program of this machine is found but `missing`: a machine without them."""
    import os
    import sys

    farm = root / "bin"
    farm.mkdir(parents=True)
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not Path(d).is_dir():
            continue
        for entry in os.scandir(d):
            if entry.name not in missing and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry.path)
    return f"{farm}:{Path(sys.executable).parent}"


def test_a_run_goes_only_where_its_server_kind_is(tmp_path: Path) -> None:
    """Routing by capability: a worker without qemu-nbd does not offer kind:qemu-nbd, so qemu-nbd runs go
    to the worker that has it; nbdkit runs go to both."""
    with Cluster(tmp_path, n=2, slots=2, started=1) as c:
        lacking = c.add_worker(1, env={"PATH": _path_without(tmp_path / "w1-path", {"qemu-nbd"})})
        lacking.wait_ready(c.broker)
        full = c.workers[0]
        assert "kind:qemu-nbd" in full.heartbeat(c.broker)["capabilities"]
        assert "kind:qemu-nbd" not in lacking.heartbeat(c.broker)["capabilities"]
        ex = CeleryExecutor(c.url).start()
        rec = Recorder()
        sched = Scheduler([ex], Admission(), on_finish=rec.on_finish, on_event=rec.on_event).start()
        ex.bind(sched)
        try:
            wait_for(lambda: len(sched.workers()) == 2, 30, what="two workers")
            jobs = sched.submit([_run({**FAST, "kind": "qemu-nbd"}) for _ in range(4)] +
                                [_run(FAST) for _ in range(4)])
            wait_for(lambda: len(rec.done) == len(jobs), 180, 0.1, what="all done")
        finally:
            sched.shutdown(Stop("interrupted", "over"), 20)
    runs = [j.run for j in jobs if j.run is not None]
    assert all(r.status == "succeeded" and r.worker for r in runs), [(r.status, r.error) for r in runs]
    assert {r.worker["name"] for r in runs[:4]} == {full.name}  # type: ignore[index]
    assert {r.server.kind for r in runs[:4]} == {"qemu-nbd"}


def test_a_worker_that_leaves_is_drained(scheduled: Any, cluster: Cluster) -> None:
    """SIGTERM mid-run: the worker says it is draining (no longer a machine: new runs go to the other),
    lets its run finish (within its --drain-s), and exits 0 with nothing left."""
    import signal

    sched, _ex, rec = scheduled
    (slow,) = sched.submit([_run({**SLOW, "zeromode": "plugin"})])  # ~3 s of sleeps: within the 5 s of drain
    wait_for(lambda: any(e.get("phase") == "copy" for e in rec.events[slow.id]), 60, 0.02, what="copying")
    leaving = next(w for w in cluster.workers if w.watch())
    leaving.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: leaving.name not in [w.id for w in sched.workers()], 10, 0.05, what="draining seen")
    (later,) = sched.submit([_run(FAST)])
    wait_for(lambda: slow.id in rec.done and later.id in rec.done, 60, 0.1, what="both done")
    assert slow.run is not None and slow.run.status == "succeeded", (slow.run.status, slow.run.error)
    assert later.run is not None and later.run.worker is not None and later.run.worker["name"] != leaving.name
    assert leaving.proc.wait(30) == 0, leaving.log_text()[-2000:]
    assert not leaving.left()


def test_a_run_longer_than_the_drain_ends_interrupted(tmp_path: Path) -> None:
    """A worker leaving with a run that outlasts its --drain-s stops the run, reports it, and exits 0: the
    run is `interrupted` (it had started copying), never left running."""
    import signal

    with Cluster(tmp_path, n=1, slots=1, started=0) as c:
        w = c.add_worker(0, drain_s=0.5)
        w.wait_ready(c.broker)
        ex = CeleryExecutor(c.url).start()
        rec = Recorder()
        sched = Scheduler([ex], Admission(), on_finish=rec.on_finish, on_event=rec.on_event).start()
        ex.bind(sched)
        try:
            wait_for(lambda: len(sched.workers()) == 1, 30, what="the worker")
            (job,) = sched.submit([_run(SLOW)])
            wait_for(lambda: any(e.get("phase") == "copy" for e in rec.events[job.id]), 60, 0.02, what="copying")
            w.watch()
            w.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: job.id in rec.done, 30, 0.05, what="the run ended")
            assert job.run is not None and job.run.status == "interrupted", (job.run.status, job.run.error)
            assert w.proc.wait(30) == 0, w.log_text()[-2000:]
            wait_for(lambda: not w.left(), 10, 0.05, what="nothing left")
        finally:
            sched.shutdown(Stop("interrupted", "over"), 20)


def test_a_broker_that_goes_away_ends_remote_runs_interrupted(tmp_path: Path) -> None:
    """The broker stops mid-run (the service can reach no worker, no worker can answer): after
    BROKER_GONE_S the service ends the run `interrupted` rather than leaving it running, and offers no worker."""
    from lab.service.remote import BROKER_GONE_S

    with Cluster(tmp_path, n=1, slots=1) as c:
        ex = CeleryExecutor(c.url).start()
        rec = Recorder()
        sched = Scheduler([ex], Admission(), on_finish=rec.on_finish, on_event=rec.on_event).start()
        ex.bind(sched)
        try:
            wait_for(lambda: len(sched.workers()) == 1, 30, what="the worker")
            (job,) = sched.submit([_run(SLOW)])
            wait_for(lambda: any(e.get("phase") == "copy" for e in rec.events[job.id]), 60, 0.02, what="copying")
            c.broker.stop()
            wait_for(lambda: job.id in rec.done, BROKER_GONE_S + 15, 0.1, what="the run ended")
            assert job.run is not None and job.run.status == "interrupted", (job.run.status, job.run.error)
            wait_for(lambda: ex.workers() == [], 5, what="no worker offered while the broker is away")
        finally:
            sched.shutdown(Stop("interrupted", "over"), 5)
            c.workers[0].kill9()  # its broker is gone: nothing to drain to


def test_with_workers_the_service_machine_takes_only_what_needs_it(cluster: Cluster) -> None:
    """Beside the workers, the service's own executor (only "managed") gets no run and no probe: both go
    to a worker, the probe's verdict comes back from there."""
    from lab.service.jobs import TEACHER, probe_job
    from lab.service.scheduler import LOCAL, LocalExecutor

    ex = CeleryExecutor(cluster.url).start()
    local = LocalExecutor(2, capabilities=("managed", "kind:nbdkit"), only=("managed",))
    rec = Recorder()
    sched = Scheduler([local, ex], Admission(), on_finish=rec.on_finish, on_event=rec.on_event).start()
    ex.bind(sched)
    try:
        wait_for(lambda: len(sched.workers()) == 3, 30, what="the service and two workers")
        probe = probe_job({"size": "16M"}, 1 << 20, 60.0, TEACHER)
        jobs = sched.submit([_run(FAST), probe, _run(FAST)])
        wait_for(lambda: len(rec.done) == 3, 120, 0.1, what="all done")
    finally:
        sched.shutdown(Stop("interrupted", "over"), 20)
    names = {w.name for w in cluster.workers}
    assert all(j.worker in names for j in jobs), [j.worker for j in jobs]
    assert LOCAL not in {j.worker for j in jobs}
    assert probe.status == "succeeded" and probe.outcome and probe.outcome["result"]["verdict"], probe.outcome
