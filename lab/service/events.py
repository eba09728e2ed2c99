"""The event bus: persist, number, fan out; replay for late or lagging subscribers.

`publish()` writes the event to the store (which gives it its global id) and hands it to
every subscriber, in id order, under one lock. Handing over never blocks: each
subscriber has a bounded queue, and one that overflows is not waited for. It is marked
and, on its next read, catches up from the store by its last id (drop-to-resync). So a
slow reader never slows a run or another reader, and never misses or repeats an event.

Subscribers are read from threads (`get`) or from an asyncio loop (`aget`); a wake-up
crosses into the loop with `call_soon_threadsafe`, only when the reader is waiting, once for
all of that loop's waiting readers (LoopWaker). An asyncio reader waits on a bare future (no
task, no timer per wait: with a thousand readers of one run those were a third of the
fan-out's CPU) and its idle time-out is one timer at a time, moved on only when it fires.

A loop's readers are woken at most once per `spacing`, which grows with how many were woken
the time before (SPACING_PER_READER_S each, up to SPACING_MAX_S). A stream's cost is per write,
not per byte (most of it the socket send: in a py-spy profile of 1,000 watchers the transport's
write held 83% of the samples of the response's send path), so with a thousand readers of one run each write
carries the events of 150 ms, about three progress events instead of one: bench/streaming.py
went from 0.69 to 0.41 cores, per-event p95 from 103 to 187 ms. A lone reader, or the first
event after a quiet spell, is woken at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from lab.service.store import Event, Store

REPLAY_PAGE = 500

log = logging.getLogger("lab.service.events")


SPACING_PER_READER_S = 150e-6  # a loop's next wake-up waits this long per reader woken in its last one
SPACING_MAX_S = 0.2  # whatever the audience: an event reaches every reader within this of the one before


def _wake_all(waiters: list[asyncio.Future[bool]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(True)


class LoopWaker:
    """The wake-ups of one event loop's waiting readers: the publisher adds their futures (any
    thread); the loop wakes them all at once, no sooner than `spacing` after its last wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()  # not the bus lock: publish() holds that across a commit
        self._pending: list[asyncio.Future[bool]] = []
        self._armed = False  # a wake-up is on its way (call_soon_threadsafe or a timer)
        self.last = -1e9  # loop time of the last wake-up
        self.spacing = 0.0
        self.wakeups = 0  # how many times readers were woken (what the tests read)

    def add(self, waiters: list[asyncio.Future[bool]]) -> None:
        with self._lock:
            self._pending += waiters
            if self._armed:
                return  # they ride on the wake-up already on its way
            self._armed = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting on it
            self.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        delay = self.last + self.spacing - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._fire)
        else:
            self._fire()

    def _fire(self) -> None:
        with self._lock:
            waiters, self._pending = self._pending, []
            self._armed = False
        self.last = self.loop.time()
        self.spacing = min(SPACING_MAX_S, len(waiters) * SPACING_PER_READER_S)
        self.wakeups += 1
        _wake_all(waiters)


class EventBus:
    def __init__(self, store: Store, queue_size: int = 1000) -> None:
        self.store = store
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self.published = 0  # events published since the bus started (GET /metrics)
        self._listeners: list[Callable[[Event], None]] = []  # called with each event, after the fan-out
        self._dropped_gone = 0  # events dropped from the live queues of subscriptions since closed
        self._lock_wakers = threading.Lock()
        self._wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopWaker] = weakref.WeakKeyDictionary()

    @property
    def last_id(self) -> int:
        return self.store.last_event_id

    def publish(
        self,
        type_: str,
        run_id: str | None = None,
        sweep_id: str | None = None,
        *,
        save_run: dict[str, Any] | None = None,
        save_sweep: dict[str, Any] | None = None,
        save_job: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Event:
        """Persist (with the `save_run`/`save_sweep`/`save_job` rows in the same transaction), then fan out."""
        wake: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
        with self._lock:
            ev = self.store.append_event(type_, run_id, sweep_id, fields, run=save_run, sweep=save_sweep,
                                         job=save_job)
            self.published += 1
            for sub in self._subs:
                waiter = sub._offer(ev)
                if waiter is not None:
                    wake.setdefault(waiter.get_loop(), []).append(waiter)
        # One cross-thread wake-up per loop for all its waiting readers, not one per reader:
        # with hundreds of event streams that is most of the fan-out's system calls.
        for loop, waiters in wake.items():
            self.waker(loop).add(waiters)
        for listen in self._listeners:
            try:
                listen(ev)
            except Exception:  # a listener (metrics) must never fail a publish
                log.exception("event listener %r on event %d", listen, ev.id)
        return ev

    def waker(self, loop: asyncio.AbstractEventLoop) -> LoopWaker:
        with self._lock_wakers:
            w = self._wakers.get(loop)
            if w is None:
                w = self._wakers[loop] = LoopWaker(loop)
            return w

    def listen(self, fn: Callable[[Event], None]) -> None:
        """Call fn(event) for every event published from now on, in the publisher's thread, after
        the fan-out: for cheap bookkeeping (counters), not a subscriber (nothing queued, not counted)."""
        self._listeners.append(fn)

    def unlisten(self, fn: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def publish_safe(self, type_: str, run_id: str | None = None, sweep_id: str | None = None, **kw: Any) -> None:
        """publish(), logging a failure instead of raising (for announcements nothing waits on)."""
        try:
            self.publish(type_, run_id, sweep_id, **kw)
        except Exception:
            log.exception("publishing a %s event", type_)

    def subscribe(
        self,
        after: int | None = None,
        run_id: str | None = None,
        sweep_id: str | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Events with id > `after` (None: only new ones), optionally for one run or sweep.

        Registration and the replay cut-off are taken under the publish lock, so the
        replay (from the store, up to the cut-off) and the live queue (after it) meet
        without a gap or an overlap.
        """
        sub = Subscription(self, run_id, sweep_id, queue_size or self.queue_size)
        with self._lock:
            cutoff = self.last_id
            start = cutoff if after is None else min(after, cutoff)
            sub._cursor = start
            sub._replay_upto = cutoff if start < cutoff else None
            self._subs.add(sub)
        return sub

    def replay_start(self) -> int:
        """Where a new global subscriber without Last-Event-ID starts: just before the oldest
        event of anything still queued or running (so it sees their history), else now."""
        runs, sweeps = self.store.active_ids()
        first = self.store.first_event_id(runs, sweeps) if (runs or sweeps) else None
        return self.last_id if first is None else first - 1

    def _resync_point(self, sub: Subscription) -> int:
        with self._lock:
            cutoff = self.last_id
            sub._reset_overflow()
            return cutoff

    def close_all(self) -> None:
        """End every subscription (readers see `closed`): the service is going away."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._end()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.discard(sub)
                self._dropped_gone += sub.dropped

    @property
    def dropped(self) -> int:
        """Events dropped from a subscriber's live queue when it fell behind (each caught up from the
        database: none is lost to the reader), since the bus started."""
        with self._lock:
            return self._dropped_gone + sum(sub.dropped for sub in self._subs)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)  # no lock: publish() holds it across a database commit


class Subscription:
    """One reader's view of the bus. Not shared between readers; close() when done."""

    def __init__(self, bus: EventBus, run_id: str | None, sweep_id: str | None, maxsize: int) -> None:
        self.bus = bus
        self.run_id = run_id
        self.sweep_id = sweep_id
        self.maxsize = maxsize
        self.overflows = 0  # how many times this reader fell behind and resynced
        self.dropped = 0  # events its live queue let go (read from the store instead)
        self._cursor = 0  # every matching event with id <= cursor has been delivered
        self._replay_upto: int | None = None  # read the store up to here before the live queue
        self._items: deque[Event] = deque()
        self._overflowed = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread_waiting = False  # a thread reader is in get(): notify it
        self._waiter: asyncio.Future[bool] | None = None  # an asyncio reader's wait in aget()
        self._timer: asyncio.TimerHandle | None = None  # its idle time-out (see _idle)
        self._last = 0.0  # loop time of aget's last answer: the idle time-out counts from it
        self._closed = False

    @property
    def cursor(self) -> int:
        return self._cursor

    def matches(self, ev: Event) -> bool:
        if self.run_id is not None and ev.run_id != self.run_id:
            return False
        return not (self.sweep_id is not None and ev.sweep_id != self.sweep_id)

    # -- publisher side (under the bus lock; must never block) -----------------------------
    def _offer(self, ev: Event) -> asyncio.Future[bool] | None:
        """Queue ev; returns the future an asyncio reader waits on (the bus wakes it in its loop)."""
        if not self.matches(ev):
            return None
        with self._lock:
            if self._closed:
                return None
            if self._overflowed:
                self.dropped += 1
                return None
            if len(self._items) >= self.maxsize:
                self._overflowed = True
                self.overflows += 1
                self.dropped += len(self._items) + 1
                self._items.clear()
            else:
                self._items.append(ev)
            if self._thread_waiting:
                self._cond.notify()
            waiter, self._waiter = self._waiter, None
        return waiter

    def _reset_overflow(self) -> None:
        with self._lock:
            self._overflowed = False
            self._items.clear()

    # -- reader side ------------------------------------------------------------------------
    def _needs_store(self) -> bool:
        with self._lock:
            overflowed = self._overflowed
        if overflowed:
            self._replay_upto = self.bus._resync_point(self)
        return self._replay_upto is not None and self._cursor < self._replay_upto

    def _read_store(self) -> list[Event]:
        assert self._replay_upto is not None
        page = self.bus.store.events_after(self._cursor, self._replay_upto, self.run_id, self.sweep_id,
                                           limit=REPLAY_PAGE)
        if len(page) < REPLAY_PAGE:
            self._cursor = self._replay_upto
            self._replay_upto = None
        if page:
            self._cursor = max(self._cursor, page[-1].id)
        return page

    def _take_live(self) -> list[Event]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        out = [ev for ev in items if ev.id > self._cursor]
        if out:
            self._cursor = out[-1].id
        return out

    def poll(self) -> list[Event]:
        """Whatever is ready now (may read the store), without waiting."""
        if self._needs_store():
            return self._read_store()
        return self._take_live()

    def get(self, timeout: float | None = None) -> list[Event]:
        """Block (in a thread) until events are ready or `timeout` passes; [] on timeout."""
        batch = self.poll()
        if batch:
            return batch
        with self._lock:
            if not self._items and not self._overflowed and not self._closed:
                self._thread_waiting = True
                try:
                    self._cond.wait(timeout)
                finally:
                    self._thread_waiting = False
        return self.poll()

    async def aget(self, timeout: float | None = None) -> list[Event]:
        """The asyncio flavour of get(): store reads run in a worker thread. One reader per
        subscription; `timeout` counts from this reader's previous answer."""
        loop = asyncio.get_running_loop()
        if not self._last:
            self._last = loop.time()
        for attempt in range(2):
            if self._needs_store():
                batch = await asyncio.to_thread(self._read_store)
                self._last = loop.time()
                return batch
            batch = self._take_live()
            if batch or attempt:
                self._last = loop.time()
                return batch
            with self._lock:
                waiter = None
                if not (self._items or self._overflowed or self._closed):
                    waiter = self._waiter = loop.create_future()
            if waiter is not None:
                if timeout is not None and self._timer is None:
                    self._timer = loop.call_at(self._last + timeout, self._idle, timeout)
                try:
                    await waiter
                finally:
                    with self._lock:
                        if self._waiter is waiter:
                            self._waiter = None
        self._last = loop.time()
        return []

    def _idle(self, timeout: float) -> None:
        """The idle timer (in the reader's loop): wake a reader that has waited `timeout` since its
        last answer (aget answers []); else move on to that moment. Never more than one timer."""
        self._timer = None
        with self._lock:
            waiter = self._waiter
            if self._closed or waiter is None:
                return  # not waiting: its next aget() sets the timer again
            due = self._last + timeout
            loop = waiter.get_loop()
            if loop.time() >= due - 0.001:
                self._waiter = None
            else:
                waiter = None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(False)
        else:
            self._timer = loop.call_at(due, self._idle, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def _end(self) -> None:
        """Wake the reader with `closed` set (it may still drain what it has)."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):
                waiter.get_loop().call_soon_threadsafe(_wake_all, [waiter])

    def close(self) -> None:
        self._end()
        with self._lock:
            self._items.clear()
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

