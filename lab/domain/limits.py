"""The bounds server fields are checked against (lab.domain.spec), with their defaults.

A value, not a setting: lab.config.Settings declares the LAB_ variables that tighten or widen
these bounds and builds a `Limits` from them (`Settings.limits`); the defaults here are the
settings' defaults (Settings' fields read them from DEFAULT_LIMITS, so they are written once).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_size: int = 1 << 30  # the largest image a server may have
    max_delay_ms: float = 1000.0  # the largest per-request delay
    min_maxdata: int = 4096  # the smallest and largest maxdata (largest backend write)
    max_maxdata: int = 32 * MiB
    # The NBD targets a server of kind external may use (lab.domain.targets): none unless listed.
    external_targets: tuple[str, ...] = ()
    # Places the zero audit may use that the lab did not make (lab.host.userstore): block devices it
    # may overwrite, and directories an API request may put a scratch disk in (the CLI takes any directory).
    audit_devices: tuple[str, ...] = ()
    audit_paths: tuple[str, ...] = ()


DEFAULT_LIMITS = Limits()
