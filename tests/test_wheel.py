"""An installed wheel serves the dashboard: templates/ and static/ travel inside it (setup.py, app/pages/assets.py),
and the dev-only harness (testkit/) does not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel in an isolated environment (pip fetches the build backend)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    [whl] = out.glob("fastzero_lab-*.whl")
    return whl


def test_the_wheel_holds_the_dashboard_and_not_the_harness(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "app/_dashboard/templates/lab.html" in names and "app/_dashboard/static/js/api.js" in names
    assert not any(n.startswith(("testkit/", "tests/", "bench/")) for n in names)


def test_an_installed_wheel_serves_the_pages(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = textwrap.dedent(f"""
        import app, lab
        from fastapi.testclient import TestClient
        from app.main import create_app
        from lab.config import Settings
        assert app.__file__.startswith({str(site)!r}) and lab.__file__.startswith({str(site)!r}), app.__file__
        with TestClient(create_app(Settings(data_dir={str(tmp_path / "data")!r})),
                        base_url="http://localhost") as c:
            page = c.get("/")
            assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]
            js = c.get("/static/js/api.js")
            assert js.status_code == 200 and js.text.strip(), js.status_code
        print("served")
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "served", out.stdout + out.stderr
