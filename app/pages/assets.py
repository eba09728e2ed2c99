"""Where the dashboard's templates/ and static/ are: inside the installed package as app/_dashboard/
(setup.py copies them there when a wheel is built), else at the top of the checkout (the project's layout)."""

from __future__ import annotations

from pathlib import Path

INSTALLED = Path(__file__).resolve().parents[1] / "_dashboard"
CHECKOUT = Path(__file__).resolve().parents[2]


def dashboard_dir(name: str) -> Path:
    """`templates` or `static` of this installation (it may lack them: then the API is served alone)."""
    return INSTALLED / name if (INSTALLED / name).is_dir() else CHECKOUT / name
