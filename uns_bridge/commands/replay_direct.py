"""``uns-bridge replay FILE --direct``: a capture straight into the host core and the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console


def direct_command(
    file: Path, config: Path | None, database: str | None, options: dict[str, Any], console: Console
) -> int:
    """Replay ``file`` into the pipeline; returns the exit code."""
    try:
        from uns_bridge.pipeline import Pipeline  # noqa: F401
    except ImportError:
        console.print("[red]replay --direct needs uns_bridge.pipeline, which is not available yet[/]")
        return 1
    return 1
