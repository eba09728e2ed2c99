"""The child process of an era client: `python -m lab.nbd.clients.child_main`, spawned by
lab/nbd/clients/child.py (the protocol is described there): the job on stdin, JSON lines out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lab.domain.flags import ServerFlags
from lab.host.images import Image
from lab.nbd.clients import get_client
from lab.nbd.clients.base import ClientError, CopyContext
from lab.nbd.clients.eras import EraClient


def main() -> int:
    job = json.loads(sys.stdin.read())
    img = job["image"]
    image = Image(size=img["size"], pattern=img["pattern"], dir=Path(img["dir"]),
                  extents=tuple((o, n) for o, n in img["extents"]), chunk_hashes=())

    def emit(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    ctx = CopyContext(image=image, uri=job["uri"], flags=ServerFlags(**job["flags"]),
                      source_format=job["source_format"], queue_depth=job["queue_depth"],
                      report=lambda info: emit({"report": info}))
    client = get_client(job["client"])
    if not isinstance(client, EraClient):
        emit({"error": f"{job['client']} is not a re-enacted era: it runs as its own process"})
        return 1
    try:
        result = client.copy_here(ctx)
    except ClientError as e:
        emit({"error": str(e)})
        return 1
    emit({"result": {"wire": result.wire.to_dict() if result.wire else None, "notes": result.notes,
                     "elapsed_s": result.elapsed_s}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
