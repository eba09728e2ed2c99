"""Era clients run in a child process, as a real qemu-img would.

In the service the copy would otherwise share Python's GIL with the web layer, and an
audience of hundreds of event-stream subscribers measurably slowed the very copy being
timed. A child process keeps the measurement clean, and a cancel is a plain kill of its
process group. Protocol: the job as one JSON object on stdin; JSON lines on stdout:
{"report": {...}} while copying, then {"result": {...}} or {"error": "..."}. This is the parent's
side; lab/nbd/clients/child_main.py is the child's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Any

from lab.domain.counts import WireCounts
from lab.host import cpu, procs
from lab.nbd.clients.base import ClientError, ClientResult, CopyContext, supervised


def run_in_child(client_id: str, ctx: CopyContext) -> ClientResult:
    job = {
        "client": client_id,
        "uri": ctx.uri,
        "queue_depth": ctx.queue_depth,
        "source_format": ctx.source_format,
        "flags": ctx.flags.to_dict(),
        "image": {"size": ctx.image.size, "pattern": ctx.image.pattern, "dir": str(ctx.image.dir),
                  "extents": [list(e) for e in ctx.image.extents]},
    }
    outcome: dict[str, Any] = {}
    # stderr goes to a file, not a pipe: a chatty child can never block on it while we read stdout.
    with tempfile.TemporaryFile(mode="w+") as errfile:
        proc = procs.spawn([sys.executable, "-m", "lab.nbd.clients.child_main"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=errfile, text=True, bufsize=1)
        with supervised(proc, ctx):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                msg = json.loads(line)
                if "report" in msg:
                    ctx.report(msg["report"])
                else:
                    outcome = msg
            cpu_s = cpu.reap(proc)
        errfile.seek(0)
        stderr = errfile.read()
    if "error" in outcome:
        raise ClientError(outcome["error"])
    if "result" not in outcome:
        raise ClientError(f"{client_id} client process exited with status {proc.returncode}: {stderr.strip()[-500:]}")
    r = outcome["result"]
    wire = WireCounts(**r["wire"])
    return ClientResult(wire=wire, notes=r["notes"], elapsed_s=r["elapsed_s"], cpu_s=cpu_s)
