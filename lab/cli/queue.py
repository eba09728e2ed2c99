"""`lab queue [--url URL]`: a running service's queue, as GET /api/v1/queue answers it: the runs waiting
in the order they will start (the teacher's first, then students taking turns), about when each may
start, and each worker with what runs there."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from lab.cli.shared import bad

EXIT_UNREACHABLE = 1


def add_parser(sub: Any) -> None:
    q = sub.add_parser("queue", help="a running service's queue: place, estimated start, lane and student of "
                                     "each waiting run, and its workers")
    q.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)")
    q.add_argument("--json", action="store_true", help="print GET /api/v1/queue's answer as it is")


def when(seconds: float | None) -> str:
    if seconds is None:
        return "no worker yet"
    if seconds < 1:
        return "now"
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.0f} min"


def table(q: dict[str, Any]) -> str:
    lines = [("#", "starts", "lane", "student", "run")]
    lines += [(str(r["queue_position"]), when(r["estimated_start_s"]), r["lane"], r.get("student") or "-", r["id"])
              for r in q["runs"]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    if not q["runs"]:
        out = ["nothing waits"]
    for w in q["workers"]:
        running = ", ".join(w["running"]) or "idle"
        out.append(f"worker {w['id']}: {len(w['running'])} of {w['slots']} slots ({running})")
    return "\n".join(out)


def cmd_queue(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        return bad(f"--url: must start with http:// or https:// (got {args.url!r})")
    url = args.url.rstrip("/") + "/api/v1/queue"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            q = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"lab: error: {url}: {getattr(e, 'reason', e)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(q) if args.json else table(q))
    return 0
