"""The event bus: persist, number, fan out; replay for late or lagging subscribers.

`publish()` writes the event to the store (which gives it its global id) and hands it to
every subscriber, in id order, under one lock. Handing over never blocks: each
subscriber has a bounded queue, and one that overflows is not waited for. It is marked
and, on its next read, catches up from the store by its last id (drop-to-resync). So a
slow reader never slows a run or another reader, and never misses or repeats an event.

Subscribers are read from threads (`get`) or from an asyncio loop (`aget`); a wake-up
crosses into the loop with `call_soon_threadsafe`, only when the reader is waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import Any

from lab.service.store import Event, Store

REPLAY_PAGE = 500

log = logging.getLogger("lab.service.events")


def _set_all(flags: list[asyncio.Event]) -> None:
    for flag in flags:
        flag.set()


class EventBus:
    def __init__(self, store: Store, queue_size: int = 1000) -> None:
        self.store = store
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()

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
        wake: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
        with self._lock:
            ev = self.store.append_event(type_, run_id, sweep_id, fields, run=save_run, sweep=save_sweep,
                                         job=save_job)
            for sub in self._subs:
                loop = sub._offer(ev)
                if loop is not None and sub._async_wake is not None:
                    wake.setdefault(loop, []).append(sub._async_wake)
        # One cross-thread wake-up per loop for all its waiting readers, not one per reader:
        # with hundreds of event streams that is most of the fan-out's system calls.
        for loop, flags in wake.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_set_all, flags)
        return ev

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
            self._subs.discard(sub)

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
        self._cursor = 0  # every matching event with id <= cursor has been delivered
        self._replay_upto: int | None = None  # read the store up to here before the live queue
        self._items: deque[Event] = deque()
        self._overflowed = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_wake: asyncio.Event | None = None
        self._async_waiting = False
        self._closed = False

    @property
    def cursor(self) -> int:
        return self._cursor

    def matches(self, ev: Event) -> bool:
        if self.run_id is not None and ev.run_id != self.run_id:
            return False
        return not (self.sweep_id is not None and ev.sweep_id != self.sweep_id)

    # -- publisher side (under the bus lock; must never block) -----------------------------
    def _offer(self, ev: Event) -> asyncio.AbstractEventLoop | None:
        """Queue ev; returns the loop of an asyncio reader waiting for it (the bus wakes it)."""
        if not self.matches(ev):
            return None
        with self._lock:
            if self._closed or self._overflowed:
                return None
            if len(self._items) >= self.maxsize:
                self._overflowed = True
                self.overflows += 1
                self._items.clear()
            else:
                self._items.append(ev)
            self._cond.notify()
            if self._async_waiting and self._loop is not None and self._async_wake is not None:
                self._async_waiting = False
                return self._loop
        return None

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
                self._cond.wait(timeout)
        return self.poll()

    async def aget(self, timeout: float | None = None) -> list[Event]:
        """The asyncio flavour of get(): store reads run in a worker thread."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._async_wake = asyncio.Event()
        assert self._async_wake is not None
        for attempt in range(2):
            if self._needs_store():
                return await asyncio.to_thread(self._read_store)
            batch = self._take_live()
            if batch or attempt:
                return batch
            with self._lock:
                ready = bool(self._items) or self._overflowed or self._closed
                if not ready:
                    self._async_wake.clear()
                    self._async_waiting = True
            if not ready:
                try:
                    await asyncio.wait_for(self._async_wake.wait(), timeout)
                except TimeoutError:
                    pass
                finally:
                    with self._lock:
                        self._async_waiting = False
        return []

    @property
    def closed(self) -> bool:
        return self._closed

    def _end(self) -> None:
        """Wake the reader with `closed` set (it may still drain what it has)."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()
            if self._async_waiting and self._loop is not None and self._async_wake is not None:
                self._async_waiting = False
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._async_wake.set)

    def close(self) -> None:
        self._end()
        with self._lock:
            self._items.clear()
        self.bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

