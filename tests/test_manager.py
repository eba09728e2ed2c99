"""The run manager and its event bus, without the web layer: real runs, small fast recipes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.service.events import SPACING_PER_READER_S, EventBus, LoopWaker, Subscription
from lab.service.manager import Conflict, Manager, ManagerConfig, NotFound, QueueFull
from lab.service.store import Store

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}
SLOW = {"size": "8M", "delay_write": "60ms", "delay_zero": "1ms"}  # about 2 s


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def manager(store: Store) -> Iterator[Manager]:
    m = Manager(store, ManagerConfig(workers=2, queue_size=4, run_timeout_s=60)).start()
    yield m
    m.shutdown()


def _wait_running(m: Manager, run_id: str) -> None:
    sub = m.subscribe(after=0, run_id=run_id)
    try:
        while True:
            for ev in sub.get(timeout=30):
                if ev.type == "state" and ev.data.get("phase") == "copy":
                    return
                assert ev.type != "done", "the run finished before it was seen copying"
    finally:
        sub.close()


# -- event bus ---------------------------------------------------------------------------------


def test_bus_replays_history_then_live_without_gap(store: Store):
    bus = EventBus(store, queue_size=1000)
    for i in range(10):
        bus.publish("progress", "r1", n=i)
    sub = bus.subscribe(after=3)
    for i in range(10, 15):
        bus.publish("progress", "r1", n=i)
    got: list[int] = []
    while batch := sub.poll():
        got += [e.id for e in batch]
    assert got == list(range(4, 16))
    sub.close()
    assert bus.subscriber_count == 0


def test_slow_subscriber_overflows_then_resyncs_from_the_store(store: Store):
    bus = EventBus(store, queue_size=5)
    slow = bus.subscribe(after=None)
    fast = bus.subscribe(after=None)
    seen_fast: list[int] = []
    for i in range(50):
        bus.publish("progress", "r1" if i % 2 else "r2", n=i)
        seen_fast += [e.id for e in fast.poll()]  # keeps up: never overflows
    assert fast.overflows == 0 and seen_fast == list(range(1, 51))
    assert slow.overflows == 1  # it was dropped, not waited for
    got: list[int] = []
    while batch := slow.poll():
        got += [e.id for e in batch]
    assert got == list(range(1, 51)), "nothing missed, nothing repeated"
    bus.publish("progress", "r1")
    assert [e.id for e in slow.poll()] == [51]


def test_filtered_subscription_and_async_reader(store: Store):
    bus = EventBus(store)

    async def read() -> list[int]:
        sub = bus.subscribe(after=0, run_id="r2")
        got: list[int] = []
        while len(got) < 3:
            got += [e.id for e in await sub.aget(timeout=10)]
        sub.close()
        return got

    def publisher() -> None:
        for i in range(6):
            bus.publish("progress", "r1" if i % 2 == 0 else "r2")

    async def main() -> list[int]:
        task = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(publisher)
        return await task

    assert asyncio.run(main()) == [2, 4, 6]


def test_close_all_ends_waiting_readers(store: Store):
    bus = EventBus(store)

    async def main() -> bool:
        sub = bus.subscribe(after=None)
        reader = asyncio.create_task(sub.aget(timeout=30))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(bus.close_all)
        assert await reader == []
        return sub.closed

    assert asyncio.run(main())


def _all_waiting(subs: list[Subscription]) -> bool:
    return all(sub._waiter is not None for sub in subs)


def test_many_readers_get_a_burst_in_one_write_a_lone_reader_at_once(store: Store):
    """A loop's waiting readers are woken together, spaced by how many there are: 400 readers of one
    run get three quick events in one batch each (one write per stream, not three), while a lone
    reader gets events 20 ms apart one by one, as they come."""
    bus = EventBus(store)

    async def read_twice(sub: Subscription) -> tuple[list[int], list[int]]:
        first = [e.id for e in await sub.aget(timeout=10)]
        return first, [e.id for e in await sub.aget(timeout=10)]

    async def until(cond: Callable[[], bool]) -> None:
        for _ in range(2000):
            if cond():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("the readers never waited")

    async def many() -> tuple[list[tuple[list[int], list[int]]], LoopWaker]:
        subs = [bus.subscribe(after=None, run_id="r1") for _ in range(400)]
        tasks = [asyncio.create_task(read_twice(sub)) for sub in subs]
        await until(lambda: _all_waiting(subs))
        await asyncio.to_thread(bus.publish, "progress", "r1")
        await until(lambda: _all_waiting(subs))  # each has its first batch and waits again
        await asyncio.to_thread(lambda: [bus.publish("progress", "r1", n=i) for i in range(3)])
        got = await asyncio.gather(*tasks)
        for sub in subs:
            sub.close()
        return got, bus.waker(asyncio.get_running_loop())

    got, waker = asyncio.run(many())
    assert all(first == [1] and second == [2, 3, 4] for first, second in got), got[:3]
    assert waker.wakeups == 2 and waker.spacing == pytest.approx(400 * SPACING_PER_READER_S)

    async def lone() -> list[list[int]]:
        sub = bus.subscribe(after=None, run_id="r2")
        batches: list[list[int]] = []

        def publisher() -> None:
            for _ in range(3):
                time.sleep(0.02)
                bus.publish("progress", "r2")

        pub = asyncio.create_task(asyncio.to_thread(publisher))
        while sum(map(len, batches)) < 3:
            batches.append([e.id for e in await sub.aget(timeout=10)])
        await pub
        sub.close()
        return batches

    assert asyncio.run(lone()) == [[5], [6], [7]]


# -- runs ------------------------------------------------------------------------------------------


def test_run_succeeds_with_events_in_order(manager: Manager):
    run = manager.new_run("qemu-img", FAST)
    assert manager.submit(run)["status"] == "queued"
    sub = manager.subscribe(after=0, run_id=run.id)
    row = manager.wait(run.id, 60)
    assert row["status"] == "succeeded", row["error"]
    assert row["backend"]["write_ops"] == 32 and row["verified"] is True
    events = []
    while batch := sub.poll():
        events += batch
    types = [e.type for e in events]
    assert types[0] == "state" and types[-1] == "done"
    phases = [e.data.get("phase") for e in events if e.type == "state"]
    assert phases == ["queued", "setup", "copy", "verify", "finished"]
    done = events[-1].data
    assert done["run"] == row, "the done event carries the committed result"
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_queue_full_cancel_and_conflict(store: Store):
    m = Manager(store, ManagerConfig(workers=1, queue_size=1, run_timeout_s=60)).start()
    try:
        first = m.new_run("qemu-img", SLOW)
        m.submit(first)
        _wait_running(m, first.id)
        second = m.new_run("qemu-img", FAST)
        m.submit(second)
        with pytest.raises(QueueFull):
            m.submit(m.new_run("qemu-img", FAST))
        assert m.cancel(second.id)["status"] == "cancelled"  # queued: at once
        row = m.cancel(first.id)  # running: its processes are stopped
        assert row["status"] == "cancelled" and row["error"] == "cancelled"
        with pytest.raises(Conflict):
            m.cancel(first.id)
        with pytest.raises(NotFound):
            m.cancel("nope")
        assert m.stats()["queued"] == 0
    finally:
        m.shutdown()


def test_timeout_fails_the_run(store: Store):
    m = Manager(store, ManagerConfig(workers=1, run_timeout_s=0.5)).start()
    try:
        run = m.new_run("qemu-img", SLOW)
        m.submit(run)
        row = m.wait(run.id, 60)
        assert row["status"] == "failed" and "timed out" in row["error"]
    finally:
        m.shutdown()


def test_sweep_runs_rows_with_overrides(manager: Manager):
    sweep = manager.start_sweep("reference", only=["ref-none", "ref-plugin-default"], overrides=FAST)
    assert sweep["total"] == 2 and sweep["overrides"]["size"] == 8 << 20
    sub = manager.subscribe(after=0, sweep_id=sweep["id"])
    for rid in sweep["run_ids"]:
        manager.wait(rid, 60)
    final = manager.get_sweep(sweep["id"])
    assert final["status"] == "succeeded" and final["counts"] == {"succeeded": 2}
    runs = [manager.get_run(r) for r in sweep["run_ids"]]
    assert [r["label"] for r in runs] == ["ref-none", "ref-plugin-default"]
    assert all(r["sweep_id"] == sweep["id"] and r["reference"] is None for r in runs)
    events = []
    while batch := sub.poll():
        events += batch
    assert events[-1].type == "sweep_done" and events[-1].data["sweep"]["status"] == "succeeded"
    with pytest.raises(NotFound):
        manager.start_sweep("reference", only=["no-such-row"])
    with pytest.raises(QueueFull):  # 19 rows never fit a queue of 4: nothing is queued
        manager.start_sweep("case-study", overrides=FAST)
    assert manager.stats()["queued"] == 0


def test_runs_on_a_managed_server_take_turns(manager: Manager):
    info = manager.create_server({**FAST, "zeromode": "plugin"})
    runs = [manager.new_run("qemu-img", server_id=info["id"]) for _ in range(2)]
    for r in runs:
        manager.submit(r)
    rows = [manager.wait(r.id, 60) for r in runs]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert all(r["server_id"] == info["id"] for r in rows)
    assert [r["backend"]["zero_ops"] for r in rows] == [4, 4], "each run counts its own requests"
    assert manager.get_server(info["id"])["runs"] == 2
    manager.delete_server(info["id"])
    with pytest.raises(NotFound):
        manager.get_server(info["id"])


def test_shutdown_interrupts_what_runs_keeps_the_queue_and_leaves_nothing(store: Store, no_leftovers):
    m = Manager(store, ManagerConfig(workers=1, queue_size=4)).start()
    server = m.create_server(FAST)
    running = m.new_run("qemu-img", SLOW)
    queued = m.new_run("qemu-img", FAST)
    on_server = m.new_run("qemu-4.2", server_id=server["id"])
    m.submit(running)
    m.submit(queued)
    m.submit(on_server)
    _wait_running(m, running.id)
    t = threading.Thread(target=m.shutdown)
    t.start()
    t.join(30)
    assert not t.is_alive()
    row = store.get_run(running.id)
    assert row["status"] == "interrupted", row
    assert store.closing_event_id("run", running.id) is not None
    assert store.get_run(queued.id)["status"] == "queued", "a queued run stays queued for the next start"
    assert store.get_run(on_server.id)["status"] == "interrupted", "its managed server stopped with the service"
    assert [j["id"] for j in store.queued_jobs()] == [queued.id]
    store.close()
    store2 = Store(store.dir)  # the next start queues it again
    try:
        again = Manager(store2, ManagerConfig(workers=1, queue_size=4)).start()
        try:
            assert again.wait(queued.id, 60)["status"] == "succeeded"
        finally:
            again.shutdown()
    finally:
        store2.close()
