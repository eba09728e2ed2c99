"""The run manager: the web service's (or any headless tool's) one entry to the core.

A thin facade over parts with one job each; no web imports:

- lab.service.scheduler.Scheduler  the one queue of measurement jobs (runs, sweep rows, calibration points,
                                   probes): what runs beside what, lanes and turns; the one way to cancel jobs
- lab.service.sweeps.SweepService  a scenario's rows as one sweep (`lab scenario` uses it too)
- lab.service.managed.ServerRegistry  managed (long-lived) nbdkit servers runs can target by `server_id`
- lab.service.faults.Faults        fault injection for the reliability tests (the setting `fault`)
- lab.service.history.History      the read side the web layer uses (`manager.history`): pages, rows, traces

What the manager itself adds: every change goes through the event bus, which persists it
before anyone sees it (a run's final row is committed with the `state` event that announces
it, before its `done` event); shutdown() interrupts queued and running runs, stops every
server and leaves no process behind; old progress events are pruned (lab.service.retention).
Scripts' conveniences (custom sweeps, re-runs, cancel by filter, deleting servers) are methods here too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from lab.config import Settings
from lab.domain import sweepspec
from lab.domain.errors import Conflict, LimitExceeded, ManagerError, NotFound, NotRunnable, QueueFull, ShuttingDown
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.run import Run
from lab.domain.scenarios import Scenario
from lab.domain.spec import FormCheck, ServerSpec, SpecError, build_spec, check_fields
from lab.domain.students import canonical
from lab.host import leftovers, places, procs
from lab.host.places import Core, Places
from lab.nbd import diskmap, probe
from lab.nbd.backends import Machine
from lab.service import runlog
from lab.service.audits import AuditBook
from lab.service.calibrating import Calibrating
from lab.service.classroom import ClassRoom, Member, is_student_key
from lab.service.estimate import Estimator
from lab.service.events import EventBus, Subscription
from lab.service.expiry import Reaper
from lab.service.faults import FAULT_ENV, FAULT_PHASES, PAUSE_MAX_S, Faults, parse_fault
from lab.service.fleet import Fleet
from lab.service.history import History
from lab.service.jobs import TEACHER, Job, JobFailed, LocalContext, Who, probe_job, run_job, who_for
from lab.service.managed import ServerRegistry
from lab.service.remote import CeleryExecutor
from lab.service.retention import Retention
from lab.service.scheduler import Admission, LocalExecutor, Scheduler, Stop
from lab.service.store import Event, Store
from lab.service.sweeps import Sweep, SweepService
from lab.service.versions import tool_versions

# The service facade: app/ imports this module (and domain values) only (pyproject's import contract).
__all__ = ["FAULT_ENV", "FAULT_PHASES", "PAUSE_MAX_S", "Conflict", "Event", "History", "IdempotencyLog",
           "LimitExceeded", "Manager", "ManagerConfig", "ManagerError", "Member", "NotFound", "NotRunnable",
           "QueueFull", "ShuttingDown", "Subscription", "Sweep", "is_student_key", "parse_fault", "tool_versions",
           "use_as_default"]

log = logging.getLogger("lab.service.manager")


def use_as_default(settings: Settings) -> None:
    """Make the places of `settings` the process default (lab.host.places), as a driver that read the
    environment does (`lab`, uvicorn's app factory); library code not handed places then uses them."""
    places.use(Places.from_settings(settings))

SHUTDOWN_ERROR = "the service shut down during this run"
PROBE_WAIT_S = 900.0  # a probe waits in the queue and runs within this, or gives up


_D = Settings.defaults()


@dataclass(frozen=True)
class ManagerConfig:
    """The slice of lab.config.Settings the manager uses; defaults are the settings' own (declared once)."""

    workers: int = _D.workers
    queue_size: int = _D.queue_size
    run_timeout_s: float | None = _D.run_timeout_s
    image_cache_bytes: int | None = None
    max_servers: int = _D.max_servers
    subscriber_queue: int = _D.event_queue
    limits: Limits = DEFAULT_LIMITS
    shutdown_grace_s: float = 10.0
    # Progress events of runs finished longer ago than this are deleted (None: keep all) ...
    progress_retention_s: float | None = _D.progress_retention_s
    # ... and beyond this many progress rows, the oldest of finished runs go first (None: no cap).
    max_progress_events: int | None = _D.max_progress_events or None
    server_ttl_s: float | None = _D.server_ttl_s or None  # managed servers are stopped this long after they start
    # Runs one student may have queued or running at once (None: no limit); runs without a
    # student share the anonymous budget; the teacher's are not counted (lab.service.scheduler.Admission).
    max_queued_per_student: int | None = _D.max_queued_per_student or None
    max_queued_anonymous: int | None = _D.max_queued_anonymous or None
    # Where files go (None: the process default a driver set, lab.host.places), the eras in-process
    # (tests), the injected fault (reliability tests; None: none).
    places: Places | None = None
    clients_in_process: bool = False
    fault: str | None = None

    @property
    def core(self) -> Core:
        """What each run takes from the settings (lab.host.places.Core)."""
        return Core(self.places, self.limits, self.clients_in_process)

    @classmethod
    def from_settings(cls, settings: Settings) -> ManagerConfig:
        """The manager's slice of the service's settings (0 in a setting means 'no limit' here: None)."""
        return cls(workers=settings.workers, queue_size=settings.queue_size, run_timeout_s=settings.run_timeout_s,
                   image_cache_bytes=settings.image_cache_bytes, max_servers=settings.max_servers,
                   subscriber_queue=settings.event_queue, limits=settings.limits,
                   progress_retention_s=settings.progress_retention_s,
                   max_progress_events=settings.max_progress_events or None,
                   server_ttl_s=settings.server_ttl_s or None,
                   max_queued_per_student=settings.max_queued_per_student or None,
                   max_queued_anonymous=settings.max_queued_anonymous or None,
                   places=Places.from_settings(settings), clients_in_process=settings.clients_in_process,
                   fault=settings.fault)


class IdempotencyLog(Protocol):
    """What a POST with an Idempotency-Key needs (lab.service.store.Store keeps it)."""

    def idem_claim(self, key: str, fingerprint: str, keep_s: float) -> tuple[str, int | None, str | None] | None: ...

    def idem_complete(self, key: str, status: int, response: str) -> None: ...

    def idem_release(self, key: str) -> None: ...


class Manager:
    def __init__(self, store: Store, config: ManagerConfig | None = None, faults: Faults | None = None,
                 remote: CeleryExecutor | None = None) -> None:
        """`remote`: cluster mode: measurements go to its workers, and this machine runs only the jobs
        that need it (runs on its managed servers); None: everything runs here, as always."""
        self.store = store
        self.config = config or ManagerConfig()
        self.bus = EventBus(store, self.config.subscriber_queue)
        self.faults = faults if faults is not None else Faults.from_setting(self.config.fault)
        self.machine = Machine(self.config.places)  # what this machine has: fields asking for more are refused
        # in cluster mode this machine takes only the jobs that need it: runs on its managed servers, and
        # what is pinned to it (its own calibration's points); everything else goes to the workers
        local_caps = ("managed", *self.machine.capabilities(self.config.limits))
        self.local = LocalExecutor(self.config.workers, context=self._context, capabilities=local_caps,
                                   only=("managed",) if remote else ())
        admission = Admission(self.config.queue_size, self.config.max_queued_per_student,
                              self.config.max_queued_anonymous)
        self.estimator = Estimator(lambda client: self.store.list_runs(status="succeeded", client=client, limit=200)[0])
        self.remote = remote
        self.scheduler = Scheduler([self.local, remote] if remote else self.local, admission, on_finish=self._finish,
                                   on_event=self._on_event, on_queued=self._queued, estimate=self.estimator,
                                   cores=self.estimator.cores)
        if remote is not None:
            remote.bind(self.scheduler)
        # what runs may ask for: this machine's kinds and storages, or in cluster mode the workers'
        self.offers: Machine | Fleet = Fleet(self.scheduler.workers) if remote else self.machine
        self.calibrating = Calibrating(self.scheduler, self.config.places)
        self.sweeps = SweepService(self.scheduler, self.config.limits, publish=self.bus.publish,
                                   timeout_s=self.config.run_timeout_s, machine=self.offers)
        self.servers = ServerRegistry(self.config.max_servers, publish=self.bus.publish, busy=self.scheduler.busy,
                                      core=self.config.core)
        self.retention = Retention(store, self.config.progress_retention_s, self.config.max_progress_events)
        self.classroom = ClassRoom(store)  # the class session, its members and their guesses
        self._cancelled_by: dict[str, str] = {}  # run id -> who asked for its cancel (the log's reason)
        self._started_logged: set[str] = set()  # runs whose start the log has said
        self.audits = AuditBook(self.scheduler, self.config.places, self.config.limits)  # zero audits, as jobs
        self.reaper = Reaper(self.servers.expired, lambda sid: self.delete_server(sid, reason="expired"))
        self._talk: dict[str, Any] = {"act": None, "at": None}
        self._started = False
        # What the web layer may use of the store: the read side, and the log of retried POSTs.
        self.history = History(store)
        self.idempotency: IdempotencyLog = store

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings) -> Manager:
        """The service's manager over the history in settings.data_dir, started. Opening the store marks
        what a dead predecessor left queued or running as interrupted."""
        store = Store(settings.data_dir)
        if store.recovered:
            log.warning("marked %d runs/sweeps interrupted (left active by a previous service)", len(store.recovered))
        # cluster mode (LAB_BROKER_URL): the measurements go to `lab worker`s (lab.service.remote)
        remote = CeleryExecutor(settings.broker).start() if settings.broker else None
        manager = cls(store, ManagerConfig.from_settings(settings), remote=remote).start()
        if not settings.broker:  # workers calibrate themselves; here, in the background: the service answers
            manager.calibrating.first_start(settings.auto_calibrate)
        return manager

    def starting(self) -> tuple[int, int] | None:
        """(points measured, points in all) while the first start's calibration runs, else None (instant)."""
        return self.calibrating.starting()

    def close(self) -> None:
        """shutdown(), then close the store (the manager is not used again)."""
        try:
            self.shutdown()
        finally:
            self.store.close()

    def start(self) -> Manager:
        if self._started:
            return self
        self._started = True
        with contextlib.suppress(OSError):
            leftovers.sweep(self.config.places)  # dirs a SIGKILLed predecessor left behind
        self.prune_events()
        self._queue_again()
        self.scheduler.start()
        self.reaper.start()
        return self

    def _queue_again(self) -> None:
        """Queue again, in their order, the runs a previous service left queued (the store kept their
        jobs), and bring their sweeps back to life."""
        jobs = []
        for d in self.store.queued_jobs():
            row = self.store.get_run(d["id"])
            if row is None or row["status"] != "queued":
                continue
            job = Job.from_dict(d)
            job.run = Run.model_validate(row)
            jobs.append(job)
        for sweep_id in dict.fromkeys(j.run.sweep_id for j in jobs if j.run is not None and j.run.sweep_id):
            row = self.store.get_sweep(sweep_id)
            if row is not None:
                queued = {j.id: j.run for j in jobs if j.run is not None and j.run.sweep_id == sweep_id}
                self.sweeps.resume(row, queued, self.store.get_run)
        if jobs:
            self.scheduler.requeue(jobs)
            log.info("queued again %d runs a previous service left queued", len(jobs))

    def shutdown(self) -> None:
        """Interrupt running runs and stop all servers (nothing of ours survives); queued runs stay
        queued in the store for the next start (those on a managed server end: it stops too)."""
        self.reaper.close()
        kept = self.scheduler.queued  # the log says what the next start will run
        stuck = self.scheduler.shutdown(Stop("interrupted", SHUTDOWN_ERROR), self.config.shutdown_grace_s,
                                        keep=lambda j: j.run is not None and j.needs.server_id is None)
        if kept:
            log.info("stopping: %d queued jobs kept for the next start (runs that were running: interrupted)",
                     kept, extra={"event": "service.stopping", "queued_kept": kept})
        if stuck is None:
            return
        self.servers.close()
        if stuck:
            log.warning("jobs still running at shutdown: %s; killing their processes", ", ".join(stuck))
            procs.kill_all()

    # -- runs ------------------------------------------------------------------------------
    def new_spec(self, fields: dict[str, Any]) -> ServerSpec:
        """Validate server fields against this manager's limits (raises SpecError naming the field)."""
        return build_spec(fields, self.config.limits, self.offers)

    def check_fields(self, fields: dict[str, Any], api: bool = False) -> FormCheck:
        """Every problem of a form of server fields at once (POST /validate), as a run would be checked."""
        return check_fields(fields, self.config.limits, api=api, machine=self.offers)

    def new_run(self, client: str, server: dict[str, Any] | ServerSpec | None = None,
                server_id: str | None = None, **extra: Any) -> Run:
        """A Run for `client` on fresh server fields or on managed server `server_id` (not yet queued)."""
        if server_id is not None:
            return Run(client=client, server=self.servers.get(server_id).server.spec, server_id=server_id, **extra)
        spec = server if isinstance(server, ServerSpec) else build_spec(server or {}, self.config.limits, self.offers)
        return Run(client=client, server=spec, **extra)

    def submit(self, run: Run, who: Who | None = None) -> dict[str, Any]:
        """Queue a run for `who` (default: its student, else the teacher: a headless caller runs the lab);
        returns its row (status queued).
        Raises QueueFull, StudentLimit (or AnonymousLimit), NotFound, ShuttingDown."""
        def admit(_free: int) -> None:
            if run.server_id is not None and not self.servers.has(run.server_id):
                raise NotFound(f"server {run.server_id} not found")

        run.status = "queued"
        job = run_job(run, who or who_for(run.student, teacher=True), self.config.run_timeout_s)
        row = run.to_dict()
        self.scheduler.submit([job], admit=admit)
        return row

    def cancel(self, run_id: str, wait: float = 5.0, by: str | None = None) -> dict[str, Any]:
        """Cancel a run: queued -> cancelled now; running -> cancel requested (waits up to `wait` s).
        `by`: who asked (the log says so)."""
        if by:
            self._cancelled_by[run_id] = by
        jobs = self.scheduler.cancel(lambda j: j.id == run_id and j.run is not None, wait=wait)
        if not jobs:
            row = self.store.get_run(run_id)
            if row is None:
                raise NotFound(f"run {run_id} not found")
            raise Conflict(f"run {run_id} has already finished ({row['status']})")
        return self.store.get_run(run_id) or jobs[0].run.to_dict()

    def get_run(self, run_id: str) -> dict[str, Any]:
        row = self.store.get_run(run_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return row

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until a run is final or `timeout` passes; returns its row (for headless callers and tests)."""
        job = self.scheduler.find(run_id)
        if job is not None:
            job.done.wait(timeout)
        return self.get_run(run_id)

    # -- calibration ---------------------------------------------------------------------------
    def calibrate(self) -> bool:
        """Measure this machine's calibration again, as jobs of the scheduler (lab.service.calibrating);
        False when one is already under way. calibration_state() follows it."""
        return self.calibrating.start()

    def calibration_state(self) -> dict[str, Any]:
        return self.calibrating.state()

    # -- probes --------------------------------------------------------------------------------
    def probe(self, fields: dict[str, Any], length: int | None = None, deadline_s: float = probe.DEFAULT_DEADLINE_S,
              who: Who | None = None, wait_s: float = PROBE_WAIT_S) -> dict[str, Any]:
        """Probe a server made from `fields` (lab.nbd.probe) on ranges of `length` bytes (default
        probe.DEFAULT_LENGTH) as a job of the scheduler: it waits for the machine to itself (a CPU-bound
        run ahead of it first ends) and answers when done. SpecError before anything is queued (field
        `length`, or a server field); JobFailed when it failed (its kind and field say why); QueueFull
        and the like when it may not queue; ShuttingDown; JobFailed("timeout") after `wait_s` in all."""
        length = length or probe.DEFAULT_LENGTH
        if not probe.MIN_LENGTH <= length <= probe.MAX_LENGTH or length % 4096:
            raise SpecError("length", "must be a multiple of 4K between 1M and 256M")
        probe.probe_spec(fields, length, self.config.limits, self.config.places)  # the fields' errors first
        job = probe_job(fields, length, deadline_s, who or TEACHER)
        self.scheduler.submit([job])
        if not job.done.wait(wait_s):
            self.scheduler.cancel(lambda j: j is job, wait=5)
            raise JobFailed("timeout", f"the probe did not end within {wait_s:g} s (it waits for runs that need "
                                       "the machine alone); try again when the lab is quieter")
        out = job.outcome or {}
        if job.status != "succeeded":
            raise JobFailed(out.get("error_kind") or job.status, out.get("error") or job.status, out.get("error_field"))
        return out["result"]

    # -- sweeps ----------------------------------------------------------------------------
    def start_sweep(self, name: str, only: list[str] | None = None,
                    overrides: dict[str, Any] | None = None, student: str | None = None,
                    who: Who | None = None) -> dict[str, Any]:
        """Queue every row of scenario `name` (or the rows in `only`) as one sweep: see lab.service.sweeps.
        A student's sweep counts against the per-student limit with all its runs."""
        return self.sweeps.start(name, only, overrides, student=student,
                                 who=who or who_for(student, teacher=True)).to_dict()

    def scenarios_here(self, scenarios: Iterable[Scenario]) -> list[Scenario]:
        """Each scenario as this machine (in cluster mode: its workers) runs it: every row resolved (act 3b's
        storages), `available` and `reason` set (lab.nbd.backends.Machine.scenario, lab.service.fleet)."""
        return [self.offers.scenario(s) for s in scenarios]

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        row = self.store.get_sweep(sweep_id)
        if row is None:
            raise NotFound(f"sweep {sweep_id} not found")
        return row

    def cancel_sweep(self, sweep_id: str, wait: float = 5.0) -> dict[str, Any]:
        if not self.sweeps.cancel(sweep_id, wait):
            row = self.get_sweep(sweep_id)
            raise Conflict(f"sweep {sweep_id} has already finished ({row['status']})")
        return self.get_sweep(sweep_id)

    # -- custom sweeps -----------------------------------------------------------------------
    def start_custom_sweep(self, definition: dict[str, Any], who: Who | None = None) -> dict[str, Any]:
        """Queue a custom sweep (rows or a grid, lab.domain.sweepspec); DefinitionError names the place at fault."""
        self.scheduler.check_open()
        planned = sweepspec.plan(definition, self.config.limits, self.sweeps.machine)
        return self.sweeps.start_custom(planned, who=who).to_dict()

    def rerun_sweep(self, sweep_id: str, who: Who | None = None) -> dict[str, Any]:
        """Queue a new sweep made like `sweep_id` (its scenario rows or its custom definition)."""
        old = self.get_sweep(sweep_id)
        if old.get("definition"):
            return self.start_custom_sweep(old["definition"], who=who)
        student = old.get("student")  # a student's sweep again is that student's turn (its canonical name)
        return self.start_sweep(old["name"], only=old.get("only"), overrides=old.get("overrides"),
                                student=student, who=who_for(canonical(student) or student) if student else who)

    # -- clean-up ----------------------------------------------------------------------------
    def cancel_where(self, match: Callable[[Run], bool], wait: float = 5.0,
                     by: str | None = None) -> list[dict[str, Any]]:
        """Cancel every queued or running run `match` picks; returns their rows (final, or still stopping).
        `by`: who asked (the log says so)."""
        def picked(j: Job) -> bool:
            if j.run is None or not match(j.run):
                return False
            if by:
                self._cancelled_by[j.run.id] = by
            return True

        jobs = self.scheduler.cancel(picked, wait=wait)
        return [self.store.get_run(j.run.id) or j.run.to_dict() for j in jobs]

    def delete_server(self, server_id: str, wait: float = 5.0, reason: str = "deleted") -> dict[str, Any]:
        """Stop a managed server (deleted, or expired: its TTL is over); runs queued or running
        on it are cancelled first."""
        m = self.servers.remove(server_id)
        gone = f"server {server_id} was {reason}"
        self.scheduler.cancel(lambda j: j.needs.server_id == server_id,
                              Stop("cancelled", gone, f"{gone} during the run"), wait=wait)
        info = self.servers.info(m)
        self.servers.stop(m, reason)
        info["running"] = False
        return info

    def delete_servers(self, wait: float = 5.0) -> list[dict[str, Any]]:
        """Stop every managed server (as delete_server each)."""
        out = []
        for server_id in self.servers.ids():
            with contextlib.suppress(NotFound):  # deleted meanwhile
                out.append(self.delete_server(server_id, wait))
        return out

    # -- managed servers -------------------------------------------------------------------
    def create_server(self, spec: dict[str, Any] | ServerSpec, ttl_s: float | None = None) -> dict[str, Any]:
        """Start a managed server, stopped after `ttl_s` (default: config.server_ttl_s; 0: never)."""
        if not isinstance(spec, ServerSpec):
            spec = build_spec(spec, self.config.limits, self.machine)
        self.scheduler.check_open()
        ttl = self.config.server_ttl_s if ttl_s is None else ttl_s
        return self.servers.create(spec, ttl_s=ttl or None)

    def list_servers(self) -> list[dict[str, Any]]:
        return self.servers.list()

    def get_server(self, server_id: str) -> dict[str, Any]:
        return self.servers.info(self.servers.get(server_id))

    # -- events ----------------------------------------------------------------------------
    def subscribe(self, after: int | None = None, run_id: str | None = None,
                  sweep_id: str | None = None) -> Subscription:
        return self.bus.subscribe(after=after, run_id=run_id, sweep_id=sweep_id)

    def availability(self) -> dict[str, dict[str, dict[str, object]]]:
        """What this machine has, per field (kind, storage) and choice: `available`, and `reason` when not."""
        return self.machine.availability(self.config.limits)

    def close_streams(self) -> None:
        """End every event stream now (the service is stopping: clients reconnect with their last id)."""
        self.bus.close_all()

    def replay_start(self) -> int:
        return self.bus.replay_start()

    @property
    def last_event_id(self) -> int:
        return self.bus.last_id

    def stats(self) -> dict[str, Any]:
        """A snapshot for /api/health. Takes no lock (each len() is atomic): health must answer
        at once even while a worker holds the pool's lock across a database commit."""
        return {"workers": self.config.workers, "queued": self.scheduler.queued, "running": self.scheduler.running,
                "queue_size": self.config.queue_size, "servers": len(self.servers),
                "max_servers": self.config.max_servers, "subscribers": self.bus.subscriber_count,
                "last_event_id": self.bus.last_id, "stopping": self.scheduler.stopping}

    def on_event(self, fn: Callable[[Event], None] | None, stop: bool = False) -> None:
        """Have fn(event) called for every event from now on (stop=True: no more), in the publishing
        thread: bookkeeping such as GET /metrics' counters, not a subscription."""
        if fn is not None:
            (self.bus.unlisten if stop else self.bus.listen)(fn)

    def metrics(self) -> dict[str, Any]:
        """What GET /metrics exports besides its own counters: runs by status (the history), the queue,
        the event bus's subscribers and its events published and dropped (since the service started)."""
        return {"runs": self.history.run_counts(), "queued": self.scheduler.queued,
                "running": self.scheduler.running, "queue_size": self.config.queue_size,
                "subscribers": self.bus.subscriber_count, "events_published": self.bus.published,
                "events_dropped": self.bus.dropped}

    def cluster(self) -> dict[str, Any]:
        """Whether measurements go to `lab worker`s, and every worker alive, as its heartbeat says
        (GET /api/v1/workers); without a broker, no cluster and no workers."""
        return {"cluster": self.remote is not None, "workers": self.remote.status() if self.remote else []}

    def waiting(self) -> dict[str, dict[str, Any]]:
        """Queued runs' `queue_position` and `estimated_start_s`, by run id (lab.service.scheduler)."""
        return self.scheduler.waiting()

    def queue(self) -> dict[str, Any]:
        """The queue as it stands: each queued run in the order they will start (its place, when it
        may start, its lane and student), and each worker with its slots and what runs there."""
        waiting = self.scheduler.waiting()
        jobs = self.scheduler.jobs()
        queued = [{"id": j.id, **waiting[j.id], "lane": j.who.lane, "student": j.run.student}
                  for j in jobs if j.status == "queued" and j.run is not None and j.id in waiting]
        workers = [{"id": w.id, "slots": w.slots,
                    "running": [j.id for j in jobs if j.status == "running" and j.worker == w.id]}
                   for w in self.scheduler.workers()]
        return {"runs": queued, "queued": len(queued), "running": sum(len(w["running"]) for w in workers),
                "workers": workers}

    def unfinished_by_student(self) -> dict[str, int]:
        """Runs queued or running per student name."""
        out: dict[str, int] = {}
        for job in self.scheduler.jobs():
            if job.run is not None and job.run.student is not None:
                out[job.run.student] = out.get(job.run.student, 0) + 1
        return out

    # -- the talk: the act the presenter shows, for the audience to follow ---------------------
    def show_act(self, act: str) -> dict[str, Any]:
        """The presenter shows `act` (a key of lab.domain.scenarios.ACTS, or "summary"): a `talk` event."""
        self._talk = {"act": act, "at": time.time()}
        self.bus.publish("talk", **self._talk)
        return dict(self._talk)

    def shown_act(self) -> dict[str, Any]:
        return dict(self._talk)

    def prune_events(self) -> int:
        """Delete progress events of long-finished runs (config retention and cap); returns how many."""
        return self.retention.prune()

    # -- the scheduler's callbacks -------------------------------------------------------------
    def _context(self, job: Job, emit: Any) -> LocalContext:
        """What a job carried out in this process gets: this service's settings and its managed servers."""
        return LocalContext(emit, job.cancel, self.config.core, self.config.image_cache_bytes, servers=self._claim)

    def _claim(self, server_id: str) -> Any:
        managed = self.servers.claim(server_id)
        return managed.server if managed is not None else None

    def _queued(self, job: Job) -> None:
        run = job.run
        if run is not None:  # its job is kept with it: a restart queues it again
            self.bus.publish("state", run.id, run.sweep_id, save_run=run.to_dict(), save_job=job.to_dict(),
                             status="queued", phase="queued")

    def _on_event(self, job: Job, ev: dict[str, Any]) -> None:
        """A job's event: a run's is published (a state change saves the run's row, carried by the
        event, in the same transaction); another job's goes to its listener."""
        run = job.run
        if run is None:
            if job.listener is not None:
                job.listener(ev)
            return
        fields = {k: v for k, v in ev.items() if k not in ("type", "run_id", "row")}
        type_ = ev.get("type", "progress")
        row = ev.get("row") if type_ == "state" else None
        if row is not None:  # the service's Run follows (filters such as cancel-by-status read it)
            if row["status"] == "running" and run.id not in self._started_logged:
                self._started_logged.add(run.id)
                runlog.started(run, job.who)
            run.status, run.started_at = row["status"], row.get("started_at")
        self.bus.publish_safe(type_, run.id, run.sweep_id, save_run=row, **fields)
        if type_ == "state":
            if run.sweep_id is not None:
                self.sweeps.run_started(run.sweep_id)
            self.faults.at_phase(run.id, fields.get("phase"), job.cancel)

    def _finish(self, job: Job) -> None:
        """Commit a run's final row with its `state` event, then announce `done`, then the sweep."""
        run = job.run
        if run is None:
            return
        diskmap.keep_trace(self.store.dir, run)
        row = run.to_dict()
        try:
            self.bus.publish("state", run.id, run.sweep_id, save_run=row, status=run.status, phase="finished")
        except Exception:
            log.exception("saving run %s", run.id)
            with contextlib.suppress(Exception):
                self.store.save_run(row)
        self.faults.after_commit(run.id)
        self._started_logged.discard(run.id)
        runlog.ended(run, job.who, self._cancelled_by.pop(run.id, None))
        self.estimator.learned(run)
        self.bus.publish_safe("done", run.id, run.sweep_id, status=run.status, run=row)
        if run.sweep_id is not None:
            self.sweeps.run_finished(run)
        self.retention.maybe_prune()
