"""`lab`: the headless front door. Exit 0 on success, 1 on a failed run, 2 on bad arguments."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from lab.cli import audit, broker, logs, queue, report, sweep, worker
from lab.cli.shared import MAX_WORKERS, Interrupt, LocalSweep, bad, timeout_problem, workers_problem
from lab.config import Settings
from lab.domain import spec
from lab.domain.clients import CATALOG, client_ids, client_info
from lab.domain.errors import NotFound, NotRunnable
from lab.domain.run import Run
from lab.domain.scenarios import SCENARIOS, get_scenario
from lab.domain.spec import SpecError
from lab.domain.sweepspec import MAX_REPEATS
from lab.domain.units import parse_size
from lab.host import storage
from lab.host.places import Core, Places, use
from lab.measure import calibration, expectation
from lab.measure.calibration import before_run
from lab.measure.execute import execute
from lab.nbd import backends, probe
from lab.nbd.backends import Machine


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with our wording
        self.print_usage(sys.stderr)
        raise SystemExit(bad(message))


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lab", description="fastzero-lab: re-run the NBD fast-zero case study.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="one copy on a fresh server")
    r.add_argument("--client", default="qemu-img", help="copy client (default qemu-img); see `lab clients`")
    spec.add_cli_options(r, _settings().limits)
    r.add_argument("--queue-depth", type=int, default=1,
                   help="requests in flight for the lab's own clients (default 1)")
    r.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds (default: LAB_RUN_TIMEOUT_S, 600)")
    r.add_argument("--repeat", type=int, default=1, metavar="N",
                   help=f"run it N times (1-{MAX_REPEATS}), each on a fresh server, and report the median and "
                        "spread (a copy without delays varies by 5-10%% from run to run)")
    r.add_argument("--json", action="store_true", help="print one JSON object (with --repeat: runs and repeat)")

    s = sub.add_parser("scenario", help="run a named scenario (case-study, reference, acts)")
    s.add_argument("name", help=f"one of: {', '.join(SCENARIOS)}")
    s.add_argument("--workers", type=int, default=1,
                   help=f"rows run at once, 1 to {MAX_WORKERS} (default 1: strictly one after another)")
    s.add_argument("--only", help="comma-separated row keys to run (default all)")
    s.add_argument("--size", help="image size for every row, e.g. 256M (drops the 2019 reference figures)")
    s.add_argument("--timeout", type=float, default=None,
                   help="a row still going after this many seconds is stopped and failed (default: LAB_RUN_TIMEOUT_S)")
    s.add_argument("--json", action="store_true",
                   help='print {"name":..., "rows":[run...], "skipped":[{"key":..., "reason":...}]}')

    sv = sub.add_parser("serve", help="the web service and dashboard")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)

    pr = sub.add_parser("probe", help="the fast-zero probe: what a server advertises, and what zeroing costs",
                        description="Start a server from the options (defaults for a probe: zeroing passed "
                                    "through, no delays, maxdata 32M), time write / zero / fast zero / trim "
                                    "on fresh and written ranges, check they read back as zeroes, give a verdict.")
    spec.add_cli_options(pr, _settings().limits)
    pr.add_argument("--length", default="64M", help="bytes per probed range; 4 ranges are used (default 64M)")
    pr.add_argument("--deadline", type=float, default=120.0, help="give up after this many seconds (default 120)")
    pr.add_argument("--all", action="store_true",
                    help="probe every available kind x storage (docs/servers.md's table); server options are ignored")
    pr.add_argument("--json", action="store_true",
                    help='print {"server":..., "flags":..., "results":[...], "verdict":...} (a list with --all)')

    cal = sub.add_parser("calibrate", help="measure this machine's per-request, per-byte and fixed costs "
                         "(under a minute; cached in the data dir) for the calibrated expectation")
    cal.add_argument("--show", action="store_true", help="print the cached calibration, measure nothing")
    cal.add_argument("--control", action="store_true",
                     help="measure each kind's control now (a few short copies) against the calibration: how far "
                          "the machine has moved since; exit status 1 when the calibration is stale")
    cal.add_argument("--json", action="store_true", help="print the calibration as JSON")
    sub.add_parser("kinds", help="list the server kinds and storages, and whether this machine has them")
    sub.add_parser("clients", help="list the copy clients")
    sub.add_parser("scenarios", help="list the scenarios")
    sweep.add_parser(sub)
    queue.add_parser(sub)
    audit.add_parsers(sub)
    worker.add_parser(sub)
    broker.add_parser(sub)
    return p


def _settings() -> Settings:
    """The driver reads the environment (LAB_*); the core is handed what it needs. A bad value exits 2."""
    try:
        return Settings()
    except ValidationError as e:
        err = e.errors()[0]
        name = "LAB_" + "_".join(str(p) for p in err["loc"]).upper()
        raise SystemExit(bad(f"{name}: {err['msg'].removeprefix('Value error, ')}")) from None


def _core() -> Core:
    """What the core takes from the settings: handed down explicitly to every run, server and probe."""
    return Core.from_settings(_settings())


def cmd_run(args: argparse.Namespace) -> int:
    if args.client not in client_ids():
        return bad(f"--client: unknown client {args.client!r}; choose one of {', '.join(client_ids())}")
    if not 1 <= args.queue_depth <= 64:
        return bad(f"--queue-depth: must be between 1 and 64 (got {args.queue_depth})")
    if problem := timeout_problem(args.timeout):
        return bad(problem)
    args.timeout = args.timeout if args.timeout is not None else _settings().run_timeout_s
    if not 1 <= args.repeat <= MAX_REPEATS:
        return bad(f"--repeat: must be between 1 and {MAX_REPEATS} (got {args.repeat})")
    try:
        server = spec.build_spec(spec.cli_fields(args), _settings().limits, Machine(_core().places))
    except SpecError as e:
        return bad(f"{spec.option(e.field)}: {e.message}")
    _ensure_calibrated()
    runs = _runs(args, server, _core())
    summary = report.repeat_summary(runs) if args.repeat > 1 else None
    if args.json:
        print(json.dumps(runs[-1].to_dict() if summary is None else {"runs": [r.to_dict() for r in runs],
                                                                     "repeat": summary}))
    else:
        print(report.run_table(report.median_run(runs) if summary else runs[-1]))
        if summary:
            print(report.repeat_lines(summary))
    return 0 if len(runs) == args.repeat and all(r.status == "succeeded" for r in runs) else 1


def _runs(args: argparse.Namespace, server: spec.ServerSpec, core: Core) -> list[Run]:
    """`lab run`'s copies, --repeat of them, each on a fresh server; Ctrl-C stops after the current one."""
    runs: list[Run] = []
    with Interrupt() as cancel:
        while len(runs) < args.repeat and not cancel.is_set():
            run = Run(client=args.client, server=server, queue_depth=args.queue_depth)
            bar = None if args.json else report.ProgressBar(sys.stderr, server.size)
            before_run(run, core, cancel)  # a CPU-bound run: the machine's state now
            execute(run, on_event=bar.update if bar else None, cancel=cancel, timeout=args.timeout, core=core)
            if bar:
                bar.close()
            runs.append(run)
            if args.repeat > 1 and not args.json:
                print(f"run {len(runs)}/{args.repeat}: {run.status}, {report.fmt_s(run.duration_s)}", file=sys.stderr)
    return runs


def cmd_scenario(args: argparse.Namespace) -> int:
    if problem := workers_problem(args.workers) or timeout_problem(args.timeout):
        return bad(problem)
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    timeout = args.timeout if args.timeout is not None else _settings().run_timeout_s
    here = LocalSweep(args.workers, "lab-scenario", quiet=args.json, core=_core(), timeout_s=timeout)
    # CPU-hungry parallel clients (nbdcopy) start first, so they are done before the
    # sleep-bound rows pile up beside them on a small machine.
    order = (lambda r: not client_info(r.client).parallel) if args.workers > 1 else None
    try:
        overrides = {"size": args.size} if args.size else None
        sweep = here.service.start(args.name, only, overrides, order=order)  # queued: nothing runs yet
    except NotFound as e:
        return bad(f"--only: {e}" if e.field == "only" else str(e))
    except NotRunnable as e:
        return bad(f"nothing to run on this machine: {e}")
    except SpecError as e:
        return bad(f"{spec.option(e.field)}: {e.message}")
    if not args.json:
        for key, why in sweep.skipped.items():
            print(f"skipped {key}: {why}", file=sys.stderr)
    wall = here.run(sweep)
    _print_scenario(args, sweep.runs, wall, sweep.skipped)
    return 0 if all(r.status == "succeeded" for r in sweep.runs) else 1


def _print_scenario(args: argparse.Namespace, runs: list[Run], wall: float, skipped: dict[str, str]) -> None:
    if args.json:
        print(json.dumps({"name": args.name, "wall_s": round(wall, 3), "rows": [r.to_dict() for r in runs],
                          "skipped": [{"key": k, "reason": why} for k, why in skipped.items()]}))
        return
    if args.name in ("today", "today-dirty"):
        print(report.today_table(runs))
    else:
        print(report.scenario_table(get_scenario(args.name).title, runs))
    print(f"\n{len(runs)} runs in {wall:.1f} s wall time")


def cmd_sweep(args: argparse.Namespace) -> int:
    return sweep.cmd_sweep(args, _core(), _settings().run_timeout_s)


def cmd_audit(args: argparse.Namespace) -> int:
    return audit.cmd_audit(args, _core())


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        return bad(f"--port: must be between 1 and 65535 (got {args.port})")
    import uvicorn

    settings = _settings()
    if settings.broker:  # cluster mode: the measurements run on workers, which calibrate themselves
        from lab.service import broker

        try:
            broker.check_url(settings.broker)
        except broker.BrokerError as e:
            return bad(f"LAB_BROKER_URL: {e}")
    # else a machine never calibrated is calibrated by the service itself, in the background: it answers at
    # once, says `starting` meanwhile (lab.service.calibrating.Calibrating.first_start)

    # By name, so the core never imports the web layer.
    # Open event streams never end by themselves: after 3 s of graceful shutdown they are
    # cut, so the app's lifespan can stop the runs and servers.
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found installed. A no-op one here makes that a clean exit 0 (`docker stop` shows
    # "Exited (0)", not 143): the stop was asked for and done. Ctrl-C keeps its default.
    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _frame: terms.append(sig))
    try:
        uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port,
                    log_level=settings.log_level, timeout_graceful_shutdown=3,
                    log_config=logs.log_config(settings.log_level, settings.log_format, settings.log_health))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    return worker.cmd_worker(args, _settings())


def cmd_broker(args: argparse.Namespace) -> int:
    return broker.cmd_broker(args, _settings())


def cmd_clients(_args: argparse.Namespace) -> int:
    for c in CATALOG:
        print(f"{c.id:17} {c.era:22} {c.description}")
    return 0


def _probe_length(args: argparse.Namespace) -> int | str:
    """The probe's range length in bytes, or the error message for it."""
    try:
        length = parse_size(args.length)
    except ValueError as e:
        return f"--length: {e}"
    if not probe.MIN_LENGTH <= length <= probe.MAX_LENGTH or length % 4096:
        return f"--length: must be a multiple of 4K between 1M and 256M (got {args.length})"
    return length


def _probe_fields(args: argparse.Namespace, length: int) -> dict[str, Any]:
    """The server fields the options give (SpecError if they do not fit)."""
    fields = spec.cli_fields(args)
    core = _core()
    spec.build_spec({**probe.PROBE_SERVER_DEFAULTS, "size": 4 * length, **fields}, core.limits, Machine(core.places))
    return fields


def cmd_probe(args: argparse.Namespace) -> int:
    length = _probe_length(args)
    if isinstance(length, str):
        return bad(length)
    if not 0 < args.deadline <= 3600:
        return bad(f"--deadline: must be between 0 and 3600 seconds (got {args.deadline})")
    core = _core()
    try:
        targets = probe.matrix(core.places) if args.all else [_probe_fields(args, length)]
    except SpecError as e:
        return bad(f"{spec.option(e.field)}: {e.message}")
    out, failed = [], False
    for fields in targets:
        try:
            out.append(probe.probe_server(fields, length, args.deadline, core.limits, core.places))
        except Exception as e:  # one server failing does not hide the others' rows
            failed = True
            print(f"lab probe: {probe.label(fields)}: {e}", file=sys.stderr)
            continue
        if not args.json:
            print(f"{probe.label(out[-1]['server'])}: {out[-1]['verdict']} - {out[-1]['why']}", file=sys.stderr)
    _print_probes(args, out)
    return 1 if failed or any(p["problems"] for p in out) else 0


def _print_probes(args: argparse.Namespace, out: list[dict[str, Any]]) -> None:
    if args.json:
        print(json.dumps(out if args.all else (out[0] if out else None)))
        return
    print(probe.table(out))
    for p in out:
        for problem in p["problems"]:
            print(f"problem: {probe.label(p['server'])}: {problem}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    where = _core().places
    if args.show or args.control:
        cal = expectation.load(places=where)
        if cal is None:
            print("lab calibrate: this machine is not calibrated (or its tools changed): run `lab calibrate`",
                  file=sys.stderr)
            return 1
        if args.control:
            with Interrupt() as cancel:
                for kind in expectation.KINDS:
                    try:
                        c = calibration.control(kind, cancel, where)
                    except calibration.Cancelled:
                        print("lab calibrate: cancelled (the controls measured so far are kept)", file=sys.stderr)
                        return 1
                    if c is not None and not args.json:
                        print(f"  {kind.key}: {calibration.control_note(c)}", file=sys.stderr)
    else:
        print("calibrating: copies of 2-384 MiB by every client kind, about 45-75 s", file=sys.stderr)
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        if load > cores:
            print(f"lab calibrate: warning: load average {load:.1f} on {cores} cores: the coefficients will "
                  "include other work's share; calibrate again on a quiet machine", file=sys.stderr)
        cal = calibration.calibrate(progress=None if args.json else lambda m: print("  " + m, file=sys.stderr),
                                    places=where)
    state = expectation.state(where)
    print(json.dumps({**cal.to_dict(), **state}) if args.json else report.calibration_table(cal, state))
    return 1 if args.control and state["stale"] else 0


def _ensure_calibrated() -> None:
    """The first run (or `lab serve`) on this machine calibrates it first: on a terminal, or always with
    LAB_AUTO_CALIBRATE=1; never with LAB_AUTO_CALIBRATE=0."""
    settings = _settings()
    where = Places.from_settings(settings)
    mode = settings.auto_calibrate
    if mode is False or (mode is None and not sys.stderr.isatty()) or expectation.load(places=where) is not None:
        return
    print("lab: first run on this machine: calibrating it once (about 30-60 s; `lab calibrate` redoes it)",
          file=sys.stderr)
    calibration.calibrate(progress=lambda m: print("  " + m, file=sys.stderr), places=where)


def cmd_kinds(_args: argparse.Namespace) -> int:
    core = _core()
    kinds, storages = backends.availability(core.limits), storage.availability(core.places)
    for title, avail in (("kinds", kinds), ("storages", storages)):
        print(title + ":")
        for name, a in avail.items():
            print(f"  {name:11} {'available' if a['available'] else 'unavailable: ' + str(a['reason'])}")
    return 0


def cmd_scenarios(_args: argparse.Namespace) -> int:
    machine = Machine(_core().places)
    for s in SCENARIOS.values():
        here = machine.scenario(s)
        n = sum(1 for r in here.rows if r.available)
        can = f"{len(s.rows):3} runs" if n == len(s.rows) else f"{n:3} of {len(s.rows)} runs here"
        print(f"{s.name:12} {can}  {s.description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The driver's one read of the environment decides where files go, also for library code
    # that is not handed places (lab.host.places); everything below is handed `_core()` explicitly.
    use(Places.from_settings(_settings()))
    handler = {"run": cmd_run, "scenario": cmd_scenario, "serve": cmd_serve, "sweep": cmd_sweep,
               "clients": cmd_clients, "probe": cmd_probe, "kinds": cmd_kinds, "scenarios": cmd_scenarios,
               "calibrate": cmd_calibrate, "audit": cmd_audit,
               "audit-report": audit.cmd_audit_report, "worker": cmd_worker, "broker": cmd_broker,
               "queue": queue.cmd_queue}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
