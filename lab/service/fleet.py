"""In cluster mode, what the workers have: server fields are checked against them, not this machine.

A lab.domain.spec.MachineCheck like lab.nbd.backends.Machine, over the capabilities the `lab worker`s
offer now (their heartbeats, through the scheduler): a field asking for a kind or a storage that no
connected worker offers is refused, naming the field and the workers. With no worker connected yet,
nothing is refused: the job waits in the queue for one (GET /api/v1/workers says none is there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from lab.domain.scenarios import Row, Scenario
from lab.domain.spec import FieldProblem, ServerSpec
from lab.nbd.backends import needs
from lab.service.scheduler import LOCAL, Worker


@dataclass
class Fleet:
    workers: Callable[[], list[Worker]]  # the scheduler's workers (the service's own, LOCAL, is left out)

    def offered(self) -> tuple[frozenset[str], list[str]] | None:
        """(the capabilities some worker offers, the workers' names), None when no worker is connected."""
        remote = [w for w in self.workers() if w.id != LOCAL]
        if not remote:
            return None
        return frozenset().union(*(w.capabilities for w in remote)), sorted(w.id for w in remote)

    def __call__(self, spec: ServerSpec) -> Iterator[FieldProblem]:
        yield from self._missing(needs(spec))

    def _missing(self, wanted: tuple[str, ...]) -> Iterator[FieldProblem]:
        got = self.offered()
        if got is None:
            return
        caps, names = got
        for cap in wanted:
            if cap not in caps:
                field, value = cap.split(":", 1)
                yield FieldProblem(field, f"no worker offers {field} {value} (workers: {', '.join(names)})")

    def unavailable(self, row: Row) -> str | None:
        """Why no worker can run a scenario row, or None (each worker checks the rest when it runs it)."""
        kind, st = row.server.get("kind", "nbdkit"), row.server.get("storage")
        wanted = (f"kind:{kind}", *((f"storage:{st}",) if st else ()))
        problem = next(self._missing(wanted), None)
        return None if problem is None else f"{problem.field}: {problem.message}"

    def here(self, row: Row) -> Row:
        """The row as the workers run it: itself, else the first of its alternatives some worker can run,
        else itself with `available` False and every reason (as lab.nbd.backends.Machine.here)."""
        reasons = []
        for candidate in (row, *row.alternatives):
            why = self.unavailable(candidate)
            if why is None:
                return replace(candidate, alternatives=(), available=True, reason=None)
            reasons.append(why)
        return replace(row, alternatives=(), available=False, reason="; ".join(reasons))

    def scenario(self, s: Scenario) -> Scenario:
        return s.map_rows(self.here)

    def runnable(self, rows: list[Row]) -> tuple[list[Row], dict[str, str]]:
        """The rows some worker can run (an alternative standing in for a row none can), and
        {row key: why not} for the others."""
        keep, skipped = [], {}
        for r in rows:
            resolved = self.here(r)
            if resolved.available:
                keep.append(resolved)
            else:
                skipped[r.key] = resolved.reason or "no worker can run it"
        return keep, skipped
