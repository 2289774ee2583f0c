"""The ``uns-bridge`` command line.

Each command lives in a module of :mod:`uns_bridge.commands` that registers itself on the typer app;
this module only assembles them. Commands parse their arguments, then call the application modules.
"""

from __future__ import annotations

import importlib

import typer

from uns_bridge import __version__

COMMAND_MODULES = ("run", "db", "namespace", "config", "capture", "simulate")

app = typer.Typer(
    name="uns-bridge",
    help=(
        "Sparkplug B host application: maps plant data onto an ISA-95 Unified Namespace, stores every "
        "value losslessly in PostgreSQL/TimescaleDB and republishes it as plain JSON over MQTT."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from uns_bridge.sparkplug.decode import DECODER
        from uns_bridge.store.pgcopy import ENCODER

        typer.echo(f"uns-bridge {__version__} (Sparkplug decoder: {DECODER}; COPY encoder: {ENCODER})")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Sparkplug B host application for the Unified Namespace."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"uns_bridge.commands.{_name}").register(app)


def main() -> None:
    app()
