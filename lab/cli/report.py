"""Plain-text output for the CLI: a live progress bar and result tables."""

from __future__ import annotations

import textwrap
import time
from typing import Any, TextIO

from lab.domain.run import VERDICT_WORDS as DOMAIN_VERDICT_WORDS
from lab.domain.run import Run
from lab.domain.units import format_interval as interval
from lab.domain.units import human_bytes
from lab.measure.expectation import WARM_MIB


class ProgressBar:
    """Drawn on a terminal only, and only once a run has lasted a second."""

    WIDTH = 32

    def __init__(self, out: TextIO, size: int) -> None:
        self.out = out
        self.size = size
        self.t0 = time.monotonic()
        self.enabled = out.isatty()
        self.drawn = False

    def update(self, event: dict[str, Any]) -> None:
        if not self.enabled or event.get("type") != "progress" or time.monotonic() - self.t0 < 1.0:
            return
        frac = float(event.get("fraction") or 0.0)
        filled = int(frac * self.WIDTH)
        b = event.get("backend") or {}
        line = (f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {frac * 100:5.1f}%  "
                f"{event.get('elapsed_s', 0):6.2f} s  writes {b.get('write_ops', 0):5}  "
                f"zeroes {b.get('zero_ops', 0):4}")
        self.out.write(line)
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\r" + " " * 80 + "\r")
            self.out.flush()


def _fmt(v: float | None, unit: str = "s") -> str:
    return "-" if v is None else f"{v:.2f} {unit}"


def fmt_s(v: float | None) -> str:
    return _fmt(v)


# The domain's words, the surprise in capitals for a terminal.
VERDICT_WORDS = {k: v.replace("slower", "SLOWER").replace("faster", "FASTER") for k, v in DOMAIN_VERDICT_WORDS.items()}


def expected_line(run: Run) -> str:
    if run.expected_s is None or not run.breakdown:
        return f"{'expected':16}{'-':>12}   (this machine is not calibrated: `lab calibrate`)"
    b = run.breakdown
    ratio = f", measured/expected {run.duration_s / run.expected_s:.3f}" if run.duration_s and run.expected_s else ""
    cover = f"{100 * run.expected_coverage:.0f}% interval" if run.expected_coverage else "interval"
    verdict = VERDICT_WORDS.get(run.model_verdict or "", "")
    lines = [f"{'expected':16}{interval(run.expected_s, run.expected_low_s, run.expected_high_s):>24}   "
             f"({cover}, {run.regime or '-'}; {verdict or 'no verdict'})",
             f"{'':16}{'':>24}   delays {b['delays_s']:.3f} + per-request {b['per_request_s']:.3f} + per-byte "
             f"{b['per_byte_s']:.3f} + fixed {b['fixed_s']:.3f} s, {run.calibration}{ratio}"]
    if run.machine_factor is not None:
        lines.append(f"{'':16}{'':>24}   scaled by the machine's state now: x{run.machine_factor:.2f} "
                     "(a control just before, against the calibration's)")
    if run.calibration_stale:
        lines.append(f"{'':16}{'':>24}   the calibration is STALE (its control drifted): `lab calibrate`")
    return "\n".join(lines)


def median_run(runs: list[Run]) -> Run:
    """The succeeded run with the median copy time (the lower middle of an even count), else the last."""
    ok = sorted((r for r in runs if r.status == "succeeded" and r.duration_s is not None), key=lambda r: r.duration_s)
    return ok[(len(ok) - 1) // 2] if ok else runs[-1]


def repeat_summary(runs: list[Run]) -> dict[str, Any]:
    """`lab run --repeat`: the copy times' median and spread, and the median run against its interval."""
    from lab.domain.sweepspec import stats

    ok = [r for r in runs if r.status == "succeeded" and r.duration_s is not None]
    mid = median_run(runs)
    verdicts = {v: sum(1 for r in ok if r.model_verdict == v) for v in {r.model_verdict for r in ok} if v}
    out = {"n": len(runs), "succeeded": len(ok), "duration_s": stats([r.duration_s for r in ok]),
           "runs_s": [r.duration_s for r in runs], "median_run": mid.id, "expected_s": mid.expected_s,
           "expected_low_s": mid.expected_low_s, "expected_high_s": mid.expected_high_s,
           "model_verdict": mid.model_verdict, "verdicts": verdicts, "interval_runs": 1}
    median = _median_expectation(mid, len(ok))
    if median is not None and mid.duration_s is not None:
        out.update(expected_s=median.expected_s, expected_low_s=median.low_s, expected_high_s=median.high_s,
                   model_verdict=median.verdict(mid.duration_s)[0], interval_runs=len(ok))
    return out


def _median_expectation(mid: Run, runs: int) -> Any:
    """The expectation of the median of `runs` runs of the median run's geometry (a narrower interval
    than one run's: lab.measure.expectation), or None (one run, or not calibrated)."""
    from lab.measure import expectation
    from lab.nbd.servers import topology

    if runs < 2 or mid.expected_s is None or mid.backend is None or mid.server_log is None:
        return None
    try:
        return expectation.expectation(mid.client, mid.queue_depth, topology(mid.server), mid.server, mid.backend,
                                       mid.server_log, mid.predicted_s or 0.0, runs=runs)
    except Exception:  # a summary never fails a command: the median run's own interval stands
        return None


def repeat_lines(summary: dict[str, Any]) -> str:
    d = summary.get("duration_s")
    if not d:
        return f"{'repeats':16}{summary['n']:>12}   (none succeeded)"
    times = ", ".join(f"{t:.3f}" for t in summary["runs_s"] if t is not None)
    out = [f"{'repeats':16}{summary['succeeded']:>12}   median {d['p50']:.3f} s, min-max {d['min']:.3f}-"
           f"{d['max']:.3f} s ({100 * d['rel_spread']:.1f}% of the median): {times} (the table above: the median run)"]
    if summary.get("expected_s") is not None:
        counts = ", ".join(f"{n} {v}" for v, n in sorted(summary["verdicts"].items()))
        expected = interval(summary["expected_s"], summary["expected_low_s"], summary["expected_high_s"])
        of = f" (the median of {summary['interval_runs']})" if summary.get("interval_runs", 1) > 1 else ""
        out.append(f"{'':16}{'':>12}   expected {expected}{of}; runs: {counts or '-'}")
    return "\n".join(out)


def contention_line(run: Run) -> str:
    c = run.contention
    if not c:
        return f"{'machine':16}{'-':>12}"
    verdict = "CONTENDED: others competed for the CPU" if run.contended else "quiet enough"
    if c.get("slow_copy_path") and not run.contended:
        verdict = "SLOW COPY PATH: own CPU above the calibration's"
    cpu = (f"; own CPU {c['own_cpu_s']:.3f} s, expected {c['expected_own_cpu_s']:.3f} s"
           if c.get("expected_own_cpu_s") is not None and c.get("own_cpu_s") is not None else "")
    return (f"{'machine':16}{verdict:>12}   (others {c['others_cores']:.2f} cores, limit {c['limit_cores']:.2f}; "
            f"this run {c['own_cores']:.2f}, whole machine {c['machine_cores']:.2f}{cpu})")


def calibration_table(cal: Any, state: dict[str, Any] | None = None) -> str:
    """The coefficients of a lab.measure.expectation.Calibration, one line per client kind / server
    build; then each kind's spreads, blind spots and control; then the controls since (`state`:
    lab.measure.expectation.state)."""
    from lab.measure.expectation import COVERAGE, GROWN_MIB, LONG_SLEEP_MS, SHORT_SLEEP_MS

    out = [f"calibration {cal.fingerprint}  ({cal.machine.get('cpu')}, {cal.machine.get('cores')} cores, nbdkit "
           f"{cal.machine.get('nbdkit')}; took {cal.took_s:.0f} s at load {cal.load_before:.1f})",
           f"{'':18}{'fixed':>7}{'per request, us':>38}{'':>4}{'per MiB, ms':>30}",
           f"{'kind':18}{'ms':>7}{'wire':>9}{'backend':>9}{'sleep':>8}{'short':>8}{'long':>8}{'stored':>8}{'warm':>7}"
           f"{'grown':>7}{'slept':>7}{'zeroes':>7}{'delay x':>8}{'worst fit':>10}"]
    for key, f in cal.fits.items():
        c = f.coef
        out.append(f"{key:18}{1e3 * c.get('fixed', 0):7.2f}{1e6 * c.get('wire_requests', 0):9.1f}"
                   f"{1e6 * c.get('backend_requests', 0):9.1f}{1e6 * c.get('sleeps', 0):8.1f}"
                   f"{1e6 * c.get('short_sleeps', 0):8.1f}{1e6 * c.get('long_sleeps', 0):8.1f}"
                   f"{1e3 * c.get('mib', 0):8.3f}"
                   f"{1e3 * c.get('warm_mib', 0):7.3f}{1e3 * c.get('grown_mib', 0):7.3f}"
                   f"{1e3 * c.get('slept_mib', 0):7.3f}{1e3 * c.get('zero_mib', 0):7.3f}{c.get('delays', 0):8.3f}"
                   f"{100 * f.worst:9.1f}%")
    out.append(f"per MiB stored (the plugin's writes); warm: extra for the first {WARM_MIB} MiB of a fresh server; "
               f"grown: extra past {GROWN_MIB} MiB; slept: extra for bytes that waited out a delay; zeroes: extra for "
               f"zero-filled MiB the client wrote; short: extra per sleep of at most {SHORT_SLEEP_MS:g} ms; long: "
               f"extra per sleep of at least {LONG_SLEEP_MS:g} ms")
    out += ["", f"{'kind':18}{'spread of the variable part (relative sd)':>44}{'abs ms':>8}   {'blind spots kept':24}"
            f"{'control s (spread)':>20}",
            f"{'':18}{'delay-bound':>16}{'per-request':>14}{'bandwidth':>14}"]
    for key, f in cal.fits.items():
        sp, ctl = f.spread, f.control
        ref = f"{ctl['reference_s']:.4f} ({100 * ctl.get('spread', 0):.1f}%)" if ctl else "-"
        out.append(f"{key:18}" + "".join(f"{100 * sp.get(r, 0):{w}.1f}%" for r, w in
                                         (("delay-bound", 15), ("per-request-bound", 13), ("bandwidth-bound", 13)))
                   + f"{1e3 * sp.get('abs_s', 0):8.1f}   {', '.join(f.blind_spots) or '-':24}{ref:>20}")
    out.append(f"intervals hold {100 * COVERAGE:.0f}% of runs: the variable part's spread for the run's regime, a "
               "copy's absolute jitter, and the machine's drift since the calibration (measured by a control before "
               "CPU-bound runs)")
    noisy, total = cal.contended
    if noisy:
        out.append(f"{noisy} of {total} points were measured while other work used the CPU (contended): "
                   "run `lab calibrate` again on a quiet machine for figures to trust")
    if state and state.get("controls"):
        out += ["", control_table(state["controls"]),
                f"this machine's byte rate moves by {100 * state.get('machine_drift', 0.0):.1f}% (relative sd) from "
                "the calibration, as these controls showed: how much a control is trusted, and how wide an "
                "uncorrected interval is",
                f"a control misses it by {100 * state.get('control_noise', 0.0):.1f}% beyond its own runs' scatter "
                "(controls of one kind minutes apart disagreed by that much): it is weighed accordingly"]
    if state and state.get("stale"):
        kinds = ", ".join(f"{k} x{v:.2f}" for k, v in state["stale_kinds"].items())
        out.append(f"STALE: the newest control of {kinds} drifted beyond what the intervals allow for: "
                   "run `lab calibrate` again")
    return "\n".join(out)


def control_table(controls: list[dict[str, Any]]) -> str:
    """The controls since the calibration: how far the machine moved (lab.measure.drift)."""
    out = [f"{'control at':20}{'kind':18}{'runs s':>26}{'reference s':>13}{'now / then':>12}  "]
    for c in controls:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["at"]))
        runs = ", ".join(f"{t:.3f}" for t in c["runs_s"])
        f = f"{c['factor']:.3f}" if c.get("factor") is not None else "disturbed"
        out.append(f"{at:20}{c['kind']:18}{runs:>26}{c['reference_s']:13.4f}{f:>12}  {'STALE' if c['stale'] else ''}")
    return "\n".join(out)


def run_table(run: Run) -> str:
    s = run.server
    b = run.backend
    w = run.wire
    lines = [
        f"run {run.id}  client {run.client}  status {run.status.upper()}",
        f"server   {s.describe()}",
        "flags    " + (" ".join(f"{k}={int(v)}" for k, v in (run.flags or {}).items() if k.startswith("can_"))
                       or "-"),
        "",
        f"{'copy time':16}{_fmt(run.duration_s):>12}   (setup {_fmt(run.setup_s)}, verify {_fmt(run.verify_s)})",
        f"{'predicted':16}{_fmt(run.predicted_s):>12}   ({run.model} model"
        + (f", measured/predicted {run.ratio:.3f})" if run.ratio else ")"),
        expected_line(run),
        contention_line(run),
        f"{'verified':16}{str(run.verified).lower():>12}   {run.verify_detail or ''}",
    ]
    if b:
        lines += [
            "",
            f"{'backend':16}{'ops':>8}{'bytes':>14}",
            f"{'  write':16}{b.write_ops:>8}{human_bytes(b.write_bytes):>14}",
            f"{'  zero':16}{b.zero_ops:>8}{human_bytes(b.zero_bytes):>14}",
            f"{'  trim':16}{b.trim_ops:>8}{human_bytes(b.trim_bytes):>14}",
            f"{'  flush':16}{b.flush_ops:>8}",
        ]
    if w:
        lines += [
            "",
            f"wire ({w.source}): write {w.write}  zero {w.zero}  fast_zero {w.fast_zero} "
            f"(failed {w.fast_zero_failed})  trim {w.trim}  flush {w.flush}",
        ]
    lines += latency_lines(run.request_stats)
    if run.error:
        lines += ["", f"error: {run.error}"]
    return "\n".join(lines)


def latency_lines(stats: dict[str, Any] | None) -> list[str]:
    """Per-operation latency percentiles and the zero requests' sizes (lab.domain.latency), for a run or an audit."""
    if not stats or not stats.get("latency"):
        return []
    out = ["", f"{'latency, ms':16}{'n':>8}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}"]
    for op, p in stats["latency"].items():
        if p:
            out.append(f"{'  ' + op:16}{p['n']:>8}{p['p50_ms']:>10.3f}{p['p90_ms']:>10.3f}{p['p99_ms']:>10.3f}"
                       f"{p['max_ms']:>10.3f}")
    if stats.get("zero_sizes"):
        sizes = ", ".join(f"<={human_bytes(b['le'])}: {b['count']}" for b in stats["zero_sizes"])
        out.append(f"{'zero sizes':16}{sizes}")
    return out


def _scenario_row(r: Run) -> str:
    ref = (r.reference or {}).get("time_s")
    b, w = r.backend, r.wire
    vs_ref = f"{r.duration_s / ref:.2f}" if ref and r.duration_s else "-"
    writes, zeroes = (b.write_ops, b.zero_ops) if b else (0, 0)
    fast, fast_failed = (w.fast_zero, w.fast_zero_failed) if w else (0, 0)
    ok = ("yes" if r.verified else "NO") + ("" if r.status == "succeeded" else " " + r.status)
    expected = interval(r.expected_s, r.expected_low_s, r.expected_high_s)
    return (f"{(r.label or r.id)[:21]:22}{r.client:10}{r.server.zeromode:9}{r.server.fastzeromode:9}"
            f"{(r.duration_s or 0):8.2f}{(r.predicted_s or 0):8.2f}{(r.ratio or 0):7.3f}{expected:>22}"
            f"{(f'{ref:.2f}' if ref else '-'):>7}{vs_ref:>6}{writes:7}{zeroes:7}{fast:4}{fast_failed:4}  {ok}"
            + OUTSIDE_MARK.get(r.model_verdict or "", ""))


def _nbdkit_notes(runs: list[Run]) -> list[str]:
    """Rows whose 2019 counts this nbdkit cannot give (see the reference's nbdkit_1_32 note)."""
    notes = [(r.label or r.id, (r.reference or {}).get("nbdkit_1_32") or {}) for r in runs]
    notes = [(label, n) for label, n in notes if "write_ops" in n]
    if not notes:
        return []
    out = ["", "Differs from 2019 on this nbdkit:"]
    for label, n in notes:
        expect = f"expect {n['write_ops']} writes, {n['zero_ops']} zeroes, ~{n['predicted_s']:g} s"
        out += textwrap.wrap(f"{label}: {expect}. {n['why']}", width=110, initial_indent="  ",
                             subsequent_indent="    ")
    return out


def scenario_table(title: str, runs: list[Run]) -> str:
    head = (f"{'row':22}{'client':10}{'zeromode':9}{'fastzero':9}{'time':>8}{'pred':>8}{'ratio':>7}"
            f"{'expected (interval)':>22}{'ref':>7}{'/ref':>6}{'writes':>7}{'zeroes':>7}{'fz':>4}{'fzf':>4}  ok")
    return "\n".join([title, "", head, "-" * len(head), *map(_scenario_row, runs), *_nbdkit_notes(runs)])


# A cell whose run fell outside its expectation's interval says so (lab.measure.expectation).
OUTSIDE_MARK = {"slower-than-model": " (slower than model)", "faster-than-model": " (faster than model)"}


def stale_text(detail: str | None) -> str:
    """'stale 64M-128M, ...' from a failed verification's detail (lab.nbd.verify), else 'not verified'."""
    import re

    m = re.search(r"stale ranges ([^)]*)", detail or "")
    return f"stale {m.group(1)}" if m else "not verified"


def today_table(runs: list[Run]) -> str:
    """Scenario `today` as Markdown: one row per server, one column per client; each cell the
    copy time, then the zero requests the server got (backend view), a mark if not verified or
    outside the model's interval."""
    servers: dict[str, dict[str, Run]] = {}
    clients: list[str] = []
    for r in runs:
        client, _, server = (r.label or "").partition("@")
        servers.setdefault(server, {})[client] = r
        if client not in clients:
            clients.append(client)
    from lab.domain.scenarios import DIRTY_CLIENTS, TODAY_CLIENTS

    order = list(dict.fromkeys((*TODAY_CLIENTS, *DIRTY_CLIENTS)))
    clients.sort(key=lambda c: order.index(c) if c in order else len(order))
    lines = ["| server | " + " | ".join(clients) + " |", "|---|" + "---|" * len(clients)]
    for server, by in servers.items():
        cells = []
        for c in clients:
            r = by.get(c)
            if r is None:
                cells.append("-")
            elif r.status != "succeeded":
                cells.append(f"{r.status}" + (f" ({stale_text(r.verify_detail)})" if r.verified is False else ""))
            else:
                z = r.backend.zero_ops if r.backend else 0
                cells.append(f"{r.duration_s:.2f} s / {z} z" + OUTSIDE_MARK.get(r.model_verdict or "", ""))
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
