"""``uns-bridge replay FILE --direct``: the command-line side of :mod:`uns_bridge.replay_direct`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from uns_bridge.capture.jsonl import CaptureError
from uns_bridge.config import Config


def load(config_path: Path | None) -> Config:
    if config_path is None:
        return Config()
    from uns_bridge import config as config_module

    loader = getattr(config_module, "load_config", None)
    if loader is None:
        raise CaptureError("--config needs uns_bridge.config.load_config, which is not available yet")
    loaded: Config = loader(config_path, os.environ)
    return loaded


def direct_command(
    file: Path, config_path: Path | None, database: str | None, options: dict[str, Any], console: Console
) -> int:
    """Replay ``file`` into the pipeline and the store; prints the summary; returns the exit code."""
    from uns_bridge.commands.capture import EXIT_BAD_RECORDS, EXIT_FAILED, EXIT_OK, report_problems

    try:
        config = load(config_path)
    except Exception as exc:
        console.print(f"[red]replay failed:[/] configuration: {exc}")
        return EXIT_FAILED
    dsn = database or config.database.url or os.environ.get("UNS_DATABASE_URL")
    if not dsn:
        # the backslash keeps rich from reading "[database]" as a style tag (it printed "... or  url")
        console.print(
            "[red]replay --direct needs a database:[/] --database URL, UNS_DATABASE_URL "
            "or \\[database] url in the config file"
        )
        return EXIT_FAILED
    try:
        from uns_bridge.replay_direct import replay_direct
    except ImportError as exc:
        console.print(f"[red]replay --direct is not available:[/] {exc}")
        return EXIT_FAILED
    with console.status("replaying into the pipeline ...") as status:
        try:
            result = asyncio.run(
                replay_direct(
                    file,
                    config,
                    dsn,
                    reader_options=options,
                    on_progress=lambda n: status.update(f"replaying into the pipeline: {n:,} messages"),
                )
            )
        except CaptureError as exc:
            console.print(f"[red]replay failed:[/] {exc}")
            return EXIT_FAILED
        except (OSError, ConnectionError) as exc:
            console.print(f"[red]replay failed:[/] database: {exc}")
            return EXIT_FAILED
    c = result.counters
    rate = result.samples / result.seconds if result.seconds > 0 else 0.0
    print(
        f"messages {result.messages:,}  samples {result.samples:,}  "
        f"births {c.get('node_births', 0) + c.get('device_births', 0):,}  "
        f"deaths {c.get('node_deaths', 0) + c.get('device_deaths', 0):,}  "
        f"gaps {c.get('seq_gaps', 0):,}  dead letters {c.get('dead_letters', 0):,}  "
        f"rebirth requests {c.get('rebirth_requests', 0):,}  "
        f"({result.seconds:.2f} s, {rate:,.0f} samples/s)"
    )
    if c.get("sink_errors"):
        console.print(f"[red]{c['sink_errors']} sink errors[/] (see the log)")
        return EXIT_FAILED
    report_problems(result.problems, result.problem_count)
    return EXIT_BAD_RECORDS if result.problem_count else EXIT_OK
