"""Where the lab keeps its files: one frozen `Places`, resolved once from the settings.

The core never reads the environment. A driver (`lab` in lab/cli/commands.py, the app factory in
app/main.py, the test session, a bench script) builds `lab.config.Settings` once and hands
`Places.from_settings(settings)` down: Manager -> execute() -> Server -> images, storage,
calibrate. Library code called without places uses the process default, which only a driver
sets (`use`); until one does it is `Places.defaults()`, the declared defaults (./var and
$TMPDIR/fastzero-lab-UID), never an environment variable.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.domain.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:  # lab.config (pydantic) is imported when used: the era clients' child process loads
    from lab.config import Settings  # this module, and starts faster without pydantic


def default_runtime_dir() -> Path:
    """Short (socket paths must stay under 108 bytes) and per user."""
    return Path(tempfile.gettempdir()) / f"fastzero-lab-{os.getuid()}"


@dataclass(frozen=True)
class Places:
    data_dir: Path  # the SQLite history; the `datadir` storage's scratch space is below it
    image_dir: Path  # the source-image cache
    runtime_dir: Path  # private 0700 dirs of servers and storages (sockets, logs, mounts)
    calibration_file: Path  # this machine's calibration (lab.measure.expectation)

    @classmethod
    def from_settings(cls, settings: Settings) -> Places:
        data = Path(settings.data_dir)
        return cls(data_dir=data, image_dir=Path(settings.image_dir or data / "images"),
                   runtime_dir=Path(settings.runtime_dir or default_runtime_dir()),
                   calibration_file=Path(settings.calibration_file or data / "calibration.json"))

    @classmethod
    def defaults(cls) -> Places:
        """The declared defaults (lab.config.Settings), without reading the environment."""
        from lab.config import Settings  # here, not above: see TYPE_CHECKING

        return cls.from_settings(Settings.defaults())

    @classmethod
    def under(cls, root: Path, image_dir: Path | None = None) -> Places:
        """Everything below `root` (tests, bench): data/, run/, images/ (or a shared `image_dir`)."""
        return cls(data_dir=root / "data", image_dir=image_dir or root / "images", runtime_dir=root / "run",
                   calibration_file=root / "data" / "calibration.json")

    @property
    def scratch_dir(self) -> Path:
        """The `datadir` storage's disks: on the data dir's own filesystem."""
        return self.data_dir / "scratch"

    # The directories, made on first use (and kept private where they hold sockets or disks).
    def runtime(self) -> Path:
        return _private(self.runtime_dir)

    def scratch(self) -> Path:
        return _private(self.scratch_dir)

    def images(self) -> Path:
        root = self.image_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        return root


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class Core:
    """What a run takes from the driver's settings: where files go, the limits (kind external's
    targets, the size limit), and whether the re-enacted eras copy in this process (tests)."""

    places: Places | None = None  # None: the process default
    limits: Limits = DEFAULT_LIMITS
    clients_in_process: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Core:
        return cls(Places.from_settings(settings), settings.limits, settings.clients_in_process)


_lock = threading.Lock()
_default: Places | None = None


def use(places: Places) -> Places:
    """Make `places` the process default (drivers only: the CLI, the test session, bench)."""
    global _default
    with _lock:
        _default = places
    return places


def current() -> Places:
    """The process default a driver set, else the declared defaults."""
    with _lock:
        return _default or Places.defaults()


def resolve(places: Places | None) -> Places:
    """`places` when handed down, else the process default."""
    return places if places is not None else current()
