"""`lab worker`: one machine of a cluster, taking measurement jobs from the broker and nothing else.

A worker is a Celery worker (threads pool: a job is execute() with its helper processes, as in the
service) with what makes it a lab machine of its own:

- its own data dir, runtime dir and calibration (its fingerprint: CPU, kernel, tool versions),
  its own limits and allow-lists (LAB_MAX_SIZE, LAB_EXTERNAL_TARGETS...): a job is checked
  against them again on arrival (lab.cluster.jobs);
- its start-up sweep (what a SIGKILLed predecessor left: private dirs, mounts, loop devices),
  and its helpers tied to its life (PR_SET_PDEATHSIG, lab.host.procs): killed -9, it leaves nothing;
- a heartbeat every second on the broker (lab.service.broker): state, slots, running jobs and their
  phase, load, fingerprint, calibration age, capabilities (server kinds, storages, root);
- cancel by Celery remote control (`lab_cancel`), reaching the job's cancel event at once;
- leaving (SIGTERM): it says it is draining, takes nothing new, lets running jobs finish for up to
  `drain_s`, then interrupts them, reports them, and exits 0.

Which job runs where and beside what is decided by the service (lab.service.remote): a worker
never takes jobs from a shared queue, only from its own direct queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from lab.cluster.jobs import Refused, WorkerContext, carry_out, check
from lab.domain.run import WorkerStamp
from lab.host import leftovers, procs
from lab.host.places import Core
from lab.nbd.backends import Machine
from lab.service import broker, wire

log = logging.getLogger("lab.cluster.worker")

_current: LabWorker | None = None  # the worker of this process (Celery's task and control command find it here)


@dataclass
class Running:
    """A job this worker has taken: its cancel event, and what the heartbeat says about it."""

    msg: wire.JobMessage
    cancel: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.time)
    phase: str | None = None
    copying: bool = False  # it reached phase "copy" (a lost job that had not is queued again, once)
    stop_reason: list[str] = field(default_factory=list)


class LabWorker:
    def __init__(self, url: str, name: str, slots: int, core: Core, image_cache_bytes: int | None = None,
                 run_timeout_s: float | None = None, calibrate: bool = True, drain_s: float = 20.0) -> None:
        if not broker.NAME.match(name):
            raise ValueError(f"worker name {name!r}: letters, digits, '.', '_' and '-' only (at most 63)")
        self.url, self.name, self.slots, self.core = broker.check_url(url), name, slots, core
        self.image_cache_bytes, self.run_timeout_s = image_cache_bytes, run_timeout_s
        self.calibrate, self.drain_s = calibrate, drain_s
        self.node = broker.node_name(name)
        self.redis = broker.redis_client(url)
        self.state = "starting"
        self.started_at = time.time()
        self.instance = secrets.token_hex(6)  # this process: a worker restarted under the same name is another
        self._lock = threading.Lock()
        self._jobs: dict[str, Running] = {}
        self._cancelled: OrderedDict[str, float] = OrderedDict()  # cancels that came before their job
        self._stopped = threading.Event()
        self._caps: list[str] = []
        self._machine: dict[str, Any] = {}
        self._fingerprint = ""
        self._service_seen: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def serve(self, loglevel: str = "INFO") -> int:
        """Sweep, heartbeat, calibrate if needed, then take jobs until SIGTERM (drained) or SIGINT."""
        global _current
        from lab.measure import expectation
        from lab.measure.calibration import calibrate

        _current = self
        with contextlib.suppress(OSError):
            swept = leftovers.sweep(self.core.places)
            if swept:
                log.info("start-up sweep: removed %d dirs a previous worker left", swept)
        self._machine = expectation.machine()
        self._fingerprint = expectation.fingerprint(self._machine)
        self._caps = sorted(Machine(self.core.places).capabilities(self.core.limits))
        beat = threading.Thread(target=self._heartbeats, name="lab-heartbeat", daemon=True)
        beat.start()
        try:
            if self.calibrate and expectation.load(places=self.core.places) is None:
                self.state = "calibrating"
                log.info("calibrating this worker once (about a minute)")
                calibrate(places=self.core.places)
            app = self._celery()
            if os.geteuid() == 0:  # Celery warns about root; here it is a choice (loop devices), and JSON only
                from celery.exceptions import SecurityWarning

                warnings.filterwarnings("ignore", category=SecurityWarning)
                log.info("running as root: the storages that need it (loop devices, mounts) are offered")
            # purge: a job that waited in this queue was sent to a predecessor of this name, and the
            # service has placed it again since (it sends only to a worker whose heartbeat says ready)
            w = app.Worker(hostname=self.node, pool="threads", concurrency=self.slots, loglevel=loglevel,
                           without_mingle=True, without_gossip=True, without_heartbeat=True, quiet=True,
                           queues=[broker.queue_name(self.name)], purge=True)
            w.start()
            return w.exitcode or 0
        finally:
            self.state = "gone"
            self._stopped.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):
                self.redis.delete(broker.worker_key(self.name))
            procs.kill_all()
            _current = None

    def _celery(self) -> Any:
        from celery import signals

        app = broker.celery_app(self.url)

        @app.task(name=broker.TASK, ignore_result=True)
        def job(message: Any) -> None:
            self.take(message)

        signals.worker_ready.connect(self._ready, weak=False)
        signals.worker_shutting_down.connect(self._draining, weak=False)
        return app

    def _ready(self, sender: Any = None, **_kw: Any) -> None:
        """Celery consumes our queue: the service may send jobs (it learns so from the next heartbeat)."""
        if self.state == "starting" or self.state == "calibrating":
            self.state = "ready"
            threading.Thread(target=self._beat_once, daemon=True).start()

    def _draining(self, sender: Any = None, **_kw: Any) -> None:
        """SIGTERM: take nothing new (Celery stops consuming), tell the service at once, give running jobs
        `drain_s` to finish, then interrupt them."""
        if self.state == "draining":
            return
        self.state = "draining"
        log.info("leaving: draining %d running jobs (up to %g s)", len(self._jobs), self.drain_s)
        threading.Thread(target=self._beat_once, daemon=True).start()
        timer = threading.Timer(self.drain_s, self.stop_all, args=("the worker left during this run",))
        timer.daemon = True
        timer.start()

    def stop_all(self, reason: str) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop_reason.append(reason)
            job.cancel.set()

    # -- jobs ---------------------------------------------------------------------------------
    def take(self, message: Any) -> None:
        """Carry out one job message, answering on its service's stream (never raises)."""
        try:
            msg = wire.JobMessage.model_validate(message)
        except ValueError as e:
            log.warning("refused a message that is not a job: %s", str(e).splitlines()[0])
            return
        job = Running(msg)
        with self._lock:
            self._jobs[msg.job.id] = job
            if self._cancelled.pop(msg.job.id, None) is not None:
                job.cancel.set()
        seq = iter(range(1, 1 << 62))
        send = lambda type_, data: self._send(msg, next(seq), type_, data)  # noqa: E731
        try:
            send("accepted", self.stamp())
            outcome = self._carry_out(job, send)
        except Exception as e:  # a handler's own failures are in its result; this is ours
            log.exception("job %s", msg.job.id)
            outcome = wire.outcome("failed", error=f"{type(e).__name__}: {e}", started_copying=job.copying)
        finally:
            with self._lock:
                self._jobs.pop(msg.job.id, None)
        self._send_end(msg, next(seq), outcome)

    def _carry_out(self, job: Running, send: Any) -> dict[str, Any]:
        """The job through the service's own handler; its outcome as the LocalExecutor reports one,
        except that a job this worker stopped (leaving, its service gone) is `lost`: the service
        decides what becomes of it."""
        kind, payload = job.msg.job.kind, job.msg.job.payload

        def emit(ev: dict[str, Any]) -> None:
            if ev.get("type") == "state" and ev.get("phase"):
                job.phase = ev["phase"]
                job.copying = job.copying or ev["phase"] == "copy"
            send("event", ev)

        try:
            check(kind, payload, self.core)
        except Refused as e:
            return wire.outcome("failed", error=f"refused by worker {self.name}: {e}")
        result = carry_out(kind, payload, WorkerContext(emit, job.cancel, self.core, self.image_cache_bytes))
        trace = result.pop("trace", None) or [] if isinstance(result, dict) else []
        for i in range(0, len(trace), wire.TRACE_CHUNK):  # lab.nbd.diskmap.TraceRow as JSON
            send("trace", [row.to_dict() for row in trace[i:i + wire.TRACE_CHUNK]])
        if job.stop_reason:  # stopped here, not by its service: the run says so, the service decides the rest
            if isinstance(result.get("run"), dict) and result["run"].get("status") == "cancelled":
                result["run"].update(status="interrupted", error=job.stop_reason[0])
            return wire.outcome("lost", result, job.stop_reason[0], job.copying)
        return wire.outcome("cancelled" if job.cancel.is_set() else "succeeded", result, None, job.copying)

    def _send(self, msg: wire.JobMessage, seq: int, type_: wire.EntryType, data: Any) -> None:
        """One answer on the service's stream; a broker hiccup loses a progress event, not the job."""
        try:
            self.redis.xadd(msg.reply_to, wire.entry(msg.job.id, self.name, seq, type_, data),
                            maxlen=broker.STREAM_MAXLEN, approximate=True)
        except Exception as e:
            log.warning("job %s: answer %d not sent: %s", msg.job.id, seq, e)

    def _send_end(self, msg: wire.JobMessage, seq: int, outcome: dict[str, Any]) -> None:
        """The end must arrive: retried while the broker is away (the service waits for it, or for our
        heartbeat to stop)."""
        for attempt in range(30):
            try:
                self.redis.xadd(msg.reply_to, wire.entry(msg.job.id, self.name, seq, "end", outcome),
                                maxlen=broker.STREAM_MAXLEN, approximate=True)
                # a stream whose service is gone (it deletes its own when it stops) does not stay forever
                self.redis.expire(msg.reply_to, broker.STREAM_KEEP_S, nx=True)
                return
            except Exception as e:
                log.warning("job %s: end not sent (attempt %d): %s", msg.job.id, attempt + 1, e)
                time.sleep(1.0)

    def cancel(self, job_id: str) -> bool:
        """Set a job's cancel event (True), or remember the cancel for a job not yet taken (False)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                self._cancelled[job_id] = time.time()
                while len(self._cancelled) > 1000:
                    self._cancelled.popitem(last=False)
                return False
        job.cancel.set()
        return True

    # -- heartbeats ---------------------------------------------------------------------------
    def stamp(self) -> dict[str, Any]:
        """Which machine runs a job and the calibration its expectation comes from."""
        from lab.measure import expectation

        cal = expectation.load(places=self.core.places)
        stamp: WorkerStamp = {"name": self.name, "fingerprint": self._fingerprint,
                              "calibrated_at": cal.created_at if cal else None}
        return dict(stamp)

    def status(self) -> dict[str, Any]:
        from lab.measure import expectation

        cal = expectation.load(places=self.core.places)
        with self._lock:
            running = [{"job": j.msg.job.id, "kind": j.msg.job.kind, "phase": j.phase, "started_at": j.started_at}
                       for j in self._jobs.values()]
        return {"name": self.name, "instance": self.instance, "node": self.node, "state": self.state,
                "slots": self.slots, "running": running, "load": [round(x, 2) for x in os.getloadavg()],
                "cores": os.cpu_count(),
                "started_at": self.started_at, "heartbeat_at": time.time(), "fingerprint": self._fingerprint,
                "machine": self._machine, "capabilities": self._caps,
                "calibration": None if cal is None else {"created_at": cal.created_at, "took_s": cal.took_s,
                                                         "fingerprint": cal.fingerprint,
                                                         "age_s": round(time.time() - cal.created_at, 1)}}

    def _beat_once(self) -> None:
        import json

        try:
            self.redis.set(broker.worker_key(self.name), json.dumps(self.status()),
                           px=int(broker.LOST_AFTER_S * 1000))
        except Exception as e:
            log.warning("heartbeat not sent: %s", e)

    def _heartbeats(self) -> None:
        while not self._stopped.is_set():
            self._beat_once()
            self._stop_orphans()
            self._stopped.wait(broker.HEARTBEAT_S)

    def _stop_orphans(self) -> None:
        """A job whose service has been gone (its key expired) for LOST_AFTER_S is stopped: nobody
        would record its result, and it would hold this machine."""
        with self._lock:
            services = {j.msg.service for j in self._jobs.values()}
        now = time.time()
        for svc in services:
            try:
                alive = bool(self.redis.exists(broker.service_key(svc)))
            except Exception:
                continue  # the broker is away: that says nothing about the service
            if alive:
                self._service_seen[svc] = now
            elif now - self._service_seen.setdefault(svc, now) > broker.LOST_AFTER_S:
                with self._lock:
                    orphans = [j for j in self._jobs.values() if j.msg.service == svc]
                for job in orphans:
                    if not job.cancel.is_set():
                        log.warning("job %s: its service %s is gone; stopping it", job.msg.job.id, svc)
                        job.stop_reason.append("the service that sent this job is gone")
                        job.cancel.set()


def _register_control() -> None:
    """Celery's remote-control command `lab_cancel` (registered once per process)."""
    from celery.worker.control import control_command

    @control_command(args=[("job_id", str)], signature="<job_id>")
    def lab_cancel(state: Any, job_id: str) -> dict[str, Any]:
        worker = _current
        if worker is None:
            return {"error": "no lab worker here"}
        return {"ok": worker.cancel(str(job_id))}


_register_control()
