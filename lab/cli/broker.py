"""`lab broker`: Debian's redis-server as the cluster's broker, its password taken from LAB_BROKER_URL.

One variable then configures the three roles alike (the service, each `lab worker`, the broker):
compose's `cluster` profile runs this in its `redis` service. The configuration (lab.service.broker.
redis_config: a password, no persistence) reaches redis-server on its stdin: in no file, not on its command line.
`--ping` asks a running broker (the URL's) whether it answers: the container's health check.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from lab.cli.shared import bad
from lab.config import Settings
from lab.host import procs


def add_parser(sub: Any) -> None:
    b = sub.add_parser("broker", help="run redis-server as the cluster's broker (password from LAB_BROKER_URL)",
                       description="Run Debian's redis-server for cluster mode, with the password and port of "
                                   "LAB_BROKER_URL and nothing persisted (see docs/classroom.md#more-machines).")
    b.add_argument("--bind", default="127.0.0.1",
                   help="addresses to listen on, space-separated (default 127.0.0.1; 0.0.0.0 for other hosts)")
    b.add_argument("--ping", action="store_true", help="exit 0 if the broker of LAB_BROKER_URL answers, else 1")


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from kombu.utils.url import url_to_parts

    from lab.service import broker

    url = settings.broker
    if not url:
        return bad("LAB_BROKER_URL: set it to redis://:PASSWORD@HOST:6379/0 (the password the broker will ask)")
    try:
        secret = broker.password(url)
        parts = url_to_parts(url)
    except broker.BrokerError as e:
        return bad(f"LAB_BROKER_URL: {e}")
    if args.ping:
        try:
            return 0 if broker.redis_client(url).ping() else 1
        except Exception as e:
            print(f"lab broker: {broker.redact(url)} does not answer: {type(e).__name__}", file=sys.stderr)
            return 1
    if parts.scheme != "redis":
        return bad("LAB_BROKER_URL: `lab broker` serves redis://:PASSWORD@HOST:PORT/0 (TLS or a Unix socket: "
                   "run redis-server with a configuration of your own)")
    server = shutil.which("redis-server")
    if server is None:
        print("lab broker: redis-server is not installed (Debian package redis-server)", file=sys.stderr)
        return 1
    bind = tuple(a for a in args.bind.split() if a)
    try:
        text = broker.redis_config(secret, parts.port or 6379, bind, workdir=tempfile.gettempdir())
    except broker.BrokerError as e:
        return bad(f"LAB_BROKER_URL: {e}")
    print(f"lab broker: redis-server on {' '.join(bind)} port {parts.port or 6379}", file=sys.stderr, flush=True)
    # `redis-server -` reads its configuration from stdin: the password is in no file and no argv
    proc = procs.spawn([server, "-"], stdin=subprocess.PIPE, env=procs.child_env())
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.close()
    for sig in (signal.SIGTERM, signal.SIGINT):  # passed on; redis-server exits, and so do we
        signal.signal(sig, lambda sig, _frame: proc.send_signal(sig))
    return proc.wait()
