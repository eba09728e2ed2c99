"""The zero audit: is this server's zero safe, and is its fast zero fast? One call, one answer.

    run_audit({"kind": "nbd-server", "storage": "tmpfs"}) -> the audit as plain data (JSON)

The real server is started bare on a disk on the chosen storage (lab.nbd.audit_targets: no
proxy, no filter, so its flags and its bugs are its own); a matrix of zero requests is sent
(lab.nbd.audit_cells), each read back with its neighbours (lab.nbd.audit_run); the verdicts
come in order of importance (lab.nbd.audit_verdict): `unsafe` overrides everything, then the
speed verdict with the cheap/dear split; every failing cell gets a reproducer a person can
paste and a draft upstream report (lab.nbd.audit_repro).

Bounded: the disk is the largest request plus its guards (at most LAB_MAX_SIZE per request), a
deadline stops the audit (the cells done so far still count, and the audit says it stopped),
and a cancel event stops it between two requests. The server and the storage are released on
every path.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from lab.domain.latency import by_operation
from lab.domain.limits import DEFAULT_LIMITS, Limits
from lab.domain.units import format_size
from lab.host.places import Places
from lab.nbd import audit_repro, audit_verdict
from lab.nbd.audit_cells import DEFAULT_SIZES, Plan, parse_sizes
from lab.nbd.audit_run import AuditStopped, GroupRunner, read_flags
from lab.nbd.audit_run import Limits as Bounds
from lab.nbd.audit_targets import Target, make_target

AUDIT_VERSION = 1
DEFAULT_DEADLINE_S = 1800.0
SERVER_FIELDS = ("kind", "plugin", "storage", "disk_format", "target", "destructive")


class AuditError(ValueError):
    """A request the audit cannot carry out; `field` names what is at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def make_plan(sizes: list[str] | tuple[str, ...] | None = None, *, max_size: int | None = None,
              flags: tuple[str, ...] | None = None, disks: tuple[str, ...] | None = None,
              inflight: int | None = None, limits: Limits = DEFAULT_LIMITS) -> Plan:
    """The plan from its options, checked (AuditError names the option at fault)."""
    from lab.nbd.audit_cells import DISKS, FLAG_NAMES, INFLIGHT

    try:
        chosen = parse_sizes(list(sizes or DEFAULT_SIZES))
    except ValueError as e:
        raise AuditError("sizes", str(e)) from None
    cap = min(max_size or limits.max_size, limits.max_size)
    chosen = [s for s in chosen if s.length <= cap]
    if not chosen:
        raise AuditError("max_size", f"no request size is {format_size(cap)} or less")
    _check_names("flags", flags, FLAG_NAMES)
    _check_names("disks", disks, DISKS)
    depth = INFLIGHT if inflight is None else inflight
    if not 1 <= depth <= 16:
        raise AuditError("inflight", f"must be between 1 and 16 (got {depth})")
    return Plan(tuple(chosen), tuple(flags or FLAG_NAMES), tuple(disks or DISKS), inflight=depth)


def _check_names(field: str, got: tuple[str, ...] | None, allowed: tuple[str, ...]) -> None:
    bad = [x for x in got or () if x not in allowed]
    if bad:
        raise AuditError(field, f"{bad[0]!r} is not one of {', '.join(allowed)}")


def server_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The server options an audit takes (the rest of a server spec has no meaning here), checked."""
    out = {k: v for k, v in fields.items() if k in SERVER_FIELDS and v not in (None, "")}
    kind = out.setdefault("kind", "nbdkit")
    if kind == "nbdkit":
        out.setdefault("plugin", "file" if out.get("storage") else "memory")
        if out["plugin"] == "memory" and out.get("storage"):
            raise AuditError("storage", "the memory plugin keeps its disk in RAM: use plugin file for a storage")
    elif out.pop("plugin", "memory") != "memory":  # the spec's default is harmless; anything else a mistake
        raise AuditError("plugin", "plugin applies to kind nbdkit only")
    if kind == "external":
        if out.get("storage"):
            raise AuditError("storage", "an external server has its own storage")
    elif out.get("plugin") != "memory":
        out.setdefault("storage", "tmpfs")
    if kind != "qemu-nbd" and out.pop("disk_format", "raw") != "raw":
        raise AuditError("disk_format", "qcow2 is served by kind qemu-nbd only")
    return out


def check_request(fields: dict[str, Any], plan: Plan, limits: Limits = DEFAULT_LIMITS,
                  places: Places | None = None, api: bool = False) -> dict[str, Any]:
    """The server fields, checked with the place and the target before anything starts (AuditError names
    the field at fault). Returns the fields the audit uses."""
    from lab.domain import targets as external
    from lab.host import userstore
    from lab.nbd import backends

    server = server_fields(fields)
    if server.get("storage") == "tmpfs" and not fields.get("storage"):
        server["storage"] = _default_storage(places)
    kind = server["kind"]
    if kind not in ("nbdkit", "qemu-nbd", "nbd-server", "external"):
        raise AuditError("kind", f"must be one of nbdkit, qemu-nbd, nbd-server, external (got {kind!r})")
    if kind != "external" and not backends.availability(limits)[kind]["available"]:
        raise AuditError("kind", str(backends.availability(limits)[kind]["reason"]))
    try:
        if kind == "external":
            external.check_target(server.get("target"), limits)
            if not server.get("destructive"):
                raise AuditError("destructive", "the audit overwrites the start of the target: say destructive")
        elif server.get("storage"):
            place = userstore.parse_place(str(server["storage"]))
            userstore.check_place(place, plan.disk_size(), limits, destructive=bool(server.get("destructive")),
                                  api=api, places=places)
    except external.ExternalError as e:
        raise AuditError(e.field, e.message) from None
    except userstore.StorageError as e:
        raise AuditError("storage", str(e)) from None
    return server


def _default_storage(places: Places | None) -> str:
    """tmpfs where the lab may mount one, else a tmpfs already mounted (shm), else the data dir."""
    from lab.host import storage

    have = storage.availability(places)
    return next((s for s in ("tmpfs", "shm", "datadir") if have.get(s, {}).get("available")), "tmpfs")


def label(server: dict[str, Any]) -> str:
    kind = server.get("kind", "nbdkit")
    what = f"nbdkit {server.get('plugin', 'memory')}" if kind == "nbdkit" else kind
    if kind == "qemu-nbd":
        what += f" {server.get('disk_format') or 'raw'}"
    if kind == "external":
        what += f" {server.get('target')}"
    return what + (f" on {server['storage']}" if server.get("storage") else "")


def host_versions() -> dict[str, str]:
    from lab.nbd.audit_targets import tool_version

    try:
        import nbd

        libnbd = nbd.NBD().get_version()
    except Exception:
        libnbd = "unknown"
    return {"kernel": platform.release(), "libnbd": libnbd, "nbdkit": tool_version(["nbdkit", "--version"]),
            "qemu-nbd": tool_version(["qemu-nbd", "--version"]),
            "nbd-server": tool_version(["nbd-server", "-V"]).replace("This is nbd-server version ", "")}


def run_audit(fields: dict[str, Any], plan: Plan | None = None, *, deadline_s: float = DEFAULT_DEADLINE_S,
              cancel: threading.Event | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
              places: Places | None = None, limits: Limits = DEFAULT_LIMITS, api: bool = False) -> dict[str, Any]:
    """Audit the server `fields` describe; the result as plain data. Raises before anything starts
    when the fields or the place are wrong (AuditError, lab.host.storage.StorageError, ExternalError)."""
    plan = plan or make_plan(limits=limits)
    server = check_request(fields, plan, limits, places, api)
    started, t0 = time.time(), time.monotonic()
    bounds = Bounds(t0 + deadline_s, cancel or threading.Event())
    groups = plan.groups()
    target = make_target(server, plan.disk_size(), places, limits, api)
    cells: list[dict[str, Any]] = []
    status, stopped = "done", None
    flags: dict[str, Any] = {}
    target.start()
    try:
        for i, g in enumerate(groups):
            if on_event:
                on_event({"phase": "group", "done": i, "total": len(groups), "key": g.key})
            flags = _run_group(target, g, plan, bounds, cells, flags)
    except AuditStopped as e:
        status, stopped = ("cancelled" if e.reason == "cancelled" else "incomplete"), e.reason
    finally:
        described = target.describe()
        target.stop()
    return assemble(server, plan, described, flags, cells, status=status, stopped=stopped, started=started,
                    seconds=time.monotonic() - t0, deadline_s=deadline_s, total_groups=len(groups))


def _run_group(target: Target, g: Any, plan: Plan, bounds: Bounds, cells: list[dict[str, Any]],
               flags: dict[str, Any]) -> dict[str, Any]:
    bounds.check()
    h = target.connect()
    try:
        flags = flags or read_flags(h)
        if flags["is_read_only"]:
            raise AuditError("server", "the export is read-only: the audit writes")
        if flags["size"] < plan.disk_size():
            raise AuditError("server", f"the export holds {format_size(flags['size'])}, fewer than the "
                                       f"audit's {format_size(plan.disk_size())}")
        runner = GroupRunner(target, g, flags, bounds, plan.repeats)
        try:
            runner.run(h)
        finally:
            cells.extend(runner.cells)
    finally:
        target.disconnect(h)
    return flags


def assemble(server: dict[str, Any], plan: Plan, described: dict[str, Any], flags: dict[str, Any],
             cells: list[dict[str, Any]], *, status: str, stopped: str | None, started: float, seconds: float,
             deadline_s: float, total_groups: int) -> dict[str, Any]:
    audit_verdict.judge_costs(cells)
    safe = audit_verdict.safety(cells)
    spd = audit_verdict.speed(cells, flags) if flags else {"verdict": "unknown", "why": "nothing was sent"}
    verdict = "unsafe" if safe["unsafe"] else spd["verdict"]
    out: dict[str, Any] = {
        "audit_version": AUDIT_VERSION, "label": label(server), "server": {**server, **described},
        "host": {**host_versions(), "uid": os.geteuid()}, "flags": flags, "plan": plan.to_dict(),
        "status": status, "stopped": stopped, "started_at": started, "seconds": round(seconds, 3),
        "deadline_s": deadline_s, "groups": {"done": len({c["index"] for c in cells}), "total": total_groups},
        "verdict": verdict, "safety": safe, "speed": spd, "cells": cells,
        "warnings": sorted({c["warning"] for c in cells if c.get("warning")}),
        **by_operation((f"zero {c['flags']}", c["size"], s) for c in cells if c.get("request_s")
                       for s in c["request_s"]),
    }
    out["why"] = _why(out)
    out["reproducers"] = audit_repro.reproducers(out)
    out["upstream_report"] = audit_repro.upstream_report(out) if safe["unsafe"] else None
    return out


def _why(a: dict[str, Any]) -> str:
    s = a["safety"]
    if s["unsafe"]:
        fb = s["first_bad"]
        where = "beside the range" if fb["outside_range"] else "in the zeroed range"
        return (f"{s['bad_cells']} of {s['cells']} zero requests read back wrong; first: {fb['request']} "
                f"({fb['position']} on its connection): {fb['bytes']} bytes {where}, from offset "
                f"{format_size(fb['offset_in_request'] or 0)} into the request")
    return a["speed"]["why"]
