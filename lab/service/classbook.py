"""The class's side of the store: the session and its members, who ran what, and the guesses made
before the talk's acts.

A mixin of lab.service.store.Store (its connections and write transaction); the tables come from
migrations 4 and 5 there. The rules (who may join, when guessing locks) are lab.service.classroom's;
this module only keeps the rows.

- a session: {id, code, started_at}; the newest is the current one (a new join code starts one);
- a member: {session, canonical, display, joined_at}: one per canonical name and session; the
  student's key is kept as its SHA-256 only;
- a guess: {id, session, student (display), canonical, target, prediction, created_at}: one per
  member and target (`target` is an act row key); a new guess replaces the old one;
- an act's state: {reopened_at, revealed_at}, set by the teacher.
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

    # -- who ran what ---------------------------------------------------------------------------
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

    # -- the session and its members --------------------------------------------------------------
    def class_session(self) -> dict[str, Any] | None:
        row = self._r().execute("SELECT id, code, started_at FROM class_sessions ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else {"id": row[0], "code": row[1], "started_at": row[2]}

    def new_class_session(self, code: str) -> dict[str, Any]:
        session = {"id": secrets.token_hex(6), "code": code, "started_at": round(time.time(), 6)}
        with self._transaction() as conn:
            conn.execute("INSERT INTO class_sessions(id, code, started_at) VALUES (?, ?, ?)",
                         (session["id"], code, session["started_at"]))
        return session

    def add_member(self, session: str, canonical: str, display: str, key_hash: str | None) -> dict[str, Any] | None:
        """The new member, or None when the canonical name is already one in this session."""
        member = {"session": session, "canonical": canonical, "display": display, "joined_at": round(time.time(), 6)}
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM class_members WHERE session=? AND canonical=?",
                            (session, canonical)).fetchone():
                return None
            conn.execute("INSERT INTO class_members(session, canonical, display, key_hash, joined_at) "
                         "VALUES (?, ?, ?, ?, ?)", (session, canonical, display, key_hash, member["joined_at"]))
        return member

    def set_member_key(self, session: str, canonical: str, key_hash: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE class_members SET key_hash=? WHERE session=? AND canonical=?",
                         (key_hash, session, canonical))

    def member(self, session: str, canonical: str) -> dict[str, Any] | None:
        row = self._r().execute("SELECT display, joined_at, key_hash IS NOT NULL FROM class_members "
                                "WHERE session=? AND canonical=?", (session, canonical)).fetchone()
        return None if row is None else {"session": session, "canonical": canonical, "display": row[0],
                                         "joined_at": row[1], "joined": bool(row[2])}

    def member_by_key(self, key_hash: str) -> dict[str, Any] | None:
        row = self._r().execute("SELECT session, canonical, display, joined_at FROM class_members WHERE key_hash=?",
                                (key_hash,)).fetchone()
        return None if row is None else {"session": row[0], "canonical": row[1], "display": row[2],
                                         "joined_at": row[3], "joined": True}

    def members(self, session: str) -> list[dict[str, Any]]:
        rows = self._r().execute("SELECT canonical, display, joined_at, key_hash IS NOT NULL FROM class_members "
                                 "WHERE session=? ORDER BY joined_at", (session,)).fetchall()
        return [{"session": session, "canonical": c, "display": d, "joined_at": t, "joined": bool(k)}
                for c, d, t, k in rows]

    def remove_member(self, session: str, canonical: str) -> bool:
        """Forget a member (its key stops working, its name is free again); its guesses go too."""
        with self._transaction() as conn:
            gone = conn.execute("DELETE FROM class_members WHERE session=? AND canonical=?",
                                (session, canonical)).rowcount
            conn.execute("DELETE FROM guesses WHERE session=? AND canonical=?", (session, canonical))
        return bool(gone)

    # -- guesses ----------------------------------------------------------------------------------
    def put_guess(self, session: str, canonical: str, student: str, target: str,
                  prediction: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a member's guess of `target`, replacing theirs if there is one: (guess, replaced)."""
        guess = {"id": secrets.token_hex(6), "session": session, "student": student, "canonical": canonical,
                 "target": target, "prediction": prediction, "created_at": round(time.time(), 6)}
        with self._transaction() as conn:
            replaced = conn.execute("DELETE FROM guesses WHERE session=? AND canonical=? AND target=?",
                                    (session, canonical, target)).rowcount
            conn.execute("INSERT INTO guesses(id, student, target, created_at, data, session, canonical) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (guess["id"], student, target, guess["created_at"],
                                                          json.dumps(guess), session, canonical))
        return guess, bool(replaced)

    def guesses(self, target: str | None = None, student: str | None = None,
                session: str | None = None, canonical: str | None = None) -> list[dict[str, Any]]:
        """Guesses oldest first, optionally of one target, one student (display name), one session,
        one member (canonical name)."""
        clauses, args = [], []
        for column, value in (("target", target), ("student", student), ("session", session),
                              ("canonical", canonical)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._r().execute(f"SELECT data FROM guesses{where} ORDER BY seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def delete_guesses(self, session: str, guess_id: str | None = None, target: str | None = None,
                       canonical: str | None = None) -> int:
        """Delete the session's guesses matching every given filter; how many."""
        clauses, args = ["session = ?"], [session]
        for column, value in (("id", guess_id), ("target", target), ("canonical", canonical)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        with self._transaction() as conn:
            return conn.execute(f"DELETE FROM guesses WHERE {' AND '.join(clauses)}", args).rowcount

    # -- each act's guessing state ------------------------------------------------------------------
    def act_marks(self, session: str) -> dict[str, dict[str, float | None]]:
        rows = self._r().execute("SELECT act, reopened_at, revealed_at FROM class_acts WHERE session=?",
                                 (session,)).fetchall()
        return {act: {"reopened_at": r, "revealed_at": v} for act, r, v in rows}

    def mark_act(self, session: str, act: str, *, reopened_at: float | None = None, revealed_at: float | None = None,
                 clear_reveal: bool = False) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO class_acts(session, act) VALUES (?, ?)", (session, act))
            if reopened_at is not None:
                conn.execute("UPDATE class_acts SET reopened_at=? WHERE session=? AND act=?",
                             (reopened_at, session, act))
            if revealed_at is not None or clear_reveal:
                conn.execute("UPDATE class_acts SET revealed_at=? WHERE session=? AND act=?",
                             (revealed_at, session, act))

    def act_runs(self, labels: list[str], since: float) -> list[tuple[float, str]]:
        """(created_at, status) of the runs labelled with any of `labels` made at or after `since`."""
        if not labels:
            return []
        marks = ",".join("?" * len(labels))
        return [(r[0], r[1]) for r in self._r().execute(
            f"SELECT created_at, status FROM runs WHERE label IN ({marks}) AND created_at >= ? ORDER BY created_at",
            (*labels, since)).fetchall()]

