"""What the two-process chain costs: the same copy on one nbdkit and on the front/back chain.

`zeromode=emulate fastzeromode=ignore` is built as two nbdkit processes (lab/nbd/servers.py):
every request crosses one more Unix socket (front nbd plugin -> back server). This script
forces that chain on a spec that does not need it (emulate + none: the same counts either
way) and alternates single/chain runs:
- the talk's geometry, qemu-4.2 (54 wire requests, 400 backend writes at 20/5 ms): the
  hop's share of a real row;
- 256 MiB all data, no delays, qemu-4.2 at queue depth 1 (every hop in series): the
  hop's cost per wire request and per MiB;
and finally runs the seventh reference row itself (emulate + ignore) at the talk's geometry.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from _common import MachineBusy, MiB, machine_note, median, parser, setup_env, table, verdict, write_json

setup_env()

from lab.domain.run import Run  # noqa: E402
from lab.domain.scenarios import REFERENCE_ROWS  # noqa: E402
from lab.domain.spec import build_spec  # noqa: E402
from lab.measure.execute import execute  # noqa: E402
from lab.nbd.servers import Server  # noqa: E402


def one(spec: Any, build: str, client: str = "qemu-4.2", depth: int = 1) -> Run:
    with Server(spec, build=build) as srv:
        run = execute(Run(client=client, server=spec, queue_depth=depth), server=srv, timeout=600)
    if run.status != "succeeded":
        raise RuntimeError(f"{build} run failed: {run.error}")
    return run


def compare(name: str, spec: Any, pairs: int) -> dict[str, Any]:
    got: dict[str, list[Run]] = {"single": [], "chain": []}
    busy = MachineBusy()
    for i in range(pairs):
        for build in (("single", "chain") if i % 2 == 0 else ("chain", "single")):
            got[build].append(one(spec, build))
    s = median([r.duration_s for r in got["single"]])
    c = median([r.duration_s for r in got["chain"]])
    r0 = got["chain"][0]
    wire = r0.server_log.write + r0.server_log.zero + r0.server_log.flush
    counts_same = all((r.backend.write_ops, r.backend.zero_ops) == (r0.backend.write_ops, r0.backend.zero_ops)
                      for rs in got.values() for r in rs)
    print(f"  {name}: single {s:.3f} s, chain {c:.3f} s", file=sys.stderr)
    return {"name": name, "single_s": s, "chain_s": c, "wire_requests": wire, "mib": spec.size / MiB,
            "backend": f"{r0.backend.write_ops} / {r0.backend.zero_ops}", "counts_same": counts_same,
            "busy": busy.cores()}


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    pairs = 1 if args.quick else 3
    talk = {"zeromode": "emulate", "fastzeromode": "none"}
    if args.quick:
        talk.update(size="16M", delay_write="4ms", delay_zero="1ms")
    fast = {"zeromode": "emulate", "fastzeromode": "none", "size": "32M" if args.quick else "256M",
            "pattern": "full", "delay_write": "0ms", "delay_zero": "0ms"}
    print(machine_note(), file=sys.stderr)
    results = [compare("talk geometry, qemu-4.2", build_spec(talk), pairs),
               compare("all data, no delays, qemu-4.2 depth 1", build_spec(fast), pairs)]
    rows = []
    for r in results:
        extra = r["chain_s"] - r["single_s"]
        rows.append([r["name"], r["single_s"], r["chain_s"], f"{r['chain_s'] / r['single_s']:.4f}",
                     f"{1e6 * extra / max(1, r['wire_requests']):.0f}", f"{1e3 * extra / r['mib']:.2f}",
                     r["wire_requests"], r["backend"], verdict(r["counts_same"]), f"{r['busy']:.2f}"])
    print(table(["copy", "one process s", "chain s", "chain / one", "hop us per wire request", "hop ms per MiB",
                 "wire requests", "backend W / Z", "same counts", "machine busy cores"], rows,
                title=f"The chain's hop (median of {pairs} alternating pair(s))"))
    print()

    row = next(r for r in REFERENCE_ROWS if r.key == "ref-emulate-ignore")
    fields = dict(row.server)
    if args.quick:
        fields.update(size="16M", delay_write="4ms", delay_zero="1ms")
    busy = MachineBusy()
    run = execute(Run(client=row.client, server=build_spec(fields), reference=row.reference), timeout=600)
    ref = row.reference
    ok = (run.status == "succeeded" and run.verified and
          (run.backend.write_ops, run.backend.zero_ops) == ((ref["write_ops"], 0) if not args.quick else
                                                            (run.backend.write_ops, 0)))
    within = abs(run.duration_s / ref["time_s"] - 1) <= 0.05 if not args.quick else None
    print(table(["row", "2019 s", "measured s", "measured / 2019", "target", "", "backend W / Z", "2019 W / Z",
                 "log: fast zeroes", "stats agree", "verified", "machine busy cores"],
                [[row.key, ref["time_s"], run.duration_s, f"{run.duration_s / ref['time_s']:.3f}", "1 +- 0.05",
                  verdict(within), f"{run.backend.write_ops} / {run.backend.zero_ops}",
                  f"{ref['write_ops']} / {ref['zero_ops']}", run.server_log.fast_zero,
                  "yes" if (run.stats_check or {}).get("agree") else "NO", "yes" if ok else "NO",
                  f"{busy.cores():.2f}"]],
                title="The seventh 2019 row on the chain" + (" (quick geometry)" if args.quick else "")))
    print()
    print(machine_note())
    write_json(args.json, {"hop": results, "seventh_row": run.to_dict()})
    return 0 if ok else 1


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
