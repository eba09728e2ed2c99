"""External NBD targets, safely: a listed target (lab.domain.targets) is opened once before it is used.

It is read for what it advertises: a read-only export, or one larger than the size limit, is
refused with a message saying so; writing (every run and every probe writes) needs
`destructive: true` / `--destructive`.
"""

from __future__ import annotations

from typing import Any

from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.spec import ServerSpec
from lab.domain.targets import ExternalError, Target
from lab.domain.units import format_size
from lab.nbd.handle import close_handle


def check_export(target: Target, spec: ServerSpec, destructive: bool,
                 limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Open the listed target once and refuse what must not be written. Returns its flags."""
    if not destructive:
        raise ExternalError("destructive", f"writing to the external target {target.text} destroys what it holds: "
                            "say destructive: true (--destructive) to allow it")
    import nbd  # the bindings, when a connection is made (as every module here)

    h = nbd.NBD()
    try:
        try:
            h.connect_uri(target.uri)
        except nbd.Error as e:
            raise ExternalError("target", f"cannot connect to {target.text}: {e}") from None
        size, ro = h.get_size(), bool(h.is_read_only())
    finally:
        close_handle(h)
    if ro:
        raise ExternalError("target", f"{target.text} is a read-only export: the lab only writes")
    limit = limits.max_size
    if size > limit:
        raise ExternalError("target", f"{target.text} is {format_size(size)}, larger than the size limit "
                            f"{format_size(limit)} (LAB_MAX_SIZE): refused")
    if size < spec.size:
        raise ExternalError("size", f"{target.text} is {format_size(size)}, smaller than the run's "
                            f"size {format_size(spec.size)}")
    return {"size": size, "read_only": ro}
