"""`lab worker --broker URL`: this machine as one worker of a cluster (lab.cluster.worker).

It takes measurement jobs from the broker (and nothing else: it opens no port), runs them with
its own data dir, calibration and allow-lists, and stops with SIGTERM after draining.
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys
from typing import Any

from lab.cli.shared import MAX_WORKERS, bad
from lab.config import Settings
from lab.host.places import Core


def add_parser(sub: Any) -> None:
    w = sub.add_parser("worker", help="take measurement jobs from a cluster's broker (see docs/classroom.md)",
                       description="Run jobs the service sends through the Redis broker, on this machine, with "
                                   "its own data dir, calibration and allow-lists. Stops on SIGTERM after "
                                   "letting running jobs finish (up to --drain-s).")
    w.add_argument("--broker", help="the broker URL with its password (default: LAB_BROKER_URL, which keeps the "
                                    "password out of the process list)")
    w.add_argument("--name", help="this worker's name, unique in the cluster (default: LAB_WORKER_NAME, else "
                                  "the host name)")
    w.add_argument("--slots", type=int, help=f"jobs at once on this machine, 1 to {MAX_WORKERS} (default: "
                                             "LAB_WORKERS)")
    w.add_argument("--drain-s", type=float, default=20.0,
                   help="on SIGTERM, how long running jobs may go on before they are interrupted (default 20)")
    w.add_argument("--alive", action="store_true",
                   help="exit 0 if the worker of this name is up (its heartbeat is on the broker), else 1")


def default_name() -> str:
    """The host name, as a broker key allows it."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63].lstrip("-._") or "worker"


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from lab.service import broker

    url = args.broker or settings.broker
    if not url:
        return bad("--broker: give the broker URL (or set LAB_BROKER_URL)")
    try:
        broker.check_url(url)
    except broker.BrokerError as e:
        return bad(f"--broker: {e}")
    name = args.name or settings.worker_name or default_name()
    if not broker.NAME.match(name) or name == "local":
        return bad(f"--name: {name!r}: letters, digits, '.', '_' and '-' only, at most 63, and not 'local' "
                   "(the service's own machine)")
    if args.alive:
        return _alive(url, name)
    slots = args.slots if args.slots is not None else settings.workers
    if not 1 <= slots <= MAX_WORKERS:
        return bad(f"--slots: must be between 1 and {MAX_WORKERS} (got {slots})")
    if not 0 <= args.drain_s <= 3600:
        return bad(f"--drain-s: must be between 0 and 3600 seconds (got {args.drain_s})")
    from lab.cluster.worker import LabWorker  # celery: loaded only when a worker starts

    level = settings.log_level.upper() if settings.log_level != "trace" else "DEBUG"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lab").info("worker %s: broker %s, %d slots", name, broker.redact(url), slots)
    worker = LabWorker(url, name, slots, Core.from_settings(settings), image_cache_bytes=settings.image_cache_bytes,
                       run_timeout_s=settings.run_timeout_s, calibrate=settings.auto_calibrate is not False,
                       drain_s=args.drain_s)
    return worker.serve(loglevel=level)


def _alive(url: str, name: str) -> int:
    """The container's health check: this worker's heartbeat is on the broker and says it works."""
    import json

    from lab.service import broker

    try:
        raw = broker.redis_client(url).get(broker.worker_key(name))
    except Exception as e:
        print(f"lab worker: broker {broker.redact(url)} does not answer: {type(e).__name__}", file=sys.stderr)
        return 1
    state = json.loads(raw).get("state") if raw else None
    if state in ("ready", "calibrating"):
        return 0
    print(f"lab worker: {name} is {state or 'not on the broker'}", file=sys.stderr)
    return 1
