"""Was the machine quiet enough for this measurement? And which runs need the machine alone?

A copy's time is only comparable with another if nothing else competed for the CPU. Over the
copy, the whole machine's busy CPU time (/proc/stat) minus what the run's own processes used
(its nbdkit(s) from /proc/PID/stat, its client from the rusage of its exit) is what *others*
used. Above CONTENDED_CORES of the copy's wall time, the run is marked `contended`: its time
says more about the neighbours than about the protocol.

Scheduling: a CPU-bound run (a parallel client, a queue depth above 1, or no injected delays)
would disturb, and be disturbed by, anything running beside it, so the worker pool gives it the
machine alone (`cpu_bound`); sleep-bound runs (in-order clients against delayed servers) use a
few percent of a core each and share it.

Observing: while a CPU-bound copy runs, the lab's threads that watch it (a server's debug
readers, the run's progress thread) yield to it (lab.host.cpu.yield_cpu): a SCHED_IDLE thread never
preempts a running task when it wakes and is placed on a core left idle, so they count in the
time the copy leaves over (nbdkit's 1 MiB stderr pipe and the log file hold what is not read
yet). Measured (1 GiB, no delays, qemu-4.2 at queue depth 16, 8 alternating rounds): lab / bare
1.09-1.15 with the watchers at the normal class, 1.05-1.07 with them yielding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lab.domain.spec import ServerSpec
from lab.host import cpu

CONTENDED_CORES = 0.35  # others' CPU, in cores, above which a run's time is not a clean measurement
# Others' CPU from which a sleep-bound copy's variable part (its wake-ups, its requests' round trips) is
# disturbed, though the run is not marked contended (CPU-bound runs need the 0.35 above; a sleep-bound one
# shares the machine by design): measured 2026-12-07 (docs/benchmarks.md, issue 27), a 64 MiB qemu-img
# copy behind 5/2 ms sleeps ran its variable part at 1.33-1.40x its expectation quiet, 1.5-1.7x beside a
# steady 0.2-core spinner and 2.0-2.3x beside 0.3-0.5 cores; in a fidelity pass the six delay-bound rows
# with others at 0.17-0.33 cores ran their variable part at 1.3-4.3x (four outside their interval), the
# rows below 0.07 cores inside. A run outside its interval names others' CPU from here on.
DISTURBS_SLEEPS_CORES = 0.15
# A run whose own processes used this much more CPU than the calibration expects for its counts
# moved its bytes on a slow path of the machine (see slow_copy_path); below the absolute margin the
# difference is noise of a short copy.
SLOW_PATH_FACTOR = 1.3  # own CPU of normal runs stays within +-10% of the CPU fit (measured)
SLOW_PATH_MARGIN_S = 0.05


def cpu_bound(client_parallel: bool, queue_depth: int, spec: ServerSpec) -> bool:
    """Would this run keep a core busy (and so need the machine alone)? See the module's Scheduling."""
    return client_parallel or queue_depth > 1 or (spec.delay_write <= 0 and spec.delay_zero <= 0)


# The keys of a run's `contention` (Window.finish, then slow_copy_path()): the CSV's columns.
FIELDS = ("machine_cores", "own_cores", "others_cores", "stolen_cores", "limit_cores", "client_cpu_known", "contended",
          "own_cpu_s", "expected_own_cpu_s", "slow_copy_path")


@dataclass
class Window:
    """Machine and own CPU over one copy. start(), then finish() with the client's CPU seconds."""

    pids: tuple[int, ...] = ()
    t0: float = 0.0
    busy0: float = 0.0
    own0: float = 0.0
    stolen0: float = 0.0

    def start(self, pids: tuple[int, ...]) -> Window:
        self.pids = pids
        self.t0, self.busy0, self.stolen0 = time.monotonic(), cpu.machine_busy_s(), cpu.stolen_s()
        self.own0 = sum(cpu.process_cpu_s(p) for p in pids) + cpu.self_cpu_s()
        return self

    def finish(self, client_cpu_s: float | None) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self.t0)
        busy = cpu.machine_busy_s() - self.busy0
        own = sum(cpu.process_cpu_s(p) for p in self.pids) + cpu.self_cpu_s() - self.own0 + (client_cpu_s or 0.0)
        others = max(0.0, busy - own) / wall
        # the part of others' CPU the hypervisor took (counted in it: a stolen core is one the copy lacked)
        stolen = max(0.0, cpu.stolen_s() - self.stolen0) / wall
        return {"machine_cores": round(busy / wall, 3), "own_cores": round(own / wall, 3),
                "others_cores": round(others, 3), "stolen_cores": round(min(stolen, others), 3),
                "limit_cores": CONTENDED_CORES,
                "client_cpu_known": client_cpu_s is not None, "contended": others > CONTENDED_CORES,
                "own_cpu_s": round(own, 4)}  # then slow_copy_path() adds expected_own_cpu_s, slow_copy_path


def burned_too_much(own_cpu_s: float, reference_s: float) -> bool:
    """Own CPU above SLOW_PATH_FACTOR x the reference, and by more than the margin: the slow path.
    The one rule for a run against the calibration and for a calibration point's repeats."""
    return own_cpu_s > SLOW_PATH_FACTOR * reference_s and own_cpu_s - reference_s > SLOW_PATH_MARGIN_S


def slow_copy_path(c: dict[str, Any] | None, expected_own_cpu_s: float | None) -> str | None:
    """Judge a run's own CPU against the calibration's expectation for its exact counts; record
    both in the contention dict `c` and return a note when the run took the slow path.

    Why: on this machine about one bandwidth-bound copy in 10-20 takes 1.5-3x as long, bare
    `nbdkit --run` copies as much as the lab's, with the same requests and page faults but that
    much more kernel CPU (perf: the copy of the client's buffer into the socket under sendmsg).
    Others' CPU cannot show it (nobody else ran); the run's own CPU per count can."""
    if not c or expected_own_cpu_s is None or c.get("own_cpu_s") is None or not c.get("client_cpu_known", True):
        return None
    own = c["own_cpu_s"]
    c["expected_own_cpu_s"] = expected_own_cpu_s
    c["slow_copy_path"] = burned_too_much(own, expected_own_cpu_s)
    if not c["slow_copy_path"]:
        return None
    return (f"slow copy path: this run's own processes used {own:.3f} s of CPU where the calibration expects "
            f"{expected_own_cpu_s:.3f} s for the same requests and bytes ({own / expected_own_cpu_s:.1f}x): "
            "the machine moved bytes slowly in this run, so its time overstates the copy's cost "
            "(seen in bare nbdkit copies too; docs/benchmarks.md)")
