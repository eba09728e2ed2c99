"""Cluster mode's rules that need no broker: URLs with passwords, JSON-only messages that name their own
stream, the broker's password kept from helpers and logs, bad arguments refused (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.host import procs
from lab.service import broker, wire

LAB = Path(sys.executable).with_name("lab")


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:6379/0", "rediss://user:pw@broker.example:6380/2",
                                 "redis+socket://:pw@/run/lab/redis.sock"])
def test_a_redis_url_with_a_password_is_taken(url: str) -> None:
    assert broker.check_url(url) == url


@pytest.mark.parametrize(("url", "says"), [
    ("redis://127.0.0.1:6379/0", "password"),
    ("redis://user@127.0.0.1:6379/0", "password"),
    ("amqp://:pw@127.0.0.1:5672//", "must be Redis"),
    ("sqs://:pw@x", "must be Redis"),
    ("redis+socket://:pw@", "socket's path"),
    ("redis://:pw@:6379/0", "host"),
    ("not a url", "space"),
    ("redis://:pw@h:6379/0 ", "space"),
])
def test_other_urls_are_refused_saying_why_without_the_password(url: str, says: str) -> None:
    with pytest.raises(broker.BrokerError) as e:
        broker.check_url(url)
    assert says in str(e.value)
    assert "pw" not in str(e.value).replace("password", "")


def test_redact_hides_the_password() -> None:
    assert broker.redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert broker.redact("redis+socket://u:s3cret@/p/redis.sock") == "redis+socket://u:***@/p/redis.sock"
    assert "s3cret" not in broker.redact("rediss://:s3cret@h:1/0")


def test_the_celery_app_takes_json_only() -> None:
    app = broker.celery_app("redis://:pw@127.0.0.1:1/0")
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == app.conf.result_serializer == app.conf.event_serializer == "json"
    assert app.conf.result_backend is None and app.conf.task_ignore_result


def _message(**over: object) -> dict:
    base = {"job": {"id": "a1b2c3d4e5f6", "kind": "run", "payload": {"run": {}}, "who": {"lane": "teacher"}},
            "service": "svc-1", "reply_to": "lab:events:svc-1"}
    return {**base, **over}


def test_a_job_message_answers_only_on_its_own_services_stream() -> None:
    msg = wire.JobMessage.model_validate(_message())
    assert msg.job.id == "a1b2c3d4e5f6" and msg.job.kind == "run"
    assert msg.job.model_dump()["who"] == {"lane": "teacher"}  # the rest of the job travels along
    for bad in (_message(reply_to="lab:worker:w1"), _message(reply_to="lab:events:other"),
                _message(service="a b", reply_to="lab:events:a b"), _message(extra=1),
                _message(job={"id": "../x", "kind": "run", "payload": {}}),
                _message(job={"id": "a1", "kind": "Run!", "payload": {}}), _message(v=2)):
        with pytest.raises(ValueError):
            wire.JobMessage.model_validate(bad)


def test_stream_entries_round_trip_and_strangers_are_refused() -> None:
    fields = wire.entry("j1", "w1", 3, "event", {"type": "progress", "fraction": 0.5})
    assert all(isinstance(v, str) for v in fields.values())  # a Redis stream holds strings
    assert wire.read_entry(fields) == ("j1", "w1", 3, "event", {"type": "progress", "fraction": 0.5})
    for bad in ({"job": "j1"}, {**fields, "type": "pickle"}, {**fields, "data": "{not json"}):
        with pytest.raises(ValueError):
            wire.read_entry(bad)


def test_helpers_never_see_the_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_BROKER_URL", "redis://:s3cret@h:6379/0")
    env = procs.child_env()
    assert "LAB_BROKER_URL" not in env and not any("s3cret" in v for v in env.values())


def test_in_cluster_mode_fields_are_checked_against_what_the_workers_offer() -> None:
    """lab.service.fleet: a kind or storage no connected worker offers is refused naming the field and the
    workers; with no worker connected nothing is refused (the run waits for one)."""
    from lab.domain.scenarios import get_scenario
    from lab.domain.spec import SpecError, build_spec
    from lab.service.fleet import Fleet
    from lab.service.scheduler import LOCAL, Worker

    workers = [Worker(LOCAL, 2, frozenset({"managed", "kind:qemu-nbd", "storage:xfs"})),
               Worker("w1", 2, frozenset({"kind:nbdkit", "storage:datadir"})),
               Worker("w2", 2, frozenset({"kind:nbdkit", "kind:nbd-server"}))]
    fleet = Fleet(lambda: workers)
    assert build_spec({"kind": "nbd-server"}, machine=fleet).kind == "nbd-server"
    with pytest.raises(SpecError) as e:
        build_spec({"kind": "qemu-nbd"}, machine=fleet)  # only the service itself has it: not a worker
    assert e.value.field == "kind" and "no worker offers kind qemu-nbd (workers: w1, w2)" in str(e.value)
    with pytest.raises(SpecError) as e:
        build_spec({"plugin": "file", "storage": "xfs"}, machine=fleet)
    assert e.value.field == "storage"
    none_yet = Fleet(lambda: workers[:1])  # no worker connected yet: the run waits for one
    assert build_spec({"plugin": "file", "storage": "xfs"}, machine=none_yet).storage == "xfs"
    rows, skipped = fleet.runnable(list(get_scenario("reference").rows))
    assert len(rows) == 7 and not skipped


@pytest.mark.parametrize(("args", "env", "says"), [
    (["worker", "--broker", "redis://127.0.0.1:6379/0"], {}, "--broker: the broker URL must carry a password"),
    (["worker"], {}, "--broker: give the broker URL"),
    (["worker", "--broker", "redis://:pw@127.0.0.1:1/0", "--name", "a b"], {}, "--name"),
    (["worker", "--broker", "redis://:pw@127.0.0.1:1/0", "--name", "local"], {}, "--name"),
    (["worker", "--broker", "redis://:pw@127.0.0.1:1/0", "--slots", "0"], {}, "--slots"),
    (["worker"], {"LAB_BROKER_URL": "http://:pw@x"}, "must be Redis"),
    (["serve", "--port", "1"], {"LAB_BROKER_URL": "redis://h:6379/0"}, "LAB_BROKER_URL: the broker URL must carry"),
    (["broker"], {}, "LAB_BROKER_URL: set it"),
    (["broker"], {"LAB_BROKER_URL": "redis+socket://:pw@/tmp/b.sock"}, "LAB_BROKER_URL: `lab broker` serves redis://"),
])
def test_bad_cluster_arguments_exit_2_naming_them(args: list[str], env: dict[str, str], says: str) -> None:
    """`lab worker`, `lab serve` and `lab broker` refuse a broker they cannot use before starting anything,
    and never print the password."""
    base = {k: v for k, v in os.environ.items() if k != "LAB_BROKER_URL"}
    r = subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=60, env={**base, **env})
    assert r.returncode == 2, r.stderr
    assert says in r.stderr
    assert "pw@" not in r.stderr
