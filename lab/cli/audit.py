"""`lab audit`: is this server's zero safe, and is its fast zero fast? (lab.nbd.audit)

    lab audit --kind nbd-server --storage tmpfs --json
    lab audit --plugin file --storage ext2 --html ext2.html
    lab audit --kind external --target /run/my.sock --destructive
    lab audit-report nbd-tmpfs.json nbd-ext4.json --html side-by-side.html

Exit 0: every zero read back right; 1: `unsafe` (a cell read back wrong: the first bad offset
and byte count are printed), or the audit could not be carried out; 2: bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.cli.shared import Interrupt, bad
from lab.host.places import Core

KINDS = ("nbdkit", "qemu-nbd", "nbd-server", "external")


def add_parsers(sub: Any) -> None:
    a = sub.add_parser("audit", help="the zero audit: every zero request size x flags x disk read back "
                       "(safety first), then what a zero costs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--kind", default="nbdkit", help=f"server kind: {', '.join(KINDS)} (default nbdkit)")
    a.add_argument("--plugin", help="nbdkit plugin: memory or file (default: file with a storage, else memory)")
    a.add_argument("--storage", help="where the disk lives: tmpfs, ramfs, datadir, ext2, ext4, xfs, btrfs, vfat, "
                   "blockdev, path:/DIR (a scratch file there), dev:/dev/X (overwritten; listed in "
                   "LAB_AUDIT_DEVICES, with --destructive); default tmpfs")
    a.add_argument("--disk-format", help="qemu-nbd's disk format: raw or qcow2 (default raw)")
    a.add_argument("--target", help="kind external: a Unix socket path or host:port listed in LAB_EXTERNAL_TARGETS")
    a.add_argument("--destructive", action="store_true", help="allow overwriting an external target or a device")
    a.add_argument("--sizes", help="comma-separated request sizes, such as 4K,64M-4K,64M+4K,128M,1G "
                   "(SIZE@N: starting N bytes into a 4 KiB block; default: the full list, 4K to 1G)")
    a.add_argument("--quick", action="store_true", help="a shorter list of sizes (4K to 128M, the 64 MiB edges)")
    a.add_argument("--max-size", help="leave out requests larger than this (default LAB_MAX_SIZE)")
    a.add_argument("--flags", help="comma-separated: none, no-hole, fast-zero, no-hole+fast-zero (default all)")
    a.add_argument("--disks", help="comma-separated: dirty, sparse (default both)")
    a.add_argument("--inflight", type=int, help="requests at once in the 'several in flight' groups "
                   "(1: none of those; default 4)")
    a.add_argument("--deadline", type=float, default=1800.0, help="stop after this many seconds (default 1800)")
    a.add_argument("--json", action="store_true", help="print the audit as one JSON object")
    a.add_argument("--out", help="also write the JSON to this file")
    a.add_argument("--html", help="also write the self-contained HTML report to this file")

    r = sub.add_parser("audit-report", help="set audits (their JSON files) side by side in one HTML page")
    r.add_argument("files", nargs="+", help="audit JSON files (lab audit --json or --out)")
    r.add_argument("--html", required=True, help="the HTML file to write")
    r.add_argument("--title", help="the page's title")


def _csv(text: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def plan_from(args: argparse.Namespace, core: Core) -> Any:
    from lab.domain.units import parse_size
    from lab.nbd import audit
    from lab.nbd.audit_cells import QUICK_SIZES

    max_size = parse_size(args.max_size) if args.max_size else None
    sizes = _csv(args.sizes) or (QUICK_SIZES if args.quick else None)
    return audit.make_plan(sizes, max_size=max_size, flags=_csv(args.flags), disks=_csv(args.disks),
                           inflight=args.inflight, limits=core.limits)


def cmd_audit(args: argparse.Namespace, core: Core) -> int:
    from lab.domain.targets import ExternalError
    from lab.host.storage import StorageError
    from lab.nbd import audit
    from lab.nbd.backends import KindError
    from lab.service import audit_report

    if not 0 < args.deadline <= 86400:
        return bad(f"--deadline: must be between 0 and 86400 seconds (got {args.deadline})")
    fields = {"kind": args.kind, "plugin": args.plugin, "storage": args.storage, "disk_format": args.disk_format,
              "target": args.target, "destructive": args.destructive}
    try:
        plan = plan_from(args, core)
        audit.check_request(fields, plan, core.limits, core.places)
    except ValueError as e:
        return bad(_message(e))
    progress = None if args.json else (lambda e: print(f"  {e['done'] + 1}/{e['total']}: {e['key']}",
                                                       file=sys.stderr))
    try:
        with Interrupt() as cancel:
            result = audit.run_audit(fields, plan, deadline_s=args.deadline, cancel=cancel, on_event=progress,
                                     places=core.places, limits=core.limits)
    except (audit.AuditError, ExternalError) as e:
        return bad(_message(e))
    except (StorageError, KindError, OSError, RuntimeError) as e:
        print(f"lab audit: {e}", file=sys.stderr)
        return 1
    _write(args, result)
    print(json.dumps(result) if args.json else audit_report.text(result))
    if not args.json and result["reproducers"]:
        print("\nreproducer for the first failing request (root; exits 1 while the bug is there):\n")
        print(result["reproducers"][0]["script"])
    return 1 if result["verdict"] == "unsafe" or result["status"] == "cancelled" else 0


def _message(e: Exception) -> str:
    field = getattr(e, "field", None)
    msg = getattr(e, "message", None) or str(e)
    return f"--{field.replace('_', '-')}: {msg}" if field and field != "server" else msg


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    from lab.service import audit_report

    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.html:
        Path(args.html).write_text(audit_report.html_page([result]))


def cmd_audit_report(args: argparse.Namespace) -> int:
    from lab.service import audit_report

    audits = []
    for f in args.files:
        try:
            a = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            return bad(f"{f}: {e}")
        if not isinstance(a, dict) or "cells" not in a or "verdict" not in a:
            return bad(f"{f}: not an audit (lab audit --json)")
        audits.append(a)
    Path(args.html).write_text(audit_report.html_page(audits, args.title))
    for a in audits:
        print(f"{a['label']}: {a['verdict']}")
    return 1 if any(a["verdict"] == "unsafe" for a in audits) else 0
