"""One configuration object handed down: the core puts its files where the driver's settings say,
whatever the process environment says (lab.host.places; the AST scan is in test_docs_settings.py)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from apiutil import FAST, client_for

from lab.config import Settings
from lab.domain.run import Run
from lab.domain.spec import build_spec
from lab.host import places
from lab.host.places import Core, Places
from lab.measure.execute import execute
from lab.nbd.clients import child
from lab.service.faults import Faults
from lab.service.manager import Manager, ManagerConfig
from lab.service.store import Store

ENV_PLACES = ("LAB_DATA_DIR", "LAB_RUNTIME_DIR", "LAB_IMAGE_DIR", "LAB_CALIBRATION_FILE")


@pytest.fixture
def env_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every LAB_ place of the environment at a dir the core must never touch."""
    decoy = tmp_path / "from-env"
    for name in ENV_PLACES:
        monkeypatch.setenv(name, str(decoy / name.lower()))
    monkeypatch.setenv("LAB_FAULT", "kill-after-commit")
    return decoy


def test_places_resolve_from_the_settings_once() -> None:
    s = Settings(data_dir="/srv/lab", image_dir=None, runtime_dir=None, calibration_file=None)
    p = Places.from_settings(s)
    assert p.data_dir == Path("/srv/lab") and p.image_dir == Path("/srv/lab/images")
    assert p.calibration_file == Path("/srv/lab/calibration.json") and p.scratch_dir == Path("/srv/lab/scratch")
    assert p.runtime_dir == places.default_runtime_dir()
    s = Settings(data_dir="/d", image_dir="/i", runtime_dir="/r", calibration_file="/c.json")
    assert Places.from_settings(s) == Places(Path("/d"), Path("/i"), Path("/r"), Path("/c.json"))
    assert dataclasses.is_dataclass(p) and p.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_library_defaults_read_no_environment(env_elsewhere: Path) -> None:
    d = Places.defaults()
    assert d.data_dir == Path("var") and d.image_dir == Path("var/images")
    assert d.runtime_dir == places.default_runtime_dir()
    assert Core().places is None and Core().limits.external_targets == ()
    assert ManagerConfig().fault is None and ManagerConfig().places is None


def test_the_fault_comes_from_the_manager_config_only(tmp_path: Path, env_elsewhere: Path) -> None:
    """LAB_FAULT in the process environment is not the manager's business: its driver's settings are."""
    store = Store(tmp_path / "db")
    try:
        assert Manager(store, ManagerConfig()).faults == Faults()
        assert Manager(store, ManagerConfig(fault="pause-at:copy")).faults.fault == ("pause-at", "copy")
        with pytest.raises(ValueError, match="LAB_FAULT"):
            Manager(store, ManagerConfig(fault="explode"))
        cfg = ManagerConfig.from_settings(Settings(fault="pause-at:verify", clients_in_process=True,
                                                   data_dir=tmp_path / "x"))
        assert cfg.fault == "pause-at:verify" and cfg.core.clients_in_process
        assert cfg.core.places == Places.from_settings(Settings(data_dir=tmp_path / "x"))
    finally:
        store.close()


def _seen_during_copy(core: Core, fields: dict[str, str]) -> tuple[Run, list[Path]]:
    """Run once with `core`; the private dirs that existed while the client copied."""
    assert core.places is not None
    seen: list[Path] = []

    def on_event(ev: dict) -> None:
        if ev.get("phase") == "copy" and not seen:
            p = core.places
            assert p is not None
            seen.extend([*p.runtime_dir.glob("srv-*"), *p.scratch_dir.glob("sto-*")])

    run = execute(Run(client="qemu-img", server=build_spec(fields)), on_event=on_event, core=core)
    return run, seen


def test_a_run_puts_every_file_where_it_is_told(tmp_path: Path, env_elsewhere: Path) -> None:
    where = Places.under(tmp_path / "told")
    run, seen = _seen_during_copy(Core(places=where), {**FAST, "plugin": "file", "storage": "datadir"})
    assert run.status == "succeeded", run.error
    assert {p.parent for p in seen} == {where.runtime_dir, where.scratch_dir}, seen  # server dir + its disk
    assert list(where.image_dir.glob("*/meta.json")), "the source image was built in the image dir it was given"
    assert not list(where.runtime_dir.iterdir()) and not list(where.scratch_dir.iterdir()), "released after"
    assert not env_elsewhere.exists(), "nothing went where only the environment pointed"


def test_the_service_hands_its_settings_down(tmp_path: Path, env_elsewhere: Path) -> None:
    """create_app(Settings(...)) -> Manager -> registry -> Server: a managed server's private dir is
    in the settings' runtime dir, not the environment's nor the process default's."""
    runtime = tmp_path / "svc-run"
    with client_for(tmp_path / "data", runtime_dir=runtime, image_dir=tmp_path / "img",
                    calibration_file=tmp_path / "cal.json", fault=None) as api:
        r = api.post("/api/v1/servers", json=FAST)
        assert r.status_code == 201, r.text
        assert [p.name.startswith("srv-") for p in runtime.iterdir()] == [True]
        assert api.get("/api/v1/calibration").json()["status"] == "none"  # read from cal.json: none there
        assert api.delete(f"/api/v1/servers/{r.json()['id']}").status_code in (200, 204)
        assert not list(runtime.iterdir())
    assert not env_elsewhere.exists()
    assert places.current().runtime_dir != runtime  # the app set no process default


def test_clients_in_process_is_handed_to_the_era_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting clients_in_process reaches the era clients through execute(): counted, not guessed."""
    calls: list[str] = []
    real = child.run_in_child
    lock = threading.Lock()

    def counting(client_id: str, ctx: object) -> object:
        with lock:
            calls.append(client_id)
        return real(client_id, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(child, "run_in_child", counting)
    monkeypatch.setenv("LAB_CLIENTS_IN_PROCESS", "1")  # ignored: only the handed-down value counts
    spec = build_spec(FAST)
    for in_process, expect in ((False, ["qemu-2.8"]), (True, [])):
        calls.clear()
        run = execute(Run(client="qemu-2.8", server=spec), core=Core(clients_in_process=in_process))
        assert run.status == "succeeded", run.error
        assert calls == expect


def test_the_app_factory_is_a_driver_only_when_it_reads_the_environment(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app() (uvicorn's factory) reads the environment and sets the process default, as `lab` does;
    create_app(settings) was handed its settings and leaves the process default alone."""
    from app.main import create_app

    monkeypatch.setattr(places, "_default", places.current())  # restored after the test
    session = places.current()
    create_app(Settings(data_dir=tmp_path / "handed"))
    assert places.current() == session
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("LAB_RUNTIME_DIR", str(tmp_path / "env-run"))
    app = create_app()
    assert places.current() == places.Places.from_settings(app.state.settings)
    assert places.current().runtime_dir == tmp_path / "env-run" and places.current().data_dir == tmp_path / "env-data"
