"""The class's side of the store: who ran what, and the guesses made before the talk's acts.

A mixin of lab.service.store.Store (its connections and write transaction); the tables come from
migration 4 there. A guess is {id, student, target, prediction, created_at}; `target` names
what it is about, e.g. `act:baseline` for an act of the talk (its rows run side by side).
"""

from __future__ import annotations

import json
import secrets
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol


class _Conn(Protocol):
    def execute(self, sql: str, args: Any = ...) -> Any: ...


class ClassBook:
    def _r(self) -> Any:  # provided by Store
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[_Conn]:  # provided by Store
        raise NotImplementedError

    def students(self) -> list[dict[str, Any]]:
        """Each student who started a run: runs by status, total, first and last run time; by name."""
        rows = self._r().execute(
            "SELECT student, status, COUNT(*), MIN(created_at), MAX(created_at) FROM runs "
            "WHERE student IS NOT NULL GROUP BY student, status ORDER BY student").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for student, status, n, first, last in rows:
            s = out.setdefault(student, {"student": student, "total": 0, "by_status": {}, "first_at": first,
                                         "last_at": last})
            s["total"] += n
            s["by_status"][status] = n
            s["first_at"] = min(s["first_at"], first)
            s["last_at"] = max(s["last_at"], last)
        return list(out.values())

    def add_guess(self, student: str, target: str, prediction: dict[str, Any]) -> dict[str, Any]:
        guess = {"id": secrets.token_hex(6), "student": student, "target": target, "prediction": prediction,
                 "created_at": round(time.time(), 6)}
        with self._transaction() as conn:
            conn.execute("INSERT INTO guesses(id, student, target, created_at, data) VALUES (?, ?, ?, ?, ?)",
                         (guess["id"], student, target, guess["created_at"], json.dumps(guess)))
        return guess

    def guesses(self, target: str | None = None, student: str | None = None) -> list[dict[str, Any]]:
        """Guesses oldest first, optionally of one target and/or one student."""
        clauses, args = [], []
        for column, value in (("target", target), ("student", student)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._r().execute(f"SELECT data FROM guesses{where} ORDER BY seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]
