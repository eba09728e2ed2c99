"""The zero audit of every server kind x storage this machine has: one table, one side-by-side HTML page.

Each row is `lab audit` of one server (lab.nbd.audit): the verdict (`unsafe` first, then the speed verdict
with the cheap/dear split), the first bad request and where its stale data starts, the cost class of a plain
and a NO_HOLE zero of written data and what decided it (nbdkit's debug, the server's write calls, the
allocation, the loop device's bytes written, or the clock). PASS: the audit finished and its verdict is
the expected one where issue 25 states one (nbd-server and nbdkit's file plugin on ramfs/ext2 unsafe; ext4,
qemu-nbd and the memory plugin safe); "-" where nothing is expected.

    .venv/bin/python bench/audit_matrix.py --html audits.html --json audits.json   # full: 4K..1G, ~1-2 h
    .venv/bin/python bench/audit_matrix.py --quick                                  # 2 servers, small sizes
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

setup_env()

from lab.host import storage  # noqa: E402
from lab.nbd import audit, backends  # noqa: E402
from lab.service import audit_report  # noqa: E402

STORES = ("tmpfs", "ramfs", "datadir", "ext2", "ext4", "xfs", "btrfs", "vfat", "blockdev")
EXPECT_UNSAFE = {("nbd-server", None): True, ("nbdkit", "ramfs"): True, ("nbdkit", "ext2"): True,
                 ("nbdkit", "ext4"): False, ("qemu-nbd", None): False, ("nbdkit-memory", None): False}
QUICK = [{"plugin": "memory"}, {"kind": "nbd-server", "storage": "tmpfs"}]


def servers() -> list[dict[str, Any]]:
    kinds = {k for k, a in backends.availability().items() if a["available"]}
    stores = [s for s in STORES if storage.availability()[s]["available"]]
    out: list[dict[str, Any]] = [{"plugin": "memory"}]
    out += [{"plugin": "file", "storage": s} for s in stores]
    if "qemu-nbd" in kinds:
        out += [{"kind": "qemu-nbd", "storage": s} for s in stores]
    if "nbd-server" in kinds:
        out += [{"kind": "nbd-server", "storage": s} for s in stores]
    return out


def expected(fields: dict[str, Any]) -> bool | None:
    kind = fields.get("kind", "nbdkit")
    if kind == "nbdkit" and fields.get("plugin") == "memory":
        return EXPECT_UNSAFE[("nbdkit-memory", None)]
    return EXPECT_UNSAFE.get((kind, fields.get("storage")), EXPECT_UNSAFE.get((kind, None)))


def row(a: dict[str, Any], fields: dict[str, Any]) -> list[Any]:
    fb = a["safety"].get("first_bad") or {}
    where = f"{fb['request']} ({fb['position']}): +{fb['offset_in_request'] >> 20}M" if fb else "-"
    plain = next((c for c in a["cells"] if c["flags"] == "none" and c["disk"] == "dirty" and c.get("cost")), None)
    basis = (plain or {}).get("cost", {}).get("basis", "-")
    want = expected(fields)
    ok = None if want is None else (a["status"] == "done" and a["safety"]["unsafe"] == want)
    return [a["label"], a["verdict"], where, a["speed"].get("zero", "-"), a["speed"].get("no_hole", "-"), basis,
            f"{a['seconds']:.0f}", verdict(ok)]


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--html", help="write the audits side by side to this HTML file")
    args = p.parse_args()
    targets = QUICK if args.quick else servers()
    sizes = ["1M@512", "64M+4K"] if args.quick else None
    plan = audit.make_plan(sizes, flags=("none", "no-hole", "fast-zero") if args.quick else None,
                           inflight=1 if args.quick else None)
    audits, rows = [], []
    for fields in targets:
        try:
            a = audit.run_audit(fields, plan, deadline_s=3600)
        except Exception as e:  # one server failing does not hide the others
            print(f"{audit.label(fields)}: {e}", file=sys.stderr)
            continue
        audits.append(a)
        rows.append(row(a, fields))
    print(machine_note())
    print(table(["server", "verdict", "first bad request: stale from", "plain zero", "NO_HOLE zero",
                 "what decided the plain zero's cost", "s", "expected"], rows, "Zero audit, every kind x storage"))
    if args.html:
        Path(args.html).write_text(audit_report.html_page(audits))
    write_json(args.json, {"audits": audits})
    return 0


if __name__ == "__main__":
    sys.exit(main())
