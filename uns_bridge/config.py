"""Configuration: one TOML file, every key overridable by an environment variable.

The dataclasses below are the whole configuration with its defaults. Loading, validation and the
environment overrides live in this module too (see :func:`load_config`):

* precedence: built-in defaults < the TOML file (``path``, else ``UNS_CONFIG``) < ``UNS_*`` variables;
* every key has ``UNS_<SECTION>_<KEY>`` (``UNS_MQTT_TLS_CA_FILE``, ``UNS_HOST_LIMITS_MAX_PAYLOAD_BYTES``,
  ``UNS_LOG_LEVEL``), plus ``UNS_PREFIX`` for ``uns.prefix``; lists are comma-separated
  (``UNS_MQTT_GROUPS=A,B``), booleans ``true/false/1/0/yes/no/on/off``, an empty value unsets an optional
  key; ``UNS_NAMESPACE_RULES`` is a JSON array, ``UNS_NAMESPACE_DEFAULT_<LEVEL>`` one default level;
* errors are :class:`ConfigError`, one line per problem, each naming the file or variable and the key
  path (``uns-bridge.toml: namespace.rules[2].match.device (rule 'presses'): ...``); every problem of a
  load is reported at once.

Validation of the namespace rules and the UNS prefix uses :mod:`uns_bridge.namespace` and
:mod:`uns_bridge.placement`, imported inside :func:`load_config` (they import this module).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

HostRole = Literal["active", "passive"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file or variable and the key path."""


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    #: ``mqtt://host:port`` or ``mqtts://host:port``; ``None`` means "embedded defaults" for ``run``
    url: str | None = None
    client_id: str | None = None
    username: str | None = None
    #: never on the command line: ``UNS_MQTT_PASSWORD`` or a file
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = 30
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: subscribe to these Sparkplug groups only (``None``: ``spBv1.0/#``)
    groups: tuple[str, ...] | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    receive_queue: int = 10_000


@dataclass(frozen=True)
class HostLimits:
    max_payload_bytes: int = 16 * 1024 * 1024
    max_metrics_per_message: int = 100_000
    max_edge_nodes: int = 100_000
    max_devices_per_node: int = 10_000
    max_metrics_per_node: int = 1_000_000
    #: bytes of one String/Text/UUID (UTF-8) or Bytes/File value
    max_value_bytes: int = 4 * 1024 * 1024
    #: elements of one array value, rows of one DataSet
    max_array_length: int = 1_000_000


@dataclass(frozen=True)
class HostSettings:
    id: str = "uns-bridge"
    role: HostRole = "active"
    reorder_timeout_ms: int = 2_000
    rebirth_interval_ms: int = 5_000
    limits: HostLimits = field(default_factory=HostLimits)
    #: worker processes sharing the edge nodes (``uns-bridge run`` supervises them; 1: this process)
    workers: int = 1


@dataclass(frozen=True)
class DatabaseConfig:
    #: a PostgreSQL URL; ``None`` means "embedded PostgreSQL" for ``run``
    url: str | None = None
    embedded_dir: Path = Path(".uns-bridge/postgres")
    pool_size: int = 4
    batch_rows: int = 10_000
    flush_ms: int = 200
    queue_rows: int = 200_000
    #: "auto": TimescaleDB when the extension is available, native partitioning otherwise
    timescaledb: Literal["auto", "on", "off"] = "auto"
    partition_interval: Literal["hour", "day", "week", "month"] = "day"
    partitions_ahead: int = 3
    #: days of samples to keep (``None``: keep forever)
    retention_days: int | None = None
    compress_after_days: int | None = 7
    aggregates: bool = True
    current_values_interval_ms: int = 1_000
    write_timeout_ms: int = 30_000


@dataclass(frozen=True)
class UnsConfig:
    enabled: bool = True
    prefix: str = "uns"
    qos: int = 1
    retain: bool = True
    #: within this window only the newest value per topic is published
    publish_window_ms: int = 100
    max_pending: int = 1_000_000


@dataclass(frozen=True)
class NamespaceRule:
    name: str
    #: patterns on "group", "node", "device": globs with ``{capture}`` fields, or ``re:<regex>``
    match: dict[str, str]
    #: ISA-95 level templates: enterprise, site, area, line, cell, equipment
    levels: dict[str, str]


@dataclass(frozen=True)
class NamespaceConfig:
    #: "rules-first": a matching rule wins, birth hints fill what it leaves open; "birth-first": hints win
    precedence: Literal["rules-first", "birth-first"] = "rules-first"
    rules: tuple[NamespaceRule, ...] = ()
    default: dict[str, str] = field(
        default_factory=lambda: {
            "enterprise": "unassigned",
            "site": "{group}",
            "area": "",
            "line": "",
            "cell": "{node}",
            "equipment": "{device}",
        }
    )
    hint_prefixes: tuple[str, ...] = (
        "Device_Information/ISA95_Hierarchy/",
        "Node_Information/ISA95_Hierarchy/",
    )


@dataclass(frozen=True)
class SpoolConfig:
    enabled: bool = True
    dir: Path = Path(".uns-bridge/spool")
    max_bytes: int = 1024 * 1024 * 1024
    fsync: Literal["always", "batch", "never"] = "batch"
    when_full: Literal["block", "drop-oldest"] = "block"


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9780


@dataclass(frozen=True)
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    host: HostSettings = field(default_factory=HostSettings)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    uns: UnsConfig = field(default_factory=UnsConfig)
    namespace: NamespaceConfig = field(default_factory=NamespaceConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log_level: str = "INFO"
    #: where the configuration came from (for messages)
    source: str = "defaults"


# ============================================================================================ loading
#
# Precedence: built-in defaults < the TOML file < environment variables. Every key has a variable
# ``UNS_<SECTION>_<KEY>`` (nested tables joined with ``_``: ``UNS_MQTT_TLS_CA_FILE``,
# ``UNS_HOST_LIMITS_MAX_PAYLOAD_BYTES``; top-level keys ``UNS_<KEY>``: ``UNS_LOG_LEVEL``), plus the short
# ``UNS_PREFIX`` for ``uns.prefix`` and ``UNS_CONFIG`` for the file. Lists (``UNS_MQTT_GROUPS``) are
# comma-separated; an empty value of an optional key means "unset"; ``namespace.rules`` is JSON in
# ``UNS_NAMESPACE_RULES``, ``namespace.default`` per level (``UNS_NAMESPACE_DEFAULT_SITE``) or as JSON.

ENV_PREFIX = "UNS_"
#: short variables and the key each sets (besides the ``UNS_<SECTION>_<KEY>`` of every key)
ENV_ALIASES: dict[str, str] = {"UNS_PREFIX": "uns.prefix"}
CONFIG_ENV = "UNS_CONFIG"
#: set by ``uns-bridge run`` for each worker process it supervises: ``<index>/<count>`` (internal)
WORKER_ENV = "UNS_WORKER"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: keys whose values are secrets (masked by ``config show``); URLs have their password masked
SECRET_KEYS = frozenset({"mqtt.password"})
_NOT_CONFIGURABLE = frozenset({"source"})
_NAMESPACE_LEVELS = ("enterprise", "site", "area", "line", "cell", "equipment")


def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _optional(tp: object) -> tuple[object, bool]:
    """``(inner type, True)`` for ``X | None``; ``(tp, False)`` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def config_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, object]]:
    """Every configurable key path (``mqtt.tls.ca_file``) with its type, in declaration order."""
    keys: list[tuple[str, object]] = []
    hints = _hints(cls)
    for f in fields(cls):
        if f.name in _NOT_CONFIGURABLE:
            continue
        tp = hints[f.name]
        inner, _ = _optional(tp)
        path = f"{prefix}{f.name}"
        if isinstance(inner, type) and is_dataclass(inner):
            keys.extend(config_keys(inner, path + "."))
        else:
            keys.append((path, tp))
    return keys


def env_name(key: str) -> str:
    """The environment variable of a key path: ``mqtt.tls.ca_file`` -> ``UNS_MQTT_TLS_CA_FILE``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def env_variables() -> dict[str, str]:
    """Every variable :func:`load_config` reads, with the key path it sets."""
    names = {env_name(key): key for key, _ in config_keys()}
    for level in _NAMESPACE_LEVELS:
        names[env_name(f"namespace.default.{level}")] = f"namespace.default.{level}"
    names.update(ENV_ALIASES)
    return names


def unknown_env_variables(environ: Mapping[str, str]) -> list[str]:
    """``UNS_*`` variables that set nothing (typos); ``UNS_CONFIG`` and ``UNS_TEST_*`` are known."""
    known = env_variables()
    return sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in known
        and name != CONFIG_ENV
        and name != WORKER_ENV
        and not name.startswith("UNS_TEST_")
    )


class _Problems:
    """Collects every error of one load, each naming where it came from and the key path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, key: str, message: str) -> None:
        self.items.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("\n".join(self.items))


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(tp: object, value: object, from_env: bool) -> object:
    """Convert a TOML value (or an environment string) to ``tp``; ``ValueError`` says what is wrong."""
    inner, optional = _optional(tp)
    if optional:
        if isinstance(value, str) and (
            value.strip() == "" or (inner is not str and value.strip().lower() == "none")
        ):
            return None
        return _convert(inner, value, from_env)
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        candidate = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if isinstance(candidate, str) and from_env:
            candidate = candidate.strip()
        if candidate in choices:
            return candidate
        raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if tp is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif from_env and isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {_describe(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise ValueError(f"expected a file or directory path, got {_describe(value)}")
    origin = typing.get_origin(tp)
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,) and typing.get_args(tp)[0] is str:
        if from_env and isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ValueError(f"expected a list of strings, got {_describe(value)}")
    if origin is dict:
        if from_env and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"expected a JSON object of strings, got {_describe(value)}") from None
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return dict(value)
        raise ValueError(f"expected a table of strings, got {_describe(value)}")
    raise ValueError(f"unsupported value {_describe(value)}")  # pragma: no cover - a new field type


def _rule(value: object, key: str, where: str, problems: _Problems) -> NamespaceRule | None:
    if not isinstance(value, dict):
        problems.add(where, key, f"expected a table with name, match and levels, got {_describe(value)}")
        return None
    unknown = sorted(set(value) - {"name", "match", "levels"})
    for name in unknown:
        problems.add(where, f"{key}.{name}", "unknown key; a rule has name, match and levels")
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(where, f"{key}.name", "every rule needs a non-empty name")
        return None
    tables: dict[str, dict[str, str]] = {}
    for part in ("match", "levels"):
        raw = value.get(part, {})
        if not isinstance(raw, dict):
            problems.add(where, f"{key}.{part} (rule {name!r})", f"expected a table, got {_describe(raw)}")
            return None
        for sub, text in raw.items():
            if not isinstance(text, str):
                problems.add(
                    where, f"{key}.{part}.{sub} (rule {name!r})", f"expected a string, got {_describe(text)}"
                )
                return None
        tables[part] = dict(raw)
    return NamespaceRule(name=name, match=tables["match"], levels=tables["levels"])


def _rules(value: object, key: str, where: str, problems: _Problems) -> tuple[NamespaceRule, ...] | None:
    if not isinstance(value, list):
        problems.add(where, key, f"expected an array of rule tables ([[{key}]]), got {_describe(value)}")
        return None
    rules = [_rule(item, f"{key}[{i}]", where, problems) for i, item in enumerate(value)]
    return tuple(r for r in rules if r is not None)


def _from_table(
    cls: type,
    table: Mapping[str, object],
    prefix: str,
    where: str,
    problems: _Problems,
    origins: dict[str, str],
) -> object:
    """An instance of dataclass ``cls`` from a TOML table (unknown keys and bad values are problems)."""
    hints = _hints(cls)
    names = [f.name for f in fields(cls) if f.name not in _NOT_CONFIGURABLE]
    values: dict[str, object] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if name not in names:
            guess = get_close_matches(name, names, n=1)
            hint = f"; did you mean {prefix}{guess[0]}?" if guess else ""
            problems.add(where, key, f"unknown key{hint}")
            continue
        tp = hints[name]
        inner, _ = _optional(tp)
        if isinstance(inner, type) and is_dataclass(inner):
            if not isinstance(value, dict):
                problems.add(where, key, f"expected a table [{key}], got {_describe(value)}")
                continue
            values[name] = _from_table(inner, value, key + ".", where, problems, origins)
            continue
        if key == "namespace.rules":
            rules = _rules(value, key, where, problems)
            if rules is not None:
                values[name] = rules
                origins[key] = where
            continue
        try:
            values[name] = _convert(tp, value, from_env=False)
        except ValueError as exc:
            problems.add(where, key, str(exc))
            continue
        origins[key] = where
        if key == "namespace.default":
            for level in values[name]:  # type: ignore[attr-defined]
                origins[f"{key}.{level}"] = where
    instance = cls()
    return replace(instance, **values) if values else instance


def _get(config: object, key: str) -> object:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _set(config: typing.Any, key: str, value: object) -> typing.Any:
    """A copy of the (frozen) configuration with the key path set to value."""
    head, _, rest = key.partition(".")
    if not rest:
        return replace(config, **{head: value})
    return replace(config, **{head: _set(getattr(config, head), rest, value)})


def _apply_env(
    config: Config, environ: Mapping[str, str], problems: _Problems, origins: dict[str, str]
) -> Config:
    key_types = dict(config_keys())
    by_key: dict[str, list[str]] = {}
    for name, key in env_variables().items():
        if name in environ:
            by_key.setdefault(key, []).append(name)
    for key, names in by_key.items():
        if len({environ[n] for n in names}) > 1:
            problems.add(" and ".join(sorted(names)), key, "set to different values; set only one")
            continue
        name = sorted(names, key=len)[0]
        raw = environ[name]
        where = f"environment variable {name}"
        if key.startswith("namespace.default."):
            level = key.rsplit(".", 1)[1]
            current = dict(config.namespace.default)
            current[level] = raw
            config = _set(config, "namespace.default", current)
            origins[key] = where
            continue
        if key == "namespace.rules":
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                problems.add(where, key, f"expected a JSON array of rules: {exc}")
                continue
            rules = _rules(parsed, key, where, problems)
            if rules is not None:
                config = _set(config, key, rules)
                origins[key] = where
            continue
        try:
            value = _convert(key_types[key], raw, from_env=True)
        except ValueError as exc:
            problems.add(where, key, str(exc))
            continue
        if key == "namespace.default":
            assert isinstance(value, dict)
            value = {**config.namespace.default, **value}
            for level in value:
                origins[f"{key}.{level}"] = where
        config = _set(config, key, value)
        origins[key] = where
    return config


def _positive(problems: _Problems, config: Config, origins: dict[str, str], source: str) -> None:
    minimums = {
        "mqtt.keepalive_s": 0,
        "mqtt.receive_queue": 1,
        "host.reorder_timeout_ms": 0,
        "host.rebirth_interval_ms": 0,
        "host.workers": 1,
        "host.limits.max_payload_bytes": 1,
        "host.limits.max_metrics_per_message": 1,
        "host.limits.max_edge_nodes": 1,
        "host.limits.max_devices_per_node": 1,
        "host.limits.max_metrics_per_node": 1,
        "host.limits.max_value_bytes": 1,
        "host.limits.max_array_length": 1,
        "database.pool_size": 1,
        "database.batch_rows": 1,
        "database.flush_ms": 1,
        "database.queue_rows": 1,
        "database.partitions_ahead": 0,
        "database.retention_days": 1,
        "database.compress_after_days": 0,
        "database.current_values_interval_ms": 0,
        "database.write_timeout_ms": 1,
        "uns.qos": 0,
        "uns.publish_window_ms": 0,
        "uns.max_pending": 1,
        "spool.max_bytes": 1,
        "http.port": 0,
    }
    maximums = {"mqtt.keepalive_s": 65535, "uns.qos": 2, "http.port": 65535, "host.workers": 64}
    for key, low in minimums.items():
        value = _get(config, key)
        if value is None:
            continue
        assert isinstance(value, int | float)
        high = maximums.get(key)
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            problems.add(origins.get(key, source), key, f"must be {allowed}, got {value}")


def _check_url(url: str | None, schemes: tuple[str, ...], key: str, where: str, problems: _Problems) -> None:
    if url is None:
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        problems.add(where, key, f"invalid URL: {exc}")
        return
    if parts.scheme not in schemes:
        problems.add(where, key, f"URL scheme must be {' or '.join(s + '://' for s in schemes)}, got {url!r}")
    elif not parts.hostname and schemes[0] == "mqtt":
        problems.add(where, key, f"URL has no host: {url!r}")
    elif port == 0:
        problems.add(where, key, "port 0 is not a port to connect to")


def _validate(config: Config, origins: dict[str, str], source: str, problems: _Problems) -> Config:
    """Cross-field and range checks; returns the configuration with normalised values."""

    def where(key: str) -> str:
        return origins.get(key, source)

    mqtt = config.mqtt
    _check_url(mqtt.url, ("mqtt", "mqtts"), "mqtt.url", where("mqtt.url"), problems)
    if mqtt.reconnect_min_s <= 0:
        problems.add(where("mqtt.reconnect_min_s"), "mqtt.reconnect_min_s", "must be more than 0")
    if mqtt.reconnect_max_s < mqtt.reconnect_min_s:
        problems.add(
            where("mqtt.reconnect_max_s"),
            "mqtt.reconnect_max_s",
            f"must be at least mqtt.reconnect_min_s ({mqtt.reconnect_min_s}), got {mqtt.reconnect_max_s}",
        )
    if mqtt.groups is not None:
        if not mqtt.groups:
            problems.add(
                where("mqtt.groups"), "mqtt.groups", "an empty list subscribes to nothing; omit it for all"
            )
        for group in mqtt.groups:
            if not group or any(c in group for c in "/+#\x00"):
                problems.add(where("mqtt.groups"), "mqtt.groups", f"{group!r} is not a Sparkplug group id")
    if mqtt.tls.key_file is not None and mqtt.tls.cert_file is None:
        problems.add(where("mqtt.tls.key_file"), "mqtt.tls.key_file", "needs mqtt.tls.cert_file as well")
    host_id = config.host.id
    if not host_id or any(c in host_id for c in "/+#\x00"):
        problems.add(where("host.id"), "host.id", f"{host_id!r} is not a valid host id (no / + # or empty)")
    _check_url(
        config.database.url, ("postgresql", "postgres"), "database.url", where("database.url"), problems
    )
    db = config.database
    if db.queue_rows < db.batch_rows:
        problems.add(
            where("database.queue_rows"),
            "database.queue_rows",
            f"must be at least database.batch_rows ({db.batch_rows}), got {db.queue_rows}",
        )
    _positive(problems, config, origins, source)
    from uns_bridge.placement import validate_prefix  # lazy: placement imports this module

    problem = validate_prefix(config.uns.prefix)
    if problem is not None:
        problems.add(where("uns.prefix"), "uns.prefix", f"{problem}, got {config.uns.prefix!r}")
    if not config.http.host:
        problems.add(where("http.host"), "http.host", "must not be empty")
    level = config.log_level.strip().upper()
    if level not in LOG_LEVELS:
        problems.add(
            where("log_level"),
            "log_level",
            f"expected one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}",
        )
    elif level != config.log_level:
        config = replace(config, log_level=level)
    from uns_bridge.namespace import Namespace  # lazy: namespace imports this module

    try:
        Namespace.from_config(config.namespace)
    except ConfigError as exc:
        text = str(exc)
        key = text.split(" ", 1)[0].split(":", 1)[0]
        origin = origins.get(key.split("[", 1)[0]) or origins.get(key) or source
        problems.items.append(f"{origin}: {text}")
    return config


def load_config_with_origins(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Config, dict[str, str]]:
    """Like :func:`load_config`, also returning where each non-default key was set."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV, "").strip():
        path = Path(environ[CONFIG_ENV].strip()).expanduser()
    problems = _Problems()
    origins: dict[str, str] = {}
    config = Config()
    sources: list[str] = []
    if path is not None:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the configuration file: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text: {exc}") from None
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None
        config = typing.cast(Config, _from_table(Config, table, "", where, problems, origins))
        sources.append(where)
    config = _apply_env(config, environ, problems, origins)
    if any(origin.startswith("environment variable") for origin in origins.values()):
        sources.append("environment")
    source = " + ".join(sources) or "defaults"
    # failed values kept their defaults, so the cross-field checks can still run and report too
    config = _validate(config, origins, source, problems)
    problems.raise_if_any()
    return replace(config, source=source), origins


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration: defaults, then the TOML file (``path``, else ``UNS_CONFIG``), then ``UNS_*``.

    Raises :class:`ConfigError` listing every problem, one per line, each naming the file or the
    environment variable and the key path (``namespace.rules[2].match.device``).
    """
    return load_config_with_origins(path, environ)[0]
