"""Fuzz the live web API from its own OpenAPI document with schemathesis; fail on any finding.

Starts a real `lab serve` on a free loopback port (private data and runtime dirs, tight
limits so generated runs are cheap: 1 MiB images, no delays, one worker, a queue of 4,
two servers), runs `schemathesis run` against /openapi.json with every check, all four
phases (examples, coverage, fuzzing, stateful), then stops the service and checks nothing it
started is left.

Every check runs, `positive_data_acceptance` included: the document says which unit strings
this instance accepts (patterns narrowed to its limits: app/schemas/unitregex.py), `server`/`server_id`
and `rows`/`grid` are oneOf variants, a server's fields a union keyed on kind (with the kinds,
storages and external targets this instance has), a student's name a pattern, an unknown id,
row or cursor is a 404. What the document cannot say is listed in CROSS_FIELD and NEVER_FITS
below: a schema-valid body refused for one of those is counted and shown, any other refusal
fails the run. Also checked: no 5xx, status codes and content types as documented,
response bodies and headers valid against the schema, invalid data rejected, 405 with
a correct Allow header, stateful sequences (create -> get / cancel / delete / events, via
the OpenAPI links) consistent.

`GET /api/v1/events` is left out: it is an endless stream by design (a request never
completes); its parameters are covered by tests/test_reliability_input.py. `POST
/api/v1/probes` too: each probe writes hundreds of MiB at full speed (tests/test_probe.py).

    .venv/bin/python scripts/fuzz_api.py [--examples 10] [--seed 7] [--min-cases 1000]

Exit 0 when schemathesis found nothing, generated at least --min-cases cases with the
stateful phase run, the service logged no traceback, and no process of ours is left.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.http.waiting import MAX_WAIT_S  # noqa: E402
from lab.domain.spec import fields_on  # noqa: E402
from testkit import LiveService, Proc  # noqa: E402

FUZZ_SETTINGS = {
    # The defaults (100M, 20ms) must stay valid, or every body that leaves them out is refused
    # and the stateful phase has nothing to follow; the run timeout keeps each run short.
    "LAB_MAX_SIZE": "100M",
    "LAB_MAX_DELAY_MS": "20",
    "LAB_RUN_TIMEOUT_S": "3",
    "LAB_IMAGE_CACHE_BYTES": "400M",  # generated geometries build images: a private, bounded cache
    "LAB_WORKERS": "1",
    "LAB_QUEUE_SIZE": "4",  # most generated POSTs meet a full queue: 429, documented
    "LAB_MAX_SERVERS": "2",
    "LAB_TOKEN": "",
    "LAB_LOG_LEVEL": "warning",
}
# path -> why it is left out
SKIPPED = {
    "/api/v1/events": "an endless stream by design",
    "/api/v1/probes": "each probe writes hundreds of MiB at full speed (tests/test_probe.py covers it)",
    "/api/v1/calibration": "POST measures the machine for a minute (tests/test_calibrate.py covers it)",
    "/api/v1/audits": "POST starts a zero audit: minutes of full-speed writes (tests/test_api_audits.py covers it)",
}


# Rules this OpenAPI document does not express (so positive_data_acceptance may see a 422 for
# them; every other rejection of a schema-valid request fails the run). The rules between the
# backend fields (lab.domain.spec.kind_problems: target only for kind external, disk_init data only
# on a raw file-backed disk, ...) are in it for a whole server: ServerFields is a union keyed on
# kind (app/schemas/serverunion.py). What remains is CROSS_FIELD on POST /sweeps only: a grid's
# axes combine into rows (storage x plugin: the schema states each axis, not their product) and a
# row's server is merged over the sweep's base server; and NEVER_FITS: a sweep with more runs than
# this instance's queue holds (LAB_QUEUE_SIZE is 4 here; the case study has 19 rows), a limit of
# the instance that no request schema states; and GUESSER: a guess names its student in the body
# or by a joined student's key (the Authorization header: a body schema cannot see it).
CROSS_FIELD = {*fields_on("backend"), "disk_format"}  # disk_format: qcow2 only with kind qemu-nbd
SWEEPS = "/api/v1/sweeps"
NEVER_FITS = "never-fits"
GUESSER = ("/api/v1/guesses", "student")


def cross_field_rejections(text: str) -> list[str]:
    """What each positive_data_acceptance failure ("Schema-valid request rejected") was refused for:
    the field of a CROSS_FIELD rule of a sweep, NEVER_FITS, or "other" (which fails the run)."""
    fields = []
    for block in re.split(r"\n_{3,} .+? _{3,}\n", text)[1:]:
        if "Schema-valid request rejected" not in block:
            continue
        if f'"code":"{NEVER_FITS}"' in block:
            fields.append(NEVER_FITS)
            continue
        m = re.search(r'"errors":\[\{"loc":\[([^\]]*)\]', block)
        names = re.findall(r'"([a-z_]+)"', m.group(1)) if m else []
        field = names[-1] if names else "?"
        sweep = f'"instance":"{SWEEPS}"' in block
        guess = f'"instance":"{GUESSER[0]}"' in block and field == GUESSER[1] and '"code":"missing"' in block
        fields.append("guesser" if guess else field if field in CROSS_FIELD and sweep else "other")
    return fields


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=10, help="max examples per operation and phase (default 10)")
    p.add_argument("--seed", type=int, default=7, help="schemathesis seed (default 7: CI is reproducible)")
    p.add_argument("--min-cases", type=int, default=1000, help="fail unless at least this many cases ran")
    p.add_argument("--workers", default="2", help="schemathesis workers (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (report, service log)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fzl-fuzz-"))
    svc = LiveService(tmp, env={**FUZZ_SETTINGS, "LAB_IMAGE_DIR": str(tmp / "images")}, log_level="warning")
    base = svc.base
    st = str(Path(sys.executable).with_name("schemathesis"))
    report = tmp / "report.json"
    problems: list[str] = []
    helpers: list[Proc] = []
    try:
        svc.start()
        cmd = [st, "run", f"{base}/openapi.json", "--no-color", "--seed", str(args.seed),
               "--max-examples", str(args.examples), "--workers", args.workers,
               "--phases", "examples,coverage,fuzzing,stateful",
               "--checks", "all",
               *[a for path in SKIPPED for a in ("--exclude-path", path)],
               # `?wait=S` answers after up to S seconds by design: neither a time-out nor "slow"
               "--request-timeout", str(MAX_WAIT_S + 15), "--max-response-time", str(MAX_WAIT_S + 15),
               "--generation-database", "none", "--suppress-health-check", "all",
               "--report", "json", "--report-json-path", str(report)]
        shown = " ".join(c.replace(str(tmp), "$TMP").replace(base, "$URL") for c in cmd[1:])
        print(f"schemathesis {shown}", flush=True)
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=tmp, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True,
                             check=False)
        secs = time.monotonic() - t0
        helpers = svc.descendants()
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
            try:
                svc.proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("lab serve did not stop within 30 s of SIGTERM")
        svc.stop()
    left = [p.pid for p in helpers if p.alive()]
    if left:
        problems.append(f"processes left after the service stopped: {left}")
    leftover_dirs = [d.name for d in (tmp / "run").iterdir()] if (tmp / "run").exists() else []
    if leftover_dirs:
        problems.append(f"private dirs left after the service stopped: {leftover_dirs}")
    service_log = svc.log_text()
    if re.search(r"Traceback|Exception in ASGI|Internal Server Error", service_log):
        problems.append("the service logged an exception:\n" + service_log[-3000:])

    if not report.exists():
        print(out.stdout[-4000:], out.stderr[-4000:], sep="\n")
        print("FAIL: schemathesis wrote no report")
        return 1
    rep = json.loads(report.read_text())
    cases = rep["test_cases"]
    phases = {name: ph["status"] for name, ph in rep["phases"].items()}
    operations = rep.get("operations", {})
    tolerated = cross_field_rejections(out.stdout) if rep["failures"] else []
    real = [f for f in rep["failures"] if not (f["type"] == "RejectedPositiveData" and tolerated
                                                and "other" not in tolerated)]
    if real:
        problems.append(f"schemathesis failures: {json.dumps(real)}")
    if rep["errors"]:
        problems.append(f"schemathesis errors: {json.dumps(rep['errors'])[:2000]}")
    if cases["generated"] < args.min_cases:
        problems.append(f"only {cases['generated']} cases generated (need {args.min_cases})")
    if phases.get("stateful") not in ("success",):
        problems.append(f"stateful phase: {phases.get('stateful')}")
    if rep.get("exit_code") != 0 and (real or rep["errors"]):
        problems.append(f"schemathesis exit code {rep.get('exit_code')}")
    if phases.get("stateful") != "success" and not real:  # failed only on a tolerated rejection
        problems.remove(f"stateful phase: {phases.get('stateful')}")

    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| operations tested | {operations.get('tested', operations)} of {operations.get('total', '?')} "
          f"(skipped: {', '.join(SKIPPED)}) |")
    print(f"| test cases generated | {cases['generated']} |")
    print(f"| cases with failures | {cases['with_failures']} |")
    print(f"| schema-valid bodies refused by a documented rule (a sweep's grid or rows, the queue, who guesses) | "
          f"{len(tolerated)}: {', '.join(tolerated) or '-'} |")
    print(f"| errors | {cases['errored']} |")
    print(f"| phases | {', '.join(f'{k} {v}' for k, v in phases.items())} |")
    print(f"| schemathesis time | {secs:.1f} s |")
    print(f"| seed | {rep['seed']} |")
    logged = "none" if not any("exception" in pr for pr in problems) else "SEE BELOW"
    print(f"| server exceptions in the service log | {logged} |")
    print(f"| processes / private dirs left | {len(left)} / {len(leftover_dirs)} |")
    if problems:
        print()
        (tmp / "schemathesis.txt").write_text(out.stdout)
        print(out.stdout[-6000:])
        print(f"(the whole schemathesis output: {tmp / 'schemathesis.txt'})")
        for pr in problems:
            print("FAIL:", pr)
    if args.keep or problems:
        print(f"(kept {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
