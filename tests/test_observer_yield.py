"""The lab's watchers yield the CPU to a CPU-bound copy (lab.host.cpu.yield_cpu), and only then.

Read-only checks of real threads' scheduling class: a server's debug readers and a run's
progress thread are SCHED_IDLE while a copy without delays runs, normal otherwise."""

from __future__ import annotations

import os
import threading

from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.measure.execute import execute
from lab.nbd.servers import Server


def _progress_classes(spec_fields: dict, client: str = "qemu-4.2", depth: int = 16) -> set[int]:
    """The scheduling class of the run's progress thread at each progress event it sent."""
    seen: set[int] = set()

    def sink(event: dict) -> None:
        if event.get("type") == "progress" and threading.current_thread().name.startswith("progress-"):
            seen.add(os.sched_getscheduler(0))

    run = execute(Run(client=client, server=build_spec(spec_fields), queue_depth=depth), on_event=sink)
    assert run.status == "succeeded", run.error
    return seen


def test_a_cpu_bound_copy_is_watched_from_the_idle_class(no_leftovers):
    classes = _progress_classes({"size": "128M", "pattern": "full", "maxdata": "256k", "delay_write": "0ms",
                                 "delay_zero": "0ms", "zeromode": "plugin"})
    assert classes == {os.SCHED_IDLE}


def test_a_sleep_bound_copy_is_watched_at_the_normal_class(no_leftovers):
    classes = _progress_classes({"size": "8M", "pattern": "full", "maxdata": "256k", "delay_write": "1ms",
                                 "delay_zero": "1ms"}, client="qemu-2.8", depth=1)
    assert classes == {os.SCHED_OTHER}


def test_the_debug_readers_switch_class_and_back(no_leftovers):
    spec = build_spec({"size": "8M", "delay_write": "0ms", "delay_zero": "0ms"})
    with Server(spec) as srv:
        tids = [n.thread.native_id for n in srv._nbdkits if n.thread is not None]
        assert tids and all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in tids)
        srv.observers_yield(True)
        srv.sync()  # a request: each reader reads its lines, and applies the wish to itself
        assert all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids)
        srv.observers_yield(False)
        srv.sync()
        assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in tids)
