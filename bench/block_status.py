"""The block-status experiment, measured: is this kernel's tmpfs SEEK_HOLE linear (so asking
the destination before each hole is quadratic)?

For each storage (tmpfs, ext4 and the others available) and a growing disk (64 KiB data,
64 KiB hole), the qemu-bs client copies onto a *reused* destination (every byte data:
disk_init=data), asking one BLOCK_STATUS per hole through nbdkit's file plugin with block
status visible. Printed: the questions, their total time, per question, and the growth
factor per doubling (2 = linear in the disk, 4 = quadratic). Then the same on a fresh
(sparse) destination, where every hole zero is skipped.
"""

from __future__ import annotations

import sys
from typing import Any

from _common import machine_note, parser, setup_env, table, verdict, write_json

setup_env()

from lab.domain.run import Run  # noqa: E402
from lab.domain.scenarios import BS_BASE  # noqa: E402
from lab.domain.spec import build_spec  # noqa: E402
from lab.host import storage  # noqa: E402
from lab.measure.execute import execute  # noqa: E402

LINEAR_MAX = 2.8  # growth per doubling of the disk: 2 is linear, 4 quadratic


def one(where: str, size: str, init: str, repeats: int = 1) -> dict[str, Any]:
    """The run whose questions took least time of `repeats` (a busy neighbour only adds time)."""
    spec = build_spec({**BS_BASE, "storage": where, "size": size, "disk_init": init})
    best = None
    for _ in range(repeats):
        run = execute(Run(client="qemu-bs", server=spec))
        if run.status != "succeeded" or not run.verified:
            raise SystemExit(f"{where} {size}: {run.status}: {run.error}")
        if best is None or run.wire.block_status_s < best.wire.block_status_s:
            best = run
    run = best
    w = run.wire
    return {"storage": where, "size": size, "init": init, "copy_s": run.duration_s, "questions": w.block_status,
            "bs_s": round(w.block_status_s, 4), "us_each": round(w.block_status_s / w.block_status * 1e6, 1),
            "skipped": w.zero_skipped}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per point, the fastest kept (default 3)")
    args = p.parse_args()
    repeats = 1 if args.quick else max(1, args.repeats)
    sizes = ("8M", "16M") if args.quick else ("32M", "64M", "128M", "256M")
    stores = [s for s in ("tmpfs", "ext4", "xfs", "btrfs", "datadir") if storage.availability()[s]["available"]]
    if args.quick:
        stores = stores[:2]
    if not stores:
        print("no file storage is available here:", storage.availability(), file=sys.stderr)
        return 0
    rows: list[dict[str, Any]] = []
    for where in stores:
        prev = None
        for size in sizes:
            r = one(where, size, "data", repeats)
            r["growth"] = round(r["bs_s"] / prev, 2) if prev else None
            prev = r["bs_s"]
            rows.append(r)
    fresh = [one(where, sizes[-1], "sparse", repeats) for where in stores]
    print(machine_note() + f"; fastest of {repeats} runs per point")
    # Target: the questions' total grows like the disk (x2 per doubling), not like its square (x4).
    print(table(["storage", "disk", "holes", "BLOCK_STATUS total s", "us each", "x per doubling", "linear (<= 2.8)",
                 "copy s"],
                [[r["storage"], r["size"], r["questions"], r["bs_s"], r["us_each"], r["growth"] or "-",
                  verdict(None if r["growth"] is None else r["growth"] <= LINEAR_MAX), r["copy_s"]] for r in rows],
                "Reused destination (every byte data): every question answered 'data'"))
    print(table(["storage", "disk", "holes", "BLOCK_STATUS total s", "us each", "zeroes skipped", "all skipped",
                 "copy s"],
                [[r["storage"], r["size"], r["questions"], r["bs_s"], r["us_each"], r["skipped"],
                  verdict(r["skipped"] == r["questions"]), r["copy_s"]] for r in fresh],
                "Fresh destination (sparse): every hole zero skipped"))
    write_json(args.json, {"reused": rows, "fresh": fresh})
    return 0


if __name__ == "__main__":
    sys.exit(main())
