"""The service's side of cluster mode: an Executor (lab.service.scheduler) whose machines are `lab worker`s.

The scheduler decides which job runs on which worker and beside what (the JOB CONTRACT); this
executor only carries that out over the broker (lab.service.broker):

- workers(): the `lab worker`s whose heartbeat says `ready`, with their slots and capabilities, from a
  monitor thread that reads the heartbeats every second (a call costs nothing);
- launch(): one Celery task message to that worker's own queue;
- what comes back (accepted, events, trace chunks, end) is read from this service's stream by one
  reader thread, in stream order, so each job's events reach the scheduler in the order they were
  emitted; entries from a worker the job is not placed on are ignored (a stale copy is cancelled);
- a worker whose heartbeat stops (killed, cut off), or that came back as a new process, or that left
  (draining) before taking a job it was sent: its jobs end `lost` (the scheduler re-queues one that
  had not started copying, once, and records the others `interrupted`);
- cancel(): Celery remote control (`lab_cancel`) to that worker alone: its cancel event is set at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lab.nbd.diskmap import TraceRow
from lab.service import broker, wire
from lab.service.jobs import Job
from lab.service.scheduler import LOCAL, Report, Worker

log = logging.getLogger("lab.service.remote")

UNACCEPTED_S = 30.0  # a job sent to a ready worker and not taken this long after is taken back (lost)
BROKER_GONE_S = 3 * broker.LOST_AFTER_S  # the broker unreachable this long: every remote job is lost


@dataclass
class Remote:
    """A job handed to a worker, as this service follows it."""

    job: Job
    worker: str
    instance: str  # the worker process it was sent to (a worker restarted under its name is another)
    report: Report
    sent_at: float = field(default_factory=time.monotonic)
    accepted: bool = False
    copying: bool = False
    last_seq: int = 0
    trace: list[Any] = field(default_factory=list)
    stamp: dict[str, Any] | None = None


class CeleryExecutor:
    def __init__(self, url: str, service: str | None = None) -> None:
        self.url = broker.check_url(url)
        self.service = service or f"svc-{secrets.token_hex(6)}"
        self.stream = broker.events_key(self.service)
        self.app = broker.celery_app(url)
        self.redis = broker.redis_client(url)
        self._lock = threading.Lock()
        self._jobs: dict[str, Remote] = {}
        self._beats: dict[str, dict[str, Any]] = {}  # every worker seen alive: its last heartbeat
        self._workers: list[Worker] = []
        self._report: Report | None = None  # told when machines change (the last one launch() was given)
        self._stop = threading.Event()
        self._broker_ok_at = time.monotonic()
        self._threads = [threading.Thread(target=self._monitor, name="lab-cluster-monitor", daemon=True),
                         threading.Thread(target=self._reader, name="lab-cluster-reader", daemon=True)]
        self._started = False

    # -- Executor -----------------------------------------------------------------------------
    def start(self) -> CeleryExecutor:
        if not self._started:
            self._started = True
            try:
                self._refresh()  # the workers there are now, before the scheduler first asks
            except Exception as e:  # the broker is not up yet: the monitor keeps trying
                log.warning("cluster: broker %s not reachable yet: %s", broker.redact(self.url), e)
            for t in self._threads:
                t.start()
        return self

    def workers(self) -> list[Worker]:
        return list(self._workers)

    def bind(self, report: Report) -> None:
        """Whom to tell when workers come and go (the scheduler), before the first launch."""
        self._report = report

    def launch(self, job: Job, worker_id: str, report: Report) -> None:
        self._report = self._report or report
        beat = self._beats.get(worker_id) or {}
        remote = Remote(job, worker_id, str(beat.get("instance", "")), report)
        msg = wire.JobMessage(job=job.to_dict(), service=self.service, reply_to=self.stream).model_dump()
        with self._lock:
            self._jobs[job.id] = remote
        try:
            self.app.send_task(broker.TASK, args=[msg], queue=broker.queue_name(worker_id))
        except Exception as e:  # the broker is away: nothing was sent, the job goes back to the scheduler
            log.warning("job %s: not sent to %s: %s", job.id, worker_id, e)
            self._lose(remote, f"not sent to worker {worker_id}: {type(e).__name__}")

    def cancel(self, job_id: str) -> None:
        with self._lock:
            remote = self._jobs.get(job_id)
        if remote is not None:
            self._send_cancel(remote.worker, job_id)

    def close(self) -> None:
        """Stop following: jobs still out are cancelled on their workers (this service will not record
        them); the service's key and stream go."""
        self._stop.set()
        with self._lock:
            remotes = list(self._jobs.values())
        for r in remotes:
            self._send_cancel(r.worker, r.job.id)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=3)
        with contextlib.suppress(Exception):
            self.redis.delete(broker.service_key(self.service), self.stream)

    # -- what the service shows -----------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Every worker alive now, as its heartbeat says, with the jobs this service has on it."""
        with self._lock:
            on: dict[str, list[str]] = {}
            for r in self._jobs.values():
                on.setdefault(r.worker, []).append(r.job.id)
            beats = dict(self._beats)
        out = []
        for name, b in sorted(beats.items()):
            cal = b.get("calibration") or None
            out.append({
                "name": name, "state": b.get("state"), "slots": b.get("slots"),
                "running": [j.get("job") for j in b.get("running") or []], "jobs_here": on.get(name, []),
                "load": b.get("load"), "cores": b.get("cores"), "fingerprint": b.get("fingerprint"),
                "machine": b.get("machine"), "capabilities": b.get("capabilities") or [],
                "calibrated_at": cal.get("created_at") if cal else None,
                # ages as the worker's own clock measures them, plus how old the heartbeat is (its key's
                # expiry, on the broker's clock): no two machines' clocks are compared
                "calibration_age_s": round(cal["age_s"] + b["_age_s"], 1) if cal and "age_s" in cal else None,
                "heartbeat_at": b.get("heartbeat_at"), "heartbeat_age_s": round(b["_age_s"], 2),
                "started_at": b.get("started_at")})
        return out

    # -- the monitor: heartbeats, lost workers ---------------------------------------------------
    def _monitor(self) -> None:
        while not self._stop.wait(broker.HEARTBEAT_S):
            try:
                self._refresh()
            except Exception as e:  # the broker is away; after BROKER_GONE_S every remote job is lost
                log.warning("cluster: broker not reachable: %s", e)
                if time.monotonic() - self._broker_ok_at > BROKER_GONE_S:
                    self._lose_where(lambda _r: True, "the broker was unreachable")
                    self._set_workers({})

    def _refresh(self) -> None:
        self.redis.set(broker.service_key(self.service), "1", px=int(broker.LOST_AFTER_S * 1000))
        self.redis.expire(self.stream, broker.STREAM_KEEP_S)  # kept while this service reads it
        keys = list(self.redis.scan_iter(match=broker.worker_key("*"), count=1000))
        beats: dict[str, dict[str, Any]] = {}
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        got = pipe.execute() if keys else []
        for raw, ttl_ms in zip(got[::2], got[1::2], strict=True):
            with contextlib.suppress(ValueError, TypeError):
                b = json.loads(raw) if raw else None
                if isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"] != LOCAL:
                    b["_age_s"] = max(0.0, broker.LOST_AFTER_S - max(0, int(ttl_ms)) / 1000)
                    beats[b["name"]] = b
        self._broker_ok_at = time.monotonic()
        self._set_workers(beats)
        self._lose_where(lambda r: self._gone(r, beats), None)

    def _gone(self, r: Remote, beats: dict[str, dict[str, Any]]) -> str | None:
        """Why a job's worker can no longer carry it out (None: it still can)."""
        b = beats.get(r.worker)
        if b is None:
            return f"worker {r.worker} was lost (no heartbeat for {broker.LOST_AFTER_S:g} s)"
        if r.instance and str(b.get("instance", "")) != r.instance:
            return f"worker {r.worker} restarted during the job"
        if not r.accepted and b.get("state") == "draining":
            return f"worker {r.worker} left before taking the job"
        if not r.accepted and time.monotonic() - r.sent_at > UNACCEPTED_S:
            return f"worker {r.worker} did not take the job within {UNACCEPTED_S:g} s"
        return None

    def _set_workers(self, beats: dict[str, dict[str, Any]]) -> None:
        ready = [Worker(name, int(b.get("slots") or 1), frozenset(b.get("capabilities") or ()), b)
                 for name, b in sorted(beats.items()) if b.get("state") == "ready"]
        changed = [(w.id, w.slots, w.capabilities) for w in ready] != \
                  [(w.id, w.slots, w.capabilities) for w in self._workers]
        with self._lock:
            self._beats = beats
            self._workers = ready
        if changed and self._report is not None:
            with contextlib.suppress(Exception):
                self._report.workers_changed()

    def _lose_where(self, why: Any, reason: str | None) -> None:
        with self._lock:
            remotes = list(self._jobs.values())
        for r in remotes:
            because = reason or why(r)
            if because:
                self._lose(r, because)

    def _lose(self, r: Remote, why: str) -> None:
        """The job is no longer this worker's: the scheduler decides (queued again, or interrupted)."""
        with self._lock:
            if self._jobs.get(r.job.id) is not r:
                return
            del self._jobs[r.job.id]
        log.warning("job %s: %s", r.job.id, why)
        threading.Thread(target=r.report.finished, name=f"lab-cluster-lost-{r.job.id}", daemon=True,
                         args=(r.job.id, wire.outcome("lost", None, why, r.copying))).start()
        self._send_cancel(r.worker, r.job.id)  # should it still be running there, it stops

    def _send_cancel(self, worker: str, job_id: str) -> None:
        try:
            self.app.control.broadcast(broker.CANCEL, arguments={"job_id": job_id},
                                       destination=[broker.node_name(worker)], reply=False)
        except Exception as e:
            log.warning("job %s: cancel not sent to %s: %s", job_id, worker, e)

    # -- the reader: what the workers say, in order ----------------------------------------------
    def _reader(self) -> None:
        last = "$"
        while not self._stop.is_set():
            try:
                got = self.redis.xread({self.stream: last}, block=1000, count=500)
            except Exception as e:
                log.warning("cluster: reading events: %s", e)
                self._stop.wait(1.0)
                continue
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._entry(fields)
                with contextlib.suppress(Exception):
                    self.redis.xtrim(self.stream, minid=last)  # read: only this reader needed them
                    self.redis.xdel(self.stream, last)

    def _entry(self, fields: dict[str, str]) -> None:
        try:
            job_id, worker, seq, type_, data = wire.read_entry(fields)
        except ValueError as e:
            log.warning("cluster: %s", e)
            return
        with self._lock:
            r = self._jobs.get(job_id)
        if r is None or r.worker != worker:  # a job taken back from that worker: it must not go on there
            if type_ != "end":
                self._send_cancel(worker, job_id)
            return
        if seq <= r.last_seq:
            return
        r.last_seq = seq
        if type_ == "accepted":
            r.accepted, r.stamp = True, data
        elif type_ == "event":
            if data.get("type") == "state" and data.get("phase") == "copy":
                r.copying = True
            if isinstance(data.get("row"), dict) and r.stamp:  # watchers see where it runs while it runs
                data["row"]["worker"] = r.stamp
            r.report.event(job_id, data)
        elif type_ == "trace":
            r.trace.extend(TraceRow(**row) for row in data)
        else:
            self._end(r, data)

    def _end(self, r: Remote, outcome: dict[str, Any]) -> None:
        with self._lock:
            if self._jobs.get(r.job.id) is not r:
                return
            del self._jobs[r.job.id]
        result = outcome.get("result")
        if isinstance(result, dict) and "run" in result:
            result["trace"] = r.trace or None
            if isinstance(result["run"], dict) and r.stamp:
                result["run"]["worker"] = r.stamp
        outcome["started_copying"] = bool(outcome.get("started_copying")) or r.copying
        r.report.finished(r.job.id, outcome)
