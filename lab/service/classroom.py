"""The class: a session with a join code, its members, and the rules of guessing before an act.

- The teacher shows a join code (six letters and digits, no 0/O/1/I); a student joins with it and a
  name and gets a key (`s_...`, kept by the store as its SHA-256). A new code starts a new session:
  the old keys stop working, the old guesses stay with their session.
- A member is one per canonical name (lab.domain.students.canonical): "Ana", "ana", "Ana." and a
  Cyrillic-A "Ana" are one student; a second join with a look-alike is refused (NameTaken). Without a
  teacher token (an open lab) a name typed on a run or a guess claims or finds its member the same way.
- A guess is one per member and act row: a new one replaces the old. An act's guesses lock when the
  first run of one of its rows is made (after the session started, or after the teacher reopened the
  act), and stay hidden from the other students until the reveal: the teacher's, or the end of every
  run of the act made since the lock. The teacher may delete guesses.
- Joins and guesses are rate-limited per student and per client address (RateLimited, with when to
  retry): a bot cannot post thousands of guesses or try join codes in bulk, and a class behind one
  address (NAT, Docker Desktop) still joins and guesses at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lab.domain.errors import BadJoinCode, GuessesLocked, NameTaken, NotFound, RateLimited
from lab.domain.run import FINAL
from lab.domain.scenarios import ACTS, Act
from lab.domain.students import clean_student

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a projector
CODE_LENGTH = 6
KEY_PREFIX = "s_"


@dataclass(frozen=True)
class Member:
    session: str
    canonical: str
    display: str

    def to_dict(self) -> dict[str, str]:
        return {"student": self.display, "canonical": self.canonical, "session": self.session}


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def is_student_key(text: str) -> bool:
    return text.startswith(KEY_PREFIX) and 8 < len(text) < 100


class RateLimiter:
    """A token bucket per key: `burst` at once, then `per_s` a second. allow() -> None or seconds to wait."""

    def __init__(self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.per_s, self.clock = burst, per_s, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> float | None:
        now = self.clock()
        with self._lock:
            if len(self._buckets) > 10_000:  # forget the full buckets of callers long gone
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * self.per_s < self.burst}
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.per_s
            self._buckets[key] = (tokens - 1, now)
            return None


class ClassRoom:
    """The class's rules over the store's class tables (lab.service.classbook)."""

    def __init__(self, store: Any, acts: Iterable[Act] = ACTS) -> None:
        self.store = store
        self.acts = {a.key: a for a in acts}
        self.act_of_row = {r.key: a.key for a in self.acts.values() for r in a.rows}
        self._lock = threading.Lock()
        self._keys: dict[str, Member] = {}  # key hash -> member, for the current session
        self._session: dict[str, Any] | None = None
        # Per student: a dozen guesses at once, then one every 5 s. Per address, far more: a whole class can
        # share one (a school's NAT, Docker Desktop's port forwarding shows every student as its gateway).
        self.guess_limit = RateLimiter(burst=12, per_s=0.2)
        self.client_guess_limit = RateLimiter(burst=300, per_s=5)
        self.join_limit = RateLimiter(burst=60, per_s=1)  # a class joining at once; codes not tried in bulk

    # -- the session ------------------------------------------------------------------------------
    def session(self) -> dict[str, Any]:
        """The current session ({id, code, started_at}), made on first use."""
        with self._lock:
            if self._session is None:
                self._session = self.store.class_session() or self.store.new_class_session(new_code())
            return dict(self._session)

    def new_session(self) -> dict[str, Any]:
        """A new join code: a new session (the old keys stop working; old guesses stay with theirs)."""
        with self._lock:
            self._session = self.store.new_class_session(new_code())
            self._keys.clear()
            return dict(self._session)

    # -- members ------------------------------------------------------------------------------------
    def join(self, code: str, name: Any, client: str) -> tuple[Member, str]:
        """Join the current session with its code: (member, key). BadJoinCode, NameTaken, RateLimited,
        SpecError (a name with no letter or digit)."""
        wait = self.join_limit.allow(f"client:{client}")
        if wait is not None:
            raise RateLimited(f"too many tries to join from {client}: wait {wait:.0f} s", retry_after=wait)
        session = self.session()
        if not secrets.compare_digest(code.strip().upper().encode(), session["code"].encode()):
            raise BadJoinCode("that is not this class's join code (the teacher shows it on /class)", field="code")
        display, canonical = clean_student(name, "name")
        key = KEY_PREFIX + secrets.token_hex(16)
        existing = self.store.member(session["id"], canonical)
        if existing is not None and existing["joined"]:
            raise NameTaken(f"{existing['display']!r} has joined already: {display!r} is too alike; pick "
                            "another name, or ask the teacher to remove that one", field="name")
        if existing is not None:  # claimed by a name typed in an open lab: the join takes it over
            self.store.set_member_key(session["id"], canonical, key_hash(key))
            display = existing["display"]
        elif self.store.add_member(session["id"], canonical, display, key_hash(key)) is None:
            raise NameTaken(f"{display!r} has joined already (a look-alike name)", field="name")
        member = Member(session["id"], canonical, display)
        with self._lock:
            self._keys[key_hash(key)] = member
        return member, key

    def member_for_key(self, key: str) -> Member | None:
        """The member a student key belongs to, in the current session; None for any other key."""
        h = key_hash(key)
        with self._lock:
            found = self._keys.get(h)
        if found is not None:
            return found
        row = self.store.member_by_key(h)
        if row is None or row["session"] != self.session()["id"]:
            return None
        member = Member(row["session"], row["canonical"], row["display"])
        with self._lock:
            self._keys[h] = member
        return member

    def member_for_name(self, name: Any, field: str = "student") -> Member:
        """An open lab's self-declared name: the member of its canonical name, claimed on first use."""
        display, canonical = clean_student(name, field)
        session = self.session()["id"]
        row = self.store.member(session, canonical) or self.store.add_member(session, canonical, display, None)
        if row is None:  # another request claimed it in between
            row = self.store.member(session, canonical)
        return Member(session, canonical, row["display"])

    def members(self) -> list[dict[str, Any]]:
        return self.store.members(self.session()["id"])

    def remove(self, canonical: str) -> None:
        session = self.session()["id"]
        if not self.store.remove_member(session, canonical):
            raise NotFound(f"no student {canonical!r} in this class session")
        with self._lock:
            self._keys = {h: m for h, m in self._keys.items() if m.canonical != canonical}

    # -- acts ---------------------------------------------------------------------------------------
    def act_state(self, act_key: str, marks: dict[str, Any] | None = None) -> dict[str, Any]:
        """{key, locked, locked_at, revealed, revealed_at, running}: guessing closes at the act's first run
        (since the session or the teacher's reopen), and the guesses show once revealed."""
        act = self.acts[act_key]
        session = self.session()
        mark = (marks if marks is not None else self.store.act_marks(session["id"])).get(act_key, {})
        since = max(session["started_at"], mark.get("reopened_at") or 0)
        runs = self.store.act_runs([r.key for r in act.rows], since)
        locked_at = runs[0][0] if runs else None
        running = any(status not in FINAL for _, status in runs)
        revealed_at = mark.get("revealed_at")
        revealed = revealed_at is not None and revealed_at >= since
        if locked_at is not None and not running:
            revealed = True  # every run of the act since the lock has finished: the reveal
        return {"key": act_key, "locked": locked_at is not None, "locked_at": locked_at, "running": running,
                "revealed": revealed, "revealed_at": revealed_at if revealed_at and revealed_at >= since else None}

    def act_states(self) -> dict[str, dict[str, Any]]:
        marks = self.store.act_marks(self.session()["id"])
        return {k: self.act_state(k, marks) for k in self.acts}

    def reveal(self, act_key: str) -> dict[str, Any]:
        self._act(act_key)
        self.store.mark_act(self.session()["id"], act_key, revealed_at=time.time())
        return self.act_state(act_key)

    def reopen(self, act_key: str) -> dict[str, Any]:
        """Open the act's guesses again (a second round): unlocked and hidden until the next reveal."""
        self._act(act_key)
        self.store.mark_act(self.session()["id"], act_key, reopened_at=time.time(), clear_reveal=True)
        return self.act_state(act_key)

    def _act(self, act_key: str) -> Act:
        if act_key not in self.acts:
            raise NotFound(f"no act {act_key!r}; the acts: {', '.join(self.acts)}", field="act")
        return self.acts[act_key]

    # -- guesses ------------------------------------------------------------------------------------
    def guess(self, member: Member, target: str, prediction: dict[str, Any], client: str) -> tuple[dict, bool]:
        """Store a member's guess of act row `target` (replacing theirs): (guess, replaced). NotFound,
        GuessesLocked once the act has started, RateLimited."""
        act = self.act_of_row.get(target)
        if act is None:
            raise NotFound(f"no act row {target!r}; use one of {', '.join(self.act_of_row)}", field="target")
        for limit, key in ((self.guess_limit, f"student:{member.canonical}"), (self.client_guess_limit, client)):
            wait = limit.allow(key)
            if wait is not None:
                raise RateLimited(f"too many guesses: wait {wait:.0f} s", retry_after=wait)
        state = self.act_state(act)
        if state["locked"]:
            raise GuessesLocked(f"act {act!r} has started: its guesses are closed (the teacher can reopen them)",
                                field="target")
        return self.store.put_guess(member.session, member.canonical, member.display, target, prediction)

    def guesses(self, *, teacher: bool, viewer: Member | None = None, target: str | None = None,
                student: str | None = None) -> list[dict[str, Any]]:
        """This session's guesses as `viewer` may see them: all for the teacher; otherwise values only
        of revealed acts and of the viewer's own guesses (the others' show who, not what)."""
        session = self.session()["id"]
        canonical = None
        if student is not None:
            from lab.domain.students import canonical as canon

            canonical = canon(student)
        rows = self.store.guesses(target=target, session=session, canonical=canonical)
        if teacher:
            return [{**g, "hidden": False} for g in rows]
        states = self.act_states()
        out = []
        for g in rows:
            mine = viewer is not None and g.get("canonical") == viewer.canonical
            act = self.act_of_row.get(g["target"])
            shown = mine or (act is not None and states[act]["revealed"])
            out.append({**g, "hidden": not shown, "prediction": g["prediction"] if shown else None})
        return out

    def delete_guesses(self, guess_id: str | None = None, target: str | None = None,
                       student: str | None = None) -> int:
        from lab.domain.students import canonical as canon

        return self.store.delete_guesses(self.session()["id"], guess_id, target,
                                         canon(student) if student is not None else None)
