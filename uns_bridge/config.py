"""Configuration: one TOML file, every key overridable by an environment variable.

The dataclasses below are the whole configuration with its defaults. Loading, validation and the
environment overrides live in this module too (see :func:`load_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True)
class HostSettings:
    id: str = "uns-bridge"
    role: HostRole = "active"
    reorder_timeout_ms: int = 2_000
    rebirth_interval_ms: int = 5_000
    limits: HostLimits = field(default_factory=HostLimits)


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
    hint_prefixes: tuple[str, ...] = ("Device_Information/ISA95_Hierarchy/", "Node_Information/ISA95_Hierarchy/")


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
