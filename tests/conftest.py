"""Shared test fixtures: every test session gets private data/runtime dirs.

The image cache is shared across sessions (LAB_TEST_IMAGE_DIR) because recipes are
deterministic and building them is the slow part; everything else is per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.config import Settings
from lab.host import places
from testkit import LiveService, own_helpers

_session_root = Path(tempfile.mkdtemp(prefix="fzl-test-"))
os.environ["LAB_DATA_DIR"] = str(_session_root / "data")
os.environ["LAB_RUNTIME_DIR"] = str(_session_root / "run")
os.environ["LAB_IMAGE_DIR"] = os.environ.get(
    "LAB_TEST_IMAGE_DIR", str(Path(tempfile.gettempdir()) / f"fastzero-lab-test-images-{os.getuid()}")
)
# The test session is a driver: what it put in the environment (inherited by every `lab`
# subprocess and live service) is also this process's places, for tests that call the core
# without handing places down (lab.host.places: the core itself never reads the environment).
places.use(places.Places.from_settings(Settings()))

FAST = {"size": "8M", "delay_write": "1ms", "delay_zero": "1ms"}


# The fast tier (`scripts/test.sh --fast`, docs/testing.md) leaves out tests marked slow. Besides the marks
# in the files, these are slow by measurement (pytest --durations on the whole suite): each takes many
# seconds (a cluster of workers, a live service restarted, a wheel or a client generated, a full matrix).
SLOW_FILES = frozenset({
    "test_cluster_executor.py", "test_cluster_service.py",  # a redis-server and lab workers per test
    "test_bench_smoke.py",  # every bench script at its quick size
    "test_audit.py", "test_api_audits.py", "test_today_dirty.py",  # the zero audit's matrices, 512 MiB copies
    "test_fuzz_api.py",  # schemathesis over the live OpenAPI
    "test_api_client.py",  # a client generated from the schema, mypy --strict over a script
    "test_api_restart.py", "test_queue_restart.py",  # kill -9 and restart of a live service
})
SLOW_TESTS = frozenset({
    "test_reliability_streams.py::test_watchers_leaving_mid_burst_leave_no_error_and_no_subscription",
    "test_scenarios.py::test_reference_rows_reproduce_the_table_counts",  # the seven rows at full size
    "test_class.py::test_ten_students_at_once_limit_holds_nothing_lost",
    "test_class_simulation.py::test_thirty_students_take_turns_behind_the_teacher",  # 30 students' runs, ~25 s
    "test_scenarios.py::test_act_rows_reproduce_their_reference_counts",  # every act's rows, ~18 s
    "test_eras.py::test_lose_performance_never_contents",  # every zeromode x fastzeromode (the fast tier
    "test_eras.py::test_other_geometries",  # keeps exact counts on A and B, fast zero, fallbacks, depth)
})


# Slow tests that judge no time and no CPU share (what they assert is behaviour: clusters, restarts, fuzzing,
# generated clients, the benches' quick runs, exact counts and contents): the whole suite runs them among the
# parallel tests (marked `shared`). The other slow tests, the browser and the compose tests judge time or want
# the machine to themselves, and run one at a time after them.
SHARED_FILES = frozenset({
    "test_cluster_executor.py", "test_cluster_service.py", "test_bench_smoke.py", "test_today_dirty.py",
    "test_fuzz_api.py", "test_api_client.py", "test_api_restart.py", "test_queue_restart.py",
})
SHARED_TESTS = frozenset({
    "test_reliability_streams.py::test_watchers_leaving_mid_burst_leave_no_error_and_no_subscription",
    "test_class.py::test_ten_students_at_once_limit_holds_nothing_lost",
    "test_eras.py::test_lose_performance_never_contents",
    "test_eras.py::test_other_geometries",
    "test_api_results.py::test_sweep_rows_match_the_cli_scenario",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if item.path.name in SLOW_FILES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.path.name in SHARED_FILES or name in SHARED_TESTS:
            item.add_marker(pytest.mark.shared)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Shape notes for the review (tests/test_code_shape.py): long classes, complex functions; never a failure."""
    from test_code_shape import notes

    found = notes()
    if found:
        terminalreporter.section("shape notes (for review, not failures)")
        for note in found:
            terminalreporter.write_line(note)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's private root, unless something is still mounted below it (then leave it for a look)."""
    with open("/proc/mounts") as f:
        if any(line.split()[1].startswith(str(_session_root)) for line in f):
            return
    shutil.rmtree(_session_root, ignore_errors=True)


@pytest.fixture
def fast_fields() -> dict[str, str]:
    """Server fields for a quick run: 8 MiB alternating 1 MiB, 1 ms delays."""
    return dict(FAST)


@pytest.fixture
def runtime_dir() -> Path:
    from lab.host import procs

    return procs.runtime_root()


@pytest.fixture
def no_leftovers(runtime_dir: Path) -> Iterator[None]:
    """Fail the test if it leaves a helper process or a private dir behind."""
    before_dirs = set(runtime_dir.iterdir())
    yield
    left = own_helpers()
    assert not left, f"processes left running: {left}"
    new_dirs = set(runtime_dir.iterdir()) - before_dirs
    assert not new_dirs, f"private dirs left behind: {sorted(map(str, new_dirs))}"


@pytest.fixture
def live_service(tmp_path: Path) -> Iterator[Callable[..., LiveService]]:
    """Start a real `lab serve` (testkit.LiveService) under tmp_path:
    `live_service(LAB_WORKERS="4", token=...)` returns it started; every one is stopped at teardown."""
    started: list[LiveService] = []

    def start(token: str | None = None, log_level: str = "info", **env: str) -> LiveService:
        svc = LiveService(tmp_path, env=env, token=token, log_level=log_level)
        started.append(svc)
        return svc.start()

    yield start
    for svc in started:
        svc.stop()
