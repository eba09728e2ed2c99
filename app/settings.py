"""The service's settings are the lab's: lab.config.Settings (every setting declared once)."""

from __future__ import annotations

from lab.config import Settings

__all__ = ["Settings"]
