#!/usr/bin/env python3
"""Automate a scenario sweep through the REST API, as any script would.

    .venv/bin/lab serve &                       # or scripts/run.sh
    .venv/bin/python scripts/api_sweep.py case-study --out results.csv
    .venv/bin/lab scenario case-study --json > cli.json
    .venv/bin/python scripts/api_sweep.py case-study --compare cli.json

It starts the sweep (POST /api/scenarios/NAME/runs), follows GET /api/events to the
sweep's `sweep_done` (reconnecting with Last-Event-ID if the connection drops, and
checking that ids only grow), then fetches GET /api/results.csv?sweep_id=... With
--compare it checks every CSV row against the row of the same label in the output of
`lab scenario NAME --json`: same columns, same request counts. Exit 0 when all agree.
Standard library only (plus lab.service.export for the comparison).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COUNTS = ("backend.write_ops", "backend.write_bytes", "backend.zero_ops", "backend.zero_bytes",
          "backend.trim_ops", "backend.flush_ops", "wire.write", "wire.zero", "wire.fast_zero",
          "wire.fast_zero_failed", "wire.flush", "server_log.write", "server_log.zero", "verified", "status")


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read().decode()
    return json.loads(text) if resp.headers.get_content_type() == "application/json" else text


def follow(base: str, sweep_id: str, after: int, progress: bool) -> tuple[Counter, int]:
    """Read /api/events from `after` until this sweep's sweep_done; returns counts by type and reconnects."""
    counts: Counter = Counter()
    last = after
    reconnects = -1
    while True:
        reconnects += 1
        req = urllib.request.Request(base + "/api/events", headers={"Last-Event-ID": str(last),
                                                                     "Accept": "text/event-stream"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                ev_id, ev_type, data = None, None, []
                for raw in resp:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id:"):
                        ev_id = int(line[3:].strip())
                    elif line.startswith("event:"):
                        ev_type = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and ev_id is not None:
                        if ev_id <= last:
                            raise SystemExit(f"event id went backwards or repeated: {ev_id} after {last}")
                        last = ev_id
                        counts[ev_type] += 1
                        ev = json.loads("\n".join(data))
                        if progress and ev_type in ("sweep", "done") and ev.get("sweep_id") == sweep_id:
                            _show(ev)
                        if ev_type == "sweep_done" and ev.get("sweep_id") == sweep_id:
                            return counts, reconnects
                        ev_id, ev_type, data = None, None, []
                    elif line == "":
                        ev_id, ev_type, data = None, None, []
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            print(f"stream dropped ({e}); resuming after {last}", file=sys.stderr)
            time.sleep(1)


def _show(ev: dict[str, Any]) -> None:
    if ev["type"] == "done":
        run = ev["run"]
        b = run.get("backend") or {}
        print(f"  {run.get('label') or run['id']:22} {run['status']:10} {run.get('duration_s') or 0:7.2f} s  "
              f"writes {b.get('write_ops', '-'):>4}  zeroes {b.get('zero_ops', '-'):>3}", file=sys.stderr)
    else:
        print(f"sweep {ev['status']}: {ev['finished']}/{ev['total']}", file=sys.stderr)


def compare(csv_text: str, cli_path: Path) -> bool:
    from lab.service.export import cell, flatten

    cli = {r["label"]: r for r in json.loads(cli_path.read_text())["rows"]}
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    ok = True
    print(f"\n| row | columns | {' | '.join(c.split('.')[-1] for c in COUNTS[:6])} | verdict |")
    print("|---|---|" + "---|" * 6 + "---|")
    for row in rows:
        ref = cli.get(row["label"])
        if ref is None:
            print(f"| {row['label']} | no CLI row | | | | | | | MISS |")
            ok = False
            continue
        flat = {k: cell(v) for k, v in flatten(ref).items()}
        same_cols = set(flat) == set(row)
        diffs = [c for c in COUNTS if row[c] != flat[c]]
        good = same_cols and not diffs
        ok &= good
        shown = " | ".join(row[c] for c in COUNTS[:6])
        print(f"| {row['label']} | {'same' if same_cols else 'DIFFER'} | {shown} | "
              f"{'same' if good else 'DIFFER: ' + ', '.join(f'{c} {row[c]} vs {flat[c]}' for c in diffs)} |")
    missing = set(cli) - {r["label"] for r in rows}
    if missing:
        print(f"rows only in the CLI output: {sorted(missing)}")
        ok = False
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", nargs="?", default="case-study")
    p.add_argument("--url", default=os.environ.get("LAB_URL", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("LAB_TOKEN"))
    p.add_argument("--only", help="comma-separated row keys")
    p.add_argument("--server", help='geometry for every row, JSON: \'{"size": "8M", "delay_write": "1ms"}\'')
    p.add_argument("--out", type=Path, help="write results.csv here")
    p.add_argument("--compare", type=Path, help="output of `lab scenario NAME --json` to compare with")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    base = args.url.rstrip("/")

    body: dict[str, Any] = {}
    if args.only:
        body["only"] = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.server:
        body["server"] = json.loads(args.server)
    after = call(base, "GET", "/api/runs?limit=1")["last_event_id"]
    t0 = time.perf_counter()
    try:
        sweep = call(base, "POST", f"/api/scenarios/{args.scenario}/runs", body, args.token)
    except urllib.error.HTTPError as e:
        print(f"api_sweep: {e.code} {e.read().decode()}", file=sys.stderr)
        return 2
    print(f"sweep {sweep['id']}: {sweep['total']} runs of {args.scenario}", file=sys.stderr)
    counts, reconnects = follow(base, sweep["id"], after, not args.quiet)
    wall = time.perf_counter() - t0
    final = call(base, "GET", f"/api/sweeps/{sweep['id']}")
    text = call(base, "GET", f"/api/results.csv?sweep_id={sweep['id']}")
    if args.out:
        args.out.write_text(text)
    n_rows = len(list(csv.DictReader(io.StringIO(text))))
    print(f"sweep {final['status']} {final['counts']} in {wall:.1f} s; {n_rows} CSV rows; "
          f"events {dict(counts)}; reconnects {reconnects}")
    if args.compare:
        return 0 if compare(text, args.compare) else 1
    return 0 if final["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
