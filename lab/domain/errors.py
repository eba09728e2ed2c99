"""The errors the core raises for a request it refuses; the API maps each to a status code."""

from __future__ import annotations


class ManagerError(Exception):
    """Base of the errors the API maps to status codes. `field` names the input at fault, when one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(ManagerError):
    pass


class Conflict(ManagerError):
    pass


class Forbidden(ManagerError):
    """The caller is known, and this is not theirs to do (another student's run; the teacher's controls)."""


class BadJoinCode(Forbidden):
    """A join with a code that is not the class session's."""


class NameTaken(Conflict):
    """A student joined with this name, or one that looks like it, already."""


class GuessesLocked(Conflict):
    """The act has started: its guesses are closed."""


class NotRunnable(ManagerError):
    """What was asked needs what this machine lacks (a storage, a server kind): nothing was queued."""


class LimitExceeded(ManagerError):
    """A configured limit (queue size, number of servers) is reached. `limit` names which one;
    `can_wait`: whether trying again later can help (False: the request can never fit)."""

    limit = "limit"

    def __init__(self, message: str, field: str | None = None, can_wait: bool = True) -> None:
        super().__init__(message, field)
        self.can_wait = can_wait


class QueueFull(LimitExceeded):
    limit = "queue-full"


class RateLimited(LimitExceeded):
    """Too many requests of one kind from one student or one client address: retry after `retry_after` s."""

    limit = "rate"

    def __init__(self, message: str, retry_after: float = 1.0, field: str | None = None) -> None:
        super().__init__(message, field)
        self.retry_after = retry_after


class StudentLimit(LimitExceeded):
    """One student has as many runs queued or running as the per-student limit allows."""

    limit = "per-student"


class AnonymousLimit(LimitExceeded):
    """Runs without a student name (and without the token) together hold the anonymous budget."""

    limit = "anonymous"


class ServerLimit(LimitExceeded):
    """As many long-lived servers run as LAB_MAX_SERVERS allows."""

    limit = "servers"


class StartFailed(ManagerError):
    """A long-lived server (or what serves its disk) did not start on this machine."""


class ShuttingDown(ManagerError):
    pass
