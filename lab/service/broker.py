"""The broker both sides share: the Celery app (JSON only), a Redis client, and the names on it.

What goes over the broker (docs/design.md#cluster-mode):

- a job: one Celery task message `lab.job` with one JSON argument (lab.service.wire.JobMessage), sent
  to one worker's own queue `lab.<worker>`: the service decides where a job runs, a worker never takes
  jobs from a shared queue (and empties its own when it starts: what waited there was for a predecessor);
- a cancel: the remote-control command `lab_cancel` (Celery's broadcast, to that worker only);
- what a job says back (its events, in order, then its end): entries of a Redis stream of the service's
  own (`lab:events:<service>`), the job message naming it (`reply_to`);
- heartbeats: each worker keeps `lab:worker:<name>` (its fingerprint, calibration, load, running jobs)
  alive with a short expiry; a key that expires is a worker that died. The service keeps
  `lab:service:<id>` alive the same way, so a worker stops jobs whose service is gone.

Nothing is pickled: Celery accepts only JSON here, and events are JSON strings. The broker is
the one thing a worker reaches, and its URL must carry a password.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    import redis
    from celery import Celery

SCHEMES = ("redis", "rediss", "redis+socket")
TASK = "lab.job"  # the one task name: its argument says what kind of job it is
CANCEL = "lab_cancel"  # the remote-control command a worker registers
HEARTBEAT_S = 1.0  # a worker (and the service) refreshes its key this often ...
LOST_AFTER_S = 5.0  # ... and the key expires this long after the last refresh: then it is gone
STREAM_MAXLEN = 200_000  # a service's event stream is capped (approximately) at this many entries ...
STREAM_KEEP_S = 24 * 3600  # ... and expires this long after a job ended on it (its service gone: nobody reads it)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # a worker's or a service's name on the broker


class BrokerError(ValueError):
    """A broker URL the lab refuses (the message names what is wrong, never the password)."""


def check_url(url: str) -> str:
    """`url` when it is a Redis URL with a password, else BrokerError saying why."""
    from kombu.utils.url import url_to_parts

    if url != url.strip() or any(c.isspace() for c in url):
        raise BrokerError("the broker URL has a space in it (quote it whole; a password with spaces must be "
                          "percent-encoded)")
    try:
        parts = url_to_parts(url)
    except Exception as e:  # kombu raises what urllib raises: a bad port, say
        raise BrokerError(f"not a broker URL: {type(e).__name__}") from None
    if parts.scheme not in SCHEMES:
        raise BrokerError(f"the broker must be Redis: a URL starting {', '.join(s + '://' for s in SCHEMES)}")
    if not parts.password:
        raise BrokerError("the broker URL must carry a password (redis://:PASSWORD@HOST:6379/0): "
                          "anyone who reaches an open broker could hand workers jobs")
    if parts.scheme == "redis+socket" and not parts.path:
        raise BrokerError("redis+socket:// needs the socket's path (redis+socket://:PASSWORD@/PATH/redis.sock)")
    if parts.scheme != "redis+socket" and not parts.hostname:
        raise BrokerError("the broker URL needs a host (redis://:PASSWORD@HOST:6379/0)")
    return url


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and pages."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def celery_app(url: str) -> Celery:
    """The lab's Celery app on `url` (checked): JSON only, no result backend, jobs acknowledged when a
    worker takes them (the service, not Celery, decides what happens to a job whose worker died:
    lab.service.remote)."""
    from celery import Celery

    app = Celery("lab", broker=check_url(url), set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_accept_content=["json"],
        result_serializer="json", event_serializer="json",
        result_backend=None, task_ignore_result=True,
        task_default_queue="lab", task_acks_late=False, worker_prefetch_multiplier=1,
        worker_send_task_events=False, task_send_sent_event=False, worker_enable_remote_control=True,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False, worker_disable_rate_limits=True,
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
    )
    return app


def redis_client(url: str) -> redis.Redis:
    """A Redis client on the broker (events, heartbeats), from the same URL Celery uses."""
    import redis as redis_py
    from kombu.utils.url import url_to_parts

    p = url_to_parts(check_url(url))
    common = {"username": unquote(p.username) if p.username else None, "password": unquote(p.password or ""),
              "decode_responses": True, "socket_timeout": 10.0, "health_check_interval": 15}
    db = int(p.path) if p.scheme != "redis+socket" and p.path and p.path.isdigit() else 0
    if p.scheme == "redis+socket":
        return redis_py.Redis(unix_socket_path="/" + p.path.lstrip("/"), db=db, **common)
    return redis_py.Redis(host=p.hostname, port=p.port or 6379, db=db, ssl=p.scheme == "rediss",
                          socket_connect_timeout=5.0, **common)


def worker_key(name: str) -> str:
    return f"lab:worker:{name}"


def service_key(service: str) -> str:
    return f"lab:service:{service}"


def events_key(service: str) -> str:
    return f"lab:events:{service}"


def node_name(worker: str) -> str:
    """A worker's Celery node name (remote control reaches it by this name)."""
    return f"lab@{worker}"


def queue_name(worker: str) -> str:
    """The one queue a worker takes jobs from."""
    return f"lab.{worker}"


def password(url: str) -> str:
    """The broker URL's password (the URL checked first)."""
    from kombu.utils.url import url_to_parts

    return unquote(url_to_parts(check_url(url)).password or "")


def redis_config(secret: str, port: int, bind: tuple[str, ...] = (), unixsocket: str | None = None,
                 workdir: str = ".", logfile: str = "") -> str:
    """A redis-server configuration for the lab's broker: a password, no persistence (the queue lives
    in the service's SQLite store; the broker holds only jobs in flight, their answers and heartbeats),
    and the commands a leaked password would be worst with renamed away. `lab broker` and the tests
    use it; it holds the password: a file it goes into is private (0600), or it goes on redis-server's stdin."""
    if any(c in secret for c in ' "\n\r\t\\'):
        raise BrokerError("the broker password may not contain spaces, quotes, backslashes or newlines")
    lines = [f"port {port}", f'requirepass "{secret}"', 'save ""', "appendonly no", f"dir {workdir}",
             "daemonize no", f'logfile "{logfile}"', "protected-mode yes",
             'rename-command CONFIG ""', 'rename-command REPLICAOF ""', 'rename-command SLAVEOF ""',
             'rename-command FLUSHALL ""', 'rename-command FLUSHDB ""', 'rename-command DEBUG ""']
    if bind:
        lines.append("bind " + " ".join(bind))
    if unixsocket:
        lines += [f"unixsocket {unixsocket}", "unixsocketperm 700"]
    return "\n".join(lines) + "\n"
