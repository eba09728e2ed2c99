"""This machine's CPU, as the kernel accounts it: the machine's busy time, a process's, a reaped
child's, this process's own; and the idle scheduling class for a thread that must not compete.

Primitives only: what they mean for a measurement (contended, CPU-bound, the slow copy path)
is lab.measure.contention's.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess

_TICK = os.sysconf("SC_CLK_TCK")


def yield_cpu(on: bool) -> None:
    """Put the calling thread in the idle scheduling class (`on`) or back in the normal one.

    Only ever the caller itself (pid 0 is the calling thread on Linux): a thread id set from
    outside may, once that thread has ended, name somebody else's process."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: stay as it is
        os.sched_setscheduler(0, os.SCHED_IDLE if on else os.SCHED_OTHER, os.sched_param(0))


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every core, everyone)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def stolen_s() -> float:
    """CPU seconds the hypervisor has taken from this machine since boot (every core): time a virtual CPU
    was ready to run and the host ran someone else (/proc/stat's steal; 0 on bare metal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return int(fields[7]) / _TICK if len(fields) > 7 else 0.0


def process_cpu_s(pid: int) -> float:
    """utime + stime of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(rest[11]) + int(rest[12])) / _TICK


def reap(proc: subprocess.Popen) -> float | None:
    """Wait for a child (setting its returncode) and return its CPU seconds; None when someone
    else (a cancel's kill) reaped it first."""
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except ChildProcessError:
        proc.wait()
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def self_cpu_s() -> float:
    """This process's CPU (the lab's own threads: readers, progress): the run's own work too."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
