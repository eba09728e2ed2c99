"""The one scheduler on its own: its rules for what runs beside what, its lanes and turns, its
admission, its one cancel, an executor that loses a job; and the sweep service without a store
(as `lab scenario` uses it), with real runs. No timing asserts beyond the order things happened in."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from lab.domain.errors import AnonymousLimit, QueueFull, StudentLimit
from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.service import jobs as jobs_mod
from lab.service.jobs import TEACHER, Job, Needs, Who, run_job, run_needs
from lab.service.scheduler import Admission, LocalExecutor, Scheduler, Stop, Worker
from lab.service.sweeps import SweepService

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "8M", "delay_write": "60ms", "delay_zero": "1ms"}  # about 2 s


def _hold(payload: dict[str, Any], ctx: jobs_mod.Context) -> dict[str, Any]:
    """A job that only holds its place: `s` seconds, or until its gate opens, or until cancelled."""
    gate = _GATES.get(payload.get("gate", ""))
    t0 = time.monotonic()
    ctx.emit({"type": "state", "phase": "copy"})
    while not ctx.cancel.is_set():
        if gate is not None and gate.is_set():
            break
        if gate is None and time.monotonic() - t0 >= payload.get("s", 0.3):
            break
        time.sleep(0.01)
    return {"t0": t0, "t1": time.monotonic()}


_GATES: dict[str, threading.Event] = {}
jobs_mod.register("hold", _hold)


def hold(run: Run | None = None, who: Who | None = None, s: float = 0.3, gate: str | None = None,
         needs: Needs | None = None) -> Job:
    """A 'hold' job with a run's needs (CPU-bound, timed from spawn...) and `who`'s lane."""
    payload: dict[str, Any] = {"s": s}
    if gate is not None:
        _GATES.setdefault(gate, threading.Event())
        payload["gate"] = gate
    return Job("hold", payload, who or Who("anonymous"), needs or (run_needs(run) if run else Needs()))


class Spans(dict[str, tuple[float, float]]):
    """Job id -> (start, end) of each hold job: when each held a slot."""

    def finish(self, job: Job) -> None:
        r = (job.outcome or {}).get("result") or {}
        if "t0" in r:
            self[job.id] = (r["t0"], r["t1"])

    def overlap(self, a: Job, b: Job) -> bool:
        (a0, a1), (b0, b1) = self[a.id], self[b.id]
        return a0 < b1 and b0 < a1

    def run(self, jobs: list[Job], workers: int = 4) -> None:
        """All `jobs` through a scheduler with `workers` slots, until each has ended."""
        sched = Scheduler(LocalExecutor(workers), Admission(16), on_finish=self.finish).start()
        try:
            sched.submit(jobs)
            for j in jobs:
                assert j.done.wait(30)
        finally:
            sched.shutdown(Stop("interrupted", "shutdown"), grace=10)
        assert len(self) == len(jobs)


@pytest.fixture
def spans() -> Spans:
    return Spans()


def _scheduler(workers: int, finished: list[Job], started: threading.Event | None = None,
               admission: Admission | None = None) -> Scheduler:
    def on_event(job: Job, ev: dict[str, Any]) -> None:
        if started is not None and ev.get("type") == "state":
            started.set()

    return Scheduler(LocalExecutor(workers), admission or Admission(8), on_finish=finished.append, on_event=on_event)


def test_one_cancel_for_queued_and_running_jobs(no_leftovers):
    finished: list[Job] = []
    started = threading.Event()
    sched = _scheduler(1, finished, started).start()
    try:
        runs = [Run(client="qemu-img", server=build_spec(SLOW)) for _ in range(3)]
        jobs = sched.submit([run_job(r, TEACHER) for r in runs])
        assert started.wait(30)
        time.sleep(0.3)  # the first is copying, the two others wait in the queue
        gone = Stop("cancelled", "server x was deleted", "server x was deleted during the run")
        stopped = sched.cancel(lambda j: j.id in {runs[0].id, runs[1].id}, gone, wait=10)
        assert {j.id for j in stopped} == {runs[0].id, runs[1].id}
        assert jobs[0].done.is_set() and jobs[1].done.is_set()
        assert (runs[1].status, runs[1].error) == ("cancelled", "server x was deleted")  # never started
        assert (runs[0].status, runs[0].error) == ("cancelled", "server x was deleted during the run")
        assert jobs[2].done.wait(30) and runs[2].status == "succeeded", "an unmatched job is untouched"
        assert runs[2].verified is True and runs[2].backend is not None, "the owner's Run holds the result"
        assert sched.cancel(lambda j: j.id == runs[2].id) == [], "nothing left to cancel"
    finally:
        assert sched.shutdown(Stop("interrupted", "shutdown"), grace=10) == []
    assert [j.id for j in finished][:1] == [runs[1].id]


def test_jobs_on_one_resource_take_turns(spans: Spans):
    spec = build_spec(FAST)
    runs = [Run(client="qemu-4.2", server=spec, server_id="s1"),
            Run(client="qemu-4.2", server=spec, server_id="s1"), Run(client="qemu-4.2", server=spec)]
    jobs = [hold(r) for r in runs]
    spans.run(jobs, workers=3)
    assert not spans.overlap(jobs[0], jobs[1]), "two jobs on one server overlapped"
    (_, a1), (_, b1), (c0, _) = (spans[j.id] for j in jobs)
    assert c0 < max(a1, b1) - 0.2, "a job on no managed server did not wait for them"


def test_sweep_service_without_a_store_runs_a_scenario(no_leftovers):
    """`lab scenario`'s path: plan, queue all rows, count, end; the parallel client first."""
    events: list[tuple] = []

    def finish(job: Job) -> None:
        sweeps.run_finished(job.run)

    sched = Scheduler(LocalExecutor(2), Admission(8), on_finish=finish)
    sweeps = SweepService(sched, publish=lambda t, _r, s, **kw: events.append((t, s, kw.get("status"))))
    only = ["ref-none", "ref-plugin-default"]
    sweep = sweeps.start("reference", only=only, overrides=FAST, order=lambda r: r.label != "ref-plugin-default")
    sched.start()
    try:
        assert sweep.done.wait(60)
    finally:
        sched.shutdown(Stop(), grace=5)
    assert [r.label for r in sweep.runs] == only, "the sweep keeps scenario order"
    assert sweep.status == "succeeded" and sweep.counts() == {"succeeded": 2}
    assert all(r.verified for r in sweep.runs), "the sweep's runs hold their results"
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
    jobs = [hold(r, TEACHER) for r in runs]
    assert [j.alone for j in jobs] == [False, False, True, False, True, True, False]
    spans.run(jobs)
    assert spans.overlap(jobs[0], jobs[1]), "two sleep-bound jobs share the machine"
    for cpu in (jobs[2], jobs[4], jobs[5]):
        assert not any(spans.overlap(cpu, other) for other in jobs if other is not cpu), cpu.id
    assert spans[jobs[3].id][0] >= spans[jobs[2].id][1], "queued after a CPU-bound job: starts after it"


def test_a_run_clocked_from_spawn_starts_outside_the_others_start_up(spans: Spans):
    """qemu-img's time includes its own start, so it starts only when no other job started within
    LAUNCH_QUIET_S, and nothing starts beside it for as long; era clients (clocked once connected)
    start together."""
    from lab.service.scheduler import LAUNCH_QUIET_S

    sleepy = build_spec(FAST)
    runs = [Run(client="qemu-2.8", server=sleepy), Run(client="qemu-img", server=sleepy),
            Run(client="qemu-2.7", server=sleepy), Run(client="qemu-4.0", server=sleepy)]
    jobs = [hold(r, TEACHER, s=2 * LAUNCH_QUIET_S) for r in runs]
    spans.run(jobs)
    start = {r.client: spans[j.id][0] for r, j in zip(runs, jobs, strict=True)}
    img = start.pop("qemu-img")
    assert max(start.values()) - min(start.values()) < 0.5 * LAUNCH_QUIET_S, "era clients start together"
    assert min(abs(img - t) for t in start.values()) >= LAUNCH_QUIET_S - 0.05, start | {"qemu-img": img}
    assert all(t < img for t in start.values()), "queued after qemu-img, they went first rather than wait"


# -- lanes, turns and admission ------------------------------------------------------------------------


def _order(sched: Scheduler) -> list[str]:
    return [j.payload["tag"] for j in sched.jobs() if j.status == "queued"]


def tagged(tag: str, who: Who, **kw: Any) -> Job:
    job = hold(who=who, **kw)
    job.payload["tag"] = tag
    return job


def student(name: str) -> Who:
    return Who("student", name)


def anon(client: str) -> Who:
    return Who("anonymous", client=client)


def test_students_take_turns_anonymous_callers_share_one_turn_and_the_teacher_goes_first():
    """Nothing runs (the scheduler is not started): the order the queued jobs would start in."""
    sched = Scheduler(LocalExecutor(1), Admission(64), on_finish=lambda _j: None)
    for i in range(3):
        sched.submit([tagged(f"ana{i}", student("ana"))])
    for i in range(2):
        sched.submit([tagged(f"ben{i}", student("ben"))])
    for i in range(3):
        sched.submit([tagged(f"x{i}", anon("10.0.0.1"))])
    sched.submit([tagged("y0", anon("10.0.0.2"))])
    sched.submit([tagged("cho0", student("cho"))])
    sched.submit([tagged("teacher0", TEACHER), tagged("teacher1", TEACHER)])
    sched.submit([tagged("calib", Who("system"))])
    assert _order(sched) == ["calib", "teacher0", "teacher1",
                             "ana0", "ben0", "x0", "cho0", "ana1", "ben1", "y0", "ana2", "x1", "x2"]
    w = sched.waiting()
    assert [w[j.id]["queue_position"] for j in sched.jobs()] == list(range(1, 14))


def test_priority_orders_only_an_owners_own_jobs():
    sched = Scheduler(LocalExecutor(1), Admission(64), on_finish=lambda _j: None)
    sched.submit([tagged("a-low", student("ana"))])
    sched.submit([tagged("b0", student("ben"))])
    high = tagged("a-high", student("ana"))
    high.priority = 5
    sched.submit([high])
    assert _order(sched) == ["a-high", "b0", "a-low"]


def test_a_running_teacher_job_keeps_order_and_turns_follow_who_started_last():
    """One slot, held by a gate: students queue, the teacher's job comes later and starts first;
    then students in turns, whoever started longest ago first."""
    started: list[str] = []
    sched = Scheduler(LocalExecutor(1), Admission(64), on_finish=lambda _j: None,
                      on_event=lambda j, _e: started.append(j.payload["tag"]))
    gates = [f"g{i}-{id(sched)}" for i in range(5)]
    jobs = [tagged("ana0", student("ana"), gate=gates[0]), tagged("ana1", student("ana"), gate=gates[1]),
            tagged("ben0", student("ben"), gate=gates[2]), tagged("ben1", student("ben"), gate=gates[3])]
    sched.start()
    try:
        for j in jobs:
            sched.submit([j])
        for _ in range(300):
            if started:
                break
            time.sleep(0.01)
        assert started == ["ana0"]
        teacher = tagged("teacher", TEACHER, gate=gates[4])
        sched.submit([teacher])
        for j in [*jobs, teacher]:  # from now on each ends as soon as it starts: one at a time, in order
            _GATES[j.payload["gate"]].set()
        for j in [*jobs, teacher]:
            assert j.done.wait(10)
    finally:
        sched.shutdown(Stop(), grace=5)
    assert started[:2] == ["ana0", "teacher"], started
    assert started[2:] == ["ben0", "ana1", "ben1"], started


def test_admission_says_which_limit_refused_and_whether_waiting_helps():
    sched = Scheduler(LocalExecutor(1), Admission(queue_size=4, per_student=2, anonymous=3),
                      on_finish=lambda _j: None)
    sched.submit([hold(who=student("ana")), hold(who=student("ana"))])
    with pytest.raises(StudentLimit) as e:
        sched.submit([hold(who=student("ana"))])
    assert e.value.can_wait and "ana already has 2 of at most 2" in str(e.value)
    with pytest.raises(StudentLimit) as e:
        sched.submit([hold(who=student("ben")) for _ in range(3)])
    assert not e.value.can_wait, "3 runs can never fit a limit of 2"
    sched.submit([hold(who=anon("a")), hold(who=anon("b"))])
    with pytest.raises(AnonymousLimit) as e:
        sched.submit([hold(who=anon("c")), hold(who=anon("c"))])
    assert "give a student name" in str(e.value)
    assert sched.queued == 4
    with pytest.raises(QueueFull) as e:  # full, and ben asks for two at once
        sched.submit([hold(who=student("ben")), hold(who=student("ben"))])
    assert e.value.can_wait
    sched.submit([hold(who=student("cho"))])  # a newcomer gets one turn even when it is full
    with pytest.raises(QueueFull):
        sched.submit([hold(who=student("cho"))])
    sched.submit([hold(who=TEACHER) for _ in range(4)])  # the teacher is never refused for students' load
    with pytest.raises(QueueFull) as e:
        sched.submit([hold(who=TEACHER)])
    assert "teacher's queue" in str(e.value)
    with pytest.raises(QueueFull) as e:
        sched.submit([hold(who=TEACHER) for _ in range(5)])
    assert not e.value.can_wait


def test_estimated_start_follows_the_slots_and_the_jobs_ahead():
    est = {"a": 10.0, "b": 4.0, "c": 6.0, "cpu": 3.0, "d": 1.0}
    sched = Scheduler(LocalExecutor(2), Admission(64), on_finish=lambda _j: None,
                      estimate=lambda j: est[j.payload["tag"]])
    jobs = [tagged("a", TEACHER), tagged("b", TEACHER), tagged("c", TEACHER),
            tagged("cpu", TEACHER, needs=Needs(alone=True)), tagged("d", TEACHER)]
    sched.submit(jobs)
    w = sched.waiting()
    got = {j.payload["tag"]: w[j.id]["estimated_start_s"] for j in jobs}
    # two slots: a and b at 0; c when b ends (4); the CPU-bound job when both are free (10); d after it (13)
    assert got == {"a": 0.0, "b": 0.0, "c": 4.0, "cpu": 10.0, "d": 13.0}


class LosingExecutor:
    """A remote-like executor whose machine dies: the first launch of each job is lost (after
    `copied` says whether it started copying), the second succeeds."""

    def __init__(self, copied: bool) -> None:
        self.copied, self.launches = copied, 0

    def workers(self) -> list[Worker]:
        return [Worker("w1", 1, frozenset())]

    def launch(self, job: Job, worker_id: str, report: Any) -> None:
        self.launches += 1
        first = job.attempt == 0

        def go() -> None:
            if self.copied:
                report.event(job.id, {"type": "state", "phase": "copy"})
            report.finished(job.id, {"status": "lost" if first else "succeeded", "result": {"ok": True},
                                     "error": "w1 restarted during the job" if first else None,
                                     "started_copying": self.copied and first})

        threading.Thread(target=go, daemon=True).start()

    def cancel(self, job_id: str) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize("copied", [False, True])
def test_a_lost_job_is_tried_again_once_unless_it_had_started_copying(copied: bool):
    ex = LosingExecutor(copied)
    sched = Scheduler(ex, Admission(8), on_finish=lambda _j: None).start()
    try:
        job = sched.submit([hold(who=TEACHER)])[0]
        assert job.done.wait(10)
    finally:
        sched.shutdown(Stop(), grace=5)
    if copied:
        assert (job.status, ex.launches) == ("interrupted", 1)
        assert job.outcome["error"] == "the worker running it was lost (w1: w1 restarted during the job)"
    else:
        assert (job.status, ex.launches, job.attempt) == ("succeeded", 2, 1)


def test_jobs_go_only_where_their_capabilities_are():
    """A managed server's run needs the service's machine; a job pinned to a worker goes only there."""
    class Remote(LosingExecutor):
        def workers(self) -> list[Worker]:
            return [Worker("w1", 2, frozenset({"kind:nbdkit"}))]

    sched = Scheduler([LocalExecutor(2), Remote(False)], Admission(8), on_finish=lambda _j: None)
    local_only = hold(needs=Needs(server_id="s1", capabilities=("managed",)))
    pinned = hold(needs=Needs(worker="w1"))
    nowhere = hold(needs=Needs(capabilities=("root", "storage:loop")))
    sched.submit([local_only, pinned, nowhere])
    with sched.lock:
        picked = {j.id: j.worker for j, _ex in sched._pick()}
    assert picked == {local_only.id: "local", pinned.id: "w1"}, "the job no machine offers waits"
    assert nowhere.status == "queued"
    waiting = sched.waiting()  # no machine offers what it needs: nobody can say when it starts
    assert waiting[nowhere.id] == {"queue_position": 1, "estimated_start_s": None}
    sched.cancel(lambda _j: True)


# -- probes and calibration go through the scheduler ----------------------------------------------------


def test_a_probe_started_while_a_cpu_bound_run_runs_waits_for_it(tmp_path, no_leftovers):
    """The acceptance of issue 23: a probe (which writes at full speed) is a job of the one scheduler,
    so one asked for while a CPU-bound run copies starts only once that run has ended."""
    from lab.service.manager import Manager, ManagerConfig
    from lab.service.store import Store

    store = Store(tmp_path / "data")
    m = Manager(store, ManagerConfig(workers=2, queue_size=4, run_timeout_s=120)).start()
    try:
        started = threading.Event()
        cpu = m.new_run("nbdcopy", {"size": "64M", "pattern": "full", "delay_write": 0, "delay_zero": 0})
        sub = m.subscribe(after=0, run_id=cpu.id)
        m.submit(cpu)

        def watch() -> None:
            while not started.is_set():
                for ev in sub.get(timeout=30):
                    if ev.type == "state" and ev.data.get("phase") == "copy":
                        started.set()

        threading.Thread(target=watch, daemon=True).start()
        assert started.wait(60), "the CPU-bound run never started copying"
        result = m.probe({"size": "16M"}, 2 << 20, 60)
        sub.close()
        run = m.wait(cpu.id, 60)
        assert run["status"] == "succeeded", run["error"]
        assert result["started_at"] >= run["finished_at"], "the probe ran beside a CPU-bound run"
        assert result["verdict"] and result["all_zero_ranges_read_zero"] is True
    finally:
        m.shutdown()
        store.close()


def test_a_calibration_is_jobs_one_point_at_a_time_each_alone_before_the_queued_runs(tmp_path, monkeypatch,
                                                                                       no_leftovers):
    """Calibration through the scheduler: its points run one at a time with the machine to themselves,
    in the system's lane (a student's run queued meanwhile waits for them), then the fit is saved. The
    points are tiny and the fit is left out (the procedure's own tests cover it): the scheduling is
    what is tested."""
    from lab.measure import calibration, expectation
    from lab.service.calibrating import Calibrating
    from lab.service.manager import Manager, ManagerConfig
    from lab.service.store import Store

    tiny = calibration.Point("4M", "full", "1M", 0, 0, 1)
    monkeypatch.setattr(calibration, "steps", lambda kind: (tiny, tiny, tiny))
    fitted: list[int] = []

    def fit_kind(kind, measured):
        fitted.append(len(measured))
        points = [{**p, "fitted_s": p["measured_s"]} for p in measured]
        return expectation.Fit(kind.key, {"delays": 1.0}, points, {}, {}, {}, [])

    monkeypatch.setattr(calibration, "fit_kind", fit_kind)
    spans: list[tuple[float, float]] = []
    real = calibration.measure_point

    def measure_point(*a, **kw):
        t0 = time.time()
        try:
            return real(*a, **kw)
        finally:
            spans.append((t0, time.time()))

    monkeypatch.setattr(calibration, "measure_point", measure_point)
    import dataclasses

    from lab.host import places
    from lab.host.places import Places

    here = dataclasses.replace(Places.under(tmp_path), image_dir=places.current().image_dir)  # its own calibration file
    store = Store(tmp_path / "data")
    m = Manager(store, ManagerConfig(workers=2, queue_size=8, run_timeout_s=60, places=here)).start()
    kinds = (expectation.Kind("qemu-2.8", 1, "single", False), expectation.Kind("qemu-img", 1, "single", False))
    m.calibrating = Calibrating(m.scheduler, m.config.places, kinds)
    try:
        assert m.calibrate() and not m.calibrate(), "one calibration at a time"
        run = m.new_run("qemu-4.2", {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}, student="ana")
        m.submit(run)
        row = m.wait(run.id, 120)
        deadline = time.monotonic() + 120
        while m.calibration_state()["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
        state = m.calibration_state()
    finally:
        m.shutdown()
        store.close()
    assert state["status"] == "done", state
    assert (state["step"], state["steps"]) == (6, 6) and fitted == [3, 3]
    assert row["status"] == "succeeded"
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two calibration points overlapped"
    assert row["started_at"] >= spans[-1][1], "the student's run went before the calibration's points"
    assert here.calibration_file.exists(), "saved where this service keeps its calibration"


@pytest.mark.parametrize("cores, together", [(0.1, True), (0.3, False)])
def test_a_sweep_without_a_parallelism_does_not_contend_with_itself(cores: float, together: bool):
    """Its rows share the machine only while their estimated CPU together stays within the contention
    limit: light sleep-bound rows run side by side, heavier ones one after another (a CPU-bound one is
    alone anyway). An explicit parallelism is the sweep's own choice."""
    from lab.measure.contention import CONTENDED_CORES

    spans = Spans()
    sched = Scheduler(LocalExecutor(6), Admission(16), on_finish=spans.finish, cores=lambda _j: cores).start()
    try:
        rows = [hold(who=TEACHER, s=0.4) for _ in range(3)]
        for j in rows:
            j.group, j.group_cores = "sweep-1", CONTENDED_CORES
        mine = [hold(who=TEACHER, s=0.4) for _ in range(2)]
        for j in mine:
            j.group, j.group_limit = "sweep-2", 2
        sched.submit(rows)
        sched.submit(mine)
        for j in [*rows, *mine]:
            assert j.done.wait(30)
    finally:
        sched.shutdown(Stop(), grace=5)
    overlaps = [spans.overlap(a, b) for a, b in itertools.combinations(rows, 2)]
    assert any(overlaps) if together else not any(overlaps), overlaps
    assert spans.overlap(*mine), "a sweep's own parallelism holds whatever its rows cost"
