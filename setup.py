"""The wheel carries the dashboard: templates/ and static/ (top-level in the checkout, the project's layout)
are copied into it as app/_dashboard/, where app/pages/assets.py finds them (everything else: pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithDashboard(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install serves the checkout's own directories
            return
        for name in ("templates", "static"):
            shutil.copytree(name, Path(self.build_lib) / "app" / "_dashboard" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithDashboard})
