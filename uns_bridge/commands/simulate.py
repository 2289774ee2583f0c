"""The ``simulate`` command(s). Registered on the root app by :func:`register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to app (none yet)."""
