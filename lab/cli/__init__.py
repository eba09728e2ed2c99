"""`lab`: the headless front door (commands in lab.cli.commands)."""

from lab.cli.commands import main

__all__ = ["main"]
