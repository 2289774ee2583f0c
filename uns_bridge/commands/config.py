"""``uns-bridge config check [FILE]`` and ``uns-bridge config show``.

``check`` loads a file the way ``run`` would (with the ``UNS_*`` environment unless ``--no-env``),
names every bad key, and also checks that referenced files exist and that no ``UNS_*`` variable is a
typo. ``show`` prints the effective configuration as TOML, secrets masked, optionally with where each
value came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from uns_bridge.config import (
    CONFIG_ENV,
    SECRET_KEYS,
    Config,
    ConfigError,
    NamespaceRule,
    env_name,
    load_config_with_origins,
    unknown_env_variables,
)

MASK = "***"
CONFIG_OPTION_HELP = f"TOML configuration file (default: {CONFIG_ENV} or built-in defaults)."
#: the ``--config/-c FILE`` option of every command that reads the configuration
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_OPTION_HELP)]


def load_or_exit(path: Path | None, use_env: bool = True) -> tuple[Config, dict[str, str]]:
    """Load the configuration for a command; on errors print them and exit with status 2."""
    environ = os.environ if use_env else {}
    try:
        return load_config_with_origins(path, environ)
    except ConfigError as exc:
        typer.echo("uns-bridge: configuration error:", err=True)
        for line in str(exc).splitlines():
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(2) from None


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _masked(key: str, value: object) -> object:
    if value is None:
        return None
    if key in SECRET_KEYS:
        return MASK
    if key.endswith(".url") and isinstance(value, str):
        return mask_url(value)
    return value


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")  # pragma: no cover


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _as_plain(config: object, prefix: str = "") -> dict[str, object]:
    """The configuration as nested dicts of plain values, secrets masked, ``source`` left out."""
    out: dict[str, object] = {}
    for f in fields(config):  # type: ignore[arg-type]
        if f.name == "source":
            continue
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value) and not isinstance(value, NamespaceRule):
            out[f.name] = _as_plain(value, key + ".")
        elif key == "namespace.rules":
            out[f.name] = [{"name": r.name, "match": dict(r.match), "levels": dict(r.levels)} for r in value]
        else:
            out[f.name] = _masked(key, value)
    return out


def render_toml(config: Config, origins: dict[str, str] | None = None) -> str:
    """The effective configuration as TOML (unset keys as comments; ``origins`` as trailing comments)."""
    lines: list[str] = []

    def note(key: str) -> str:
        if origins is None:
            return ""
        return f"  # {origins[key]}" if key in origins else "  # default"

    def table(data: dict[str, object], prefix: str) -> None:
        scalars = [
            (k, v)
            for k, v in data.items()
            if not isinstance(v, dict) or f"{prefix}{k}" == "namespace.default"
        ]
        scalars = [(k, v) for k, v in scalars if f"{prefix}{k}" != "namespace.rules"]
        for name, value in scalars:
            key = f"{prefix}{name}"
            if value is None:
                lines.append(f"# {name} = (unset; {env_name(key)}){note(key)}")
            else:
                lines.append(f"{_toml_key(name)} = {_toml_value(value)}{note(key)}")
        for name, value in data.items():
            key = f"{prefix}{name}"
            if isinstance(value, dict) and key != "namespace.default":
                lines.extend(["", f"[{key}]"])
                table(value, key + ".")
        rules = data.get("rules") if prefix == "namespace." else None
        if isinstance(rules, list):
            for rule in rules:
                lines.extend(["", f"[[namespace.rules]]{note('namespace.rules')}"])
                for name, value in rule.items():
                    lines.append(f"{name} = {_toml_value(value)}")

    table(_as_plain(config), "")
    return "\n".join(lines).strip() + "\n"


def file_problems(config: Config) -> list[str]:
    """Files the configuration names that do not exist (``config check`` only; ``run`` reports its own)."""
    problems = []
    for key, path in (
        ("mqtt.tls.ca_file", config.mqtt.tls.ca_file),
        ("mqtt.tls.cert_file", config.mqtt.tls.cert_file),
        ("mqtt.tls.key_file", config.mqtt.tls.key_file),
        ("mqtt.password_file", config.mqtt.password_file),
    ):
        if path is not None and not path.is_file():
            problems.append(f"{key}: file {str(path)!r} does not exist")
    return problems


def register(app: typer.Typer) -> None:
    """Add ``config check`` and ``config show``."""
    group = typer.Typer(help="Validate and show the configuration.", no_args_is_help=True)
    app.add_typer(group, name="config")

    @group.command("check")
    def check(
        file: Annotated[Path | None, typer.Argument(help=f"The TOML file (default: {CONFIG_ENV}).")] = None,
        env: Annotated[
            bool, typer.Option("--env/--no-env", help="Apply UNS_* environment variables too.")
        ] = True,
    ) -> None:
        """Validate a configuration; name every bad key. Exit status 0 when valid, 1 when not."""
        environ = os.environ if env else {}
        try:
            config, _ = load_config_with_origins(file, environ)
        except ConfigError as exc:
            typer.echo("configuration is invalid:", err=True)
            for line in str(exc).splitlines():
                typer.echo(f"  {line}", err=True)
            raise typer.Exit(1) from None
        problems = file_problems(config)
        for line in problems:
            typer.echo(f"  {config.source}: {line}", err=True)
        for name in unknown_env_variables(environ):
            typer.echo(
                f"  warning: environment variable {name} is not a uns-bridge setting (a typo?)", err=True
            )
        if problems:
            typer.echo("configuration is invalid", err=True)
            raise typer.Exit(1)
        rules = len(config.namespace.rules)
        typer.echo(
            f"configuration OK ({config.source}): {rules} namespace rule{'s' if rules != 1 else ''}, "
            f"precedence {config.namespace.precedence}, UNS prefix {config.uns.prefix!r}"
        )

    @group.command("show")
    def show(
        config_file: ConfigOption = None,
        origins: Annotated[bool, typer.Option("--origins", help="Say where each value came from.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of TOML.")] = False,
    ) -> None:
        """Print the effective configuration (defaults + file + environment), secrets masked."""
        config, where = load_or_exit(config_file)
        if as_json:
            typer.echo(json.dumps(_as_plain(config), default=str, ensure_ascii=False, indent=2))
            return
        typer.echo(f"# effective configuration: {config.source}")
        typer.echo(render_toml(config, where if origins else None), nl=False)
