"""The versions of the tools a measurement depends on (nbdkit, qemu-img, libnbd, nbdcopy, Python, the
lab): looked up once at start-up and shown by /api/health, so a figure can be traced to what made it."""

from __future__ import annotations

import platform
from importlib import metadata

from lab.nbd.clients.real import version
from lab.nbd.servers import nbdkit_version


def tool_versions() -> dict[str, str]:
    try:
        import nbd  # the bindings, when asked (a missing one is said, not fatal)

        libnbd = str(nbd.NBD().get_version())
    except Exception as e:  # the bindings are missing: say so rather than fail health
        libnbd = f"unavailable ({type(e).__name__})"
    out = {"nbdkit": nbdkit_version(), "qemu-img": version("qemu-img"), "libnbd": libnbd,
           "nbdcopy": version("nbdcopy"), "python": platform.python_version()}
    for dist in ("fastapi", "fastzero-lab"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out
