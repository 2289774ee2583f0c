"""The ``uns-bridge`` command line. Parses arguments, then calls into the application modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="uns-bridge",
    help="Sparkplug B host application: ISA-95 Unified Namespace and a lossless PostgreSQL history.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the version."""
    from uns_bridge import __version__

    typer.echo(__version__)


def main() -> None:
    app()
