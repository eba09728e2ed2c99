"""Shared plumbing for the bench scripts: private dirs, tables, verdicts, machine notes.

Every script prints GitHub-style pipe tables (so the output pastes into docs/benchmarks.md)
with the target and PASS/MISS next to each figure. Scripts take `--quick` (tiny sizes,
seconds, used by tests/test_bench_smoke.py) and `--json PATH` (raw figures, for run_all).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.domain.spec import ServerSpec

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MiB = 1 << 20


def setup_env() -> Path:
    """Private runtime/data dirs for this process; the image cache is shared (building is slow).

    Call before any lab code spawns a server. LAB_IMAGE_DIR defaults to the project's own
    cache (var/images), the one `lab run` fills, so a re-run finds its images built.
    """
    tmp = Path(tempfile.mkdtemp(prefix="fzl-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["LAB_RUNTIME_DIR"] = str(tmp / "run")
    os.environ["LAB_DATA_DIR"] = str(tmp / "data")
    os.environ.setdefault("LAB_IMAGE_DIR", str(ROOT / "var" / "images"))
    # the machine's calibration (lab calibrate) is shared too: it is per machine, not per script
    os.environ.setdefault("LAB_CALIBRATION_FILE", str(ROOT / "var" / "calibration.json"))
    if ROOT not in map(Path, sys.path):
        sys.path.insert(0, str(ROOT))
    # A bench script is a driver: the environment above (inherited by the services it starts)
    # also becomes this process's places, which the core is handed or falls back to (lab.host.places).
    from lab.config import Settings
    from lab.host.places import Places, use

    use(Places.from_settings(Settings()))
    return tmp


def strip_debug(argv: list[str]) -> list[str]:
    """The lab's nbdkit argv without its instrumentation (-v and the datapath debug stream)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "-v":
            continue
        if a == "-D":
            skip = True
            continue
        out.append(a)
    return out


def bare_argv(spec: ServerSpec, workdir: Path, run: str | None = None, debug: bool = False) -> list[str]:
    """The lab's nbdkit stack for `spec`, run bare in `workdir` (socket `workdir/nbd.sock`, the log
    filter's file `workdir/wire.log`): without the lab's `-v -D` debug stream unless `debug`, and
    with `--run RUN` when given (nbdkit starts, runs RUN with $uri set, stops, exits with its status).
    """
    from lab.nbd.servers import build_argv  # after setup_env(): lab reads its dirs on import

    argv = build_argv(spec, workdir / "nbd.sock", workdir / "wire.log", workdir / "stats.txt")
    if not debug:
        argv = strip_debug(argv)
    return argv if run is None else [argv[0], "--run", run, *argv[1:]]


@dataclass
class BareCopy:
    """One copy by a client binary inside `nbdkit --run` on the bare stack."""

    client_s: float  # the client alone, spawn to exit (bench/_timed.py): what the lab clocks
    wall_s: float  # the whole `nbdkit --run`, nbdkit's own start and stop included
    wire_log: str | None  # the log filter's file, when asked for (bench/_timeline.py reads it)


def bare_copy(spec: ServerSpec, client: Sequence[str], *, debug: bool = False, keep_log: bool = False) -> BareCopy:
    """Run `client ... "$uri"` inside `nbdkit --run`, clocked by bench/_timed.py (its own start is
    outside its clock). `debug` keeps nbdkit's debug stream, sent to /dev/null (what emitting it costs).
    Raises with nbdkit's last words when nbdkit or the client fails."""
    from lab.host import procs

    workdir = procs.private_dir("bare-")
    try:
        timing, errfile = workdir / "timing.txt", workdir / "nbdkit.err"
        # Every word is ours and quoted; only nbdkit's own $uri is left for its shell to expand.
        cmd = shlex.join([sys.executable, str(BENCH / "_timed.py"), str(timing), *client]) + ' "$uri"'
        with open(os.devnull if debug else errfile, "wb") as err:
            t0 = time.perf_counter()
            p = procs.spawn(bare_argv(spec, workdir, cmd, debug), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
            p.wait()
            wall = time.perf_counter() - t0
        procs.stop(p)
        said = errfile.read_text(errors="replace")[-400:] if errfile.exists() else ""
        if not timing.exists():
            raise RuntimeError(f"bare nbdkit exited {p.returncode} before its --run client finished: {said}")
        client_s, rc = timing.read_text().split()
        if p.returncode != 0 or int(rc) != 0:
            raise RuntimeError(f"bare {client[0]} exited {rc} (nbdkit {p.returncode}): {said}")
        log = (workdir / "wire.log").read_text(errors="replace") if keep_log else None
        return BareCopy(float(client_s), wall, log)
    finally:
        procs.remove_dir(workdir)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes and delays: checks the script works (seconds)")
    p.add_argument("--json", metavar="PATH", help="also write the raw figures as JSON to PATH")
    return p


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def within(value: float | None, lo: float, hi: float) -> bool | None:
    return None if value is None else lo <= value <= hi


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, round(q / 100.0 * len(xs) + 0.5) - 1))
    return xs[k]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """A GitHub pipe table, columns padded so it also reads well in a terminal."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    right = [all(_numeric(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        padded = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(vals, widths, right, strict=True))
        return "| " + " | ".join(padded) + " |"

    out = []
    if title:
        out += [f"### {title}", ""]
    out.append(line(headers))
    rule = (("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right, strict=True))
    out.append("|" + "|".join(rule) + "|")
    out += [line(r) for r in cells]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    t = s.replace(".", "", 1).replace("-", "", 1).replace("x", "").replace("%", "").replace("+", "").strip()
    return t.isdigit() or s == "-"


def machine_note() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"(other engineers' test runs share these cores)")


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


class MachineBusy:
    """How many cores the whole machine kept busy between start and read (everyone's work, ours too).

    A sleep-bound run uses a few percent of a core itself; a high figure means other work
    (other engineers' tests) competed with the run, which is how to read a MISS next to it.
    """

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.b0, _ = _cpu_ticks()

    def cores(self) -> float:
        b1, _ = _cpu_ticks()
        wall = max(1e-6, time.monotonic() - self.t0)
        return (b1 - self.b0) / os.sysconf("SC_CLK_TCK") / wall


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
