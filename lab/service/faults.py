"""Fault injection, for the reliability tests and bench only, and only when the settings say
so explicitly (the setting `fault`, LAB_FAULT; logged loudly at start):

    kill-after-commit   SIGKILL the service right after a run's final row is committed,
                        before its `done` event (a power cut between result and event);
    pause-at:PHASE      hold every run at PHASE (setup, copy, verify) until it is cancelled
                        (at most PAUSE_MAX_S), so a cancel can land in that phase for sure.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

log = logging.getLogger("lab.service.faults")

FAULT_ENV = "LAB_FAULT"
FAULT_PHASES = ("setup", "copy", "verify")
PAUSE_MAX_S = 120.0


def parse_fault(spec: str | None) -> tuple[str, str | None] | None:
    """LAB_FAULT's value as (kind, argument); None when unset. ValueError for an unknown one."""
    spec = (spec or "").strip()
    if not spec:
        return None
    if spec == "kill-after-commit":
        return ("kill-after-commit", None)
    kind, _, arg = spec.partition(":")
    if kind == "pause-at" and arg in FAULT_PHASES:
        return ("pause-at", arg)
    raise ValueError(f"{FAULT_ENV}={spec!r}: use kill-after-commit or pause-at:{'|'.join(FAULT_PHASES)}")


@dataclass(frozen=True)
class Faults:
    """The injected fault, if any; its two hooks do nothing when none is."""

    fault: tuple[str, str | None] | None = None

    @classmethod
    def from_setting(cls, value: str | None) -> Faults:
        """The fault the setting names (None or empty: none). ValueError for an unknown one."""
        faults = cls(parse_fault(value))
        if faults.fault is not None:
            log.warning("FAULT INJECTION ACTIVE (%s=%s): for reliability tests only", FAULT_ENV, value)
        return faults

    def at_phase(self, run_id: str, phase: str | None, cancel: threading.Event) -> None:
        """pause-at:PHASE: hold the run entering `phase` until it is cancelled."""
        if self.fault is not None and self.fault == ("pause-at", phase):
            log.warning("fault injection: run %s held at %s until cancelled", run_id, phase)
            cancel.wait(PAUSE_MAX_S)

    def after_commit(self, run_id: str) -> None:
        """kill-after-commit: die between a run's committed final row and its `done` event."""
        if self.fault == ("kill-after-commit", None):
            log.warning("fault injection: SIGKILL after committing run %s, before its done event", run_id)
            os.kill(os.getpid(), signal.SIGKILL)
