"""Configuration loading: TOML, environment overrides, validation errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from uns_bridge.config import (
    Config,
    ConfigError,
    config_keys,
    env_name,
    env_variables,
    load_config,
    load_config_with_origins,
    unknown_env_variables,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "uns-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return str(caught.value)


def test_defaults_without_file_or_environment() -> None:
    config = load_config(None, {})
    assert config == Config(source="defaults")
    assert config.source == "defaults"


def test_file_values_and_nested_tables(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
log_level = "debug"
[mqtt]
url = "mqtts://broker.example:8883"
groups = ["Plant1-Assembly", "Plant2-Paint"]
protocol = "5"
[mqtt.tls]
ca_file = "/etc/ssl/ca.pem"
[host]
id = "bridge-a"
role = "passive"
[host.limits]
max_payload_bytes = 1_000_000
[database]
url = "postgresql://u@db/uns"
retention_days = 30
[uns]
prefix = "acme/uns"
[[namespace.rules]]
name = "lines"
match = { group = "Plant{site}-{area}", node = "Line{line}-PLC" }
levels = { enterprise = "Acme", site = "Plant{site}", area = "{area}", line = "Line{line}", equipment = "{device}" }
""",
    )
    config = load_config(path, {})
    assert config.mqtt.url == "mqtts://broker.example:8883"
    assert config.mqtt.groups == ("Plant1-Assembly", "Plant2-Paint")
    assert config.mqtt.protocol == "5"
    assert config.mqtt.tls.ca_file == Path("/etc/ssl/ca.pem")
    assert config.host.id == "bridge-a" and config.host.role == "passive"
    assert config.host.limits.max_payload_bytes == 1_000_000
    assert config.host.limits.max_edge_nodes == 100_000  # untouched default
    assert config.database.retention_days == 30
    assert config.uns.prefix == "acme/uns"
    assert config.log_level == "DEBUG"
    assert config.namespace.rules[0].name == "lines"
    assert config.namespace.rules[0].match["node"] == "Line{line}-PLC"
    assert config.source == str(path)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[mqtt]\nurl = "mqtt://file:1883"\nkeepalive_s = 10\n[uns]\nprefix = "file"\n')
    environ = {
        "UNS_MQTT_URL": "mqtt://env:1884",
        "UNS_PREFIX": "env/uns",
        "UNS_HOST_ID": "h2",
        "UNS_HOST_ROLE": "passive",
        "UNS_DATABASE_URL": "postgres://x@y/z",
        "UNS_MQTT_PASSWORD": "s3cret",
        "UNS_MQTT_GROUPS": " A , B,,C ",
        "UNS_MQTT_TLS_CA_FILE": "/tmp/ca.pem",
        "UNS_MQTT_TLS_INSECURE": "yes",
        "UNS_HOST_LIMITS_MAX_PAYLOAD_BYTES": "2048",
        "UNS_DATABASE_RETENTION_DAYS": "",
        "UNS_DATABASE_COMPRESS_AFTER_DAYS": "none",
        "UNS_MQTT_RECONNECT_MAX_S": "2.5",
        "UNS_NAMESPACE_DEFAULT_ENTERPRISE": "Lost+Found",
        "UNS_NAMESPACE_RULES": '[{"name": "r", "match": {"group": "G*"}, "levels": {"site": "{group}"}}]',
        "UNS_LOG_LEVEL": "warning",
    }
    config, origins = load_config_with_origins(path, environ)
    assert config.mqtt.url == "mqtt://env:1884"
    assert config.mqtt.keepalive_s == 10  # from the file
    assert config.uns.prefix == "env/uns"
    assert config.host.id == "h2" and config.host.role == "passive"
    assert config.database.url == "postgres://x@y/z"
    assert config.mqtt.password == "s3cret"
    assert config.mqtt.groups == ("A", "B", "C")
    assert config.mqtt.tls.ca_file == Path("/tmp/ca.pem") and config.mqtt.tls.insecure is True
    assert config.host.limits.max_payload_bytes == 2048
    assert config.database.retention_days is None and config.database.compress_after_days is None
    assert config.mqtt.reconnect_max_s == 2.5
    assert config.namespace.default["enterprise"] == "Lost+Found"
    assert config.namespace.default["site"] == "{group}"  # other default levels kept
    assert config.namespace.rules[0].match == {"group": "G*"}
    assert config.log_level == "WARNING"
    assert origins["mqtt.url"] == "environment variable UNS_MQTT_URL"
    assert origins["uns.prefix"] == "environment variable UNS_PREFIX"
    assert origins["mqtt.keepalive_s"] == str(path)
    assert config.source == f"{path} + environment"


def test_config_file_from_uns_config(tmp_path: Path) -> None:
    path = _write(tmp_path, '[host]\nid = "from-file"\n')
    assert load_config(None, {"UNS_CONFIG": str(path)}).host.id == "from-file"
    # an explicit path wins over UNS_CONFIG
    other = tmp_path / "other.toml"
    other.write_text('[host]\nid = "explicit"\n')
    assert load_config(other, {"UNS_CONFIG": str(path)}).host.id == "explicit"


def test_every_key_has_an_environment_variable() -> None:
    names = env_variables()
    for key, _ in config_keys():
        assert names[env_name(key)] == key
    for alias in ("UNS_MQTT_URL", "UNS_DATABASE_URL", "UNS_HOST_ID", "UNS_HOST_ROLE", "UNS_PREFIX"):
        assert alias in names
    assert names["UNS_MQTT_TLS_CA_FILE"] == "mqtt.tls.ca_file"
    assert names["UNS_HOST_LIMITS_MAX_PAYLOAD_BYTES"] == "host.limits.max_payload_bytes"
    assert len(set(names)) == len(names)


def test_unknown_environment_variables_are_reported() -> None:
    environ = {
        "UNS_MQTT_URLL": "x",
        "UNS_MQTT_URL": "mqtt://a",
        "UNS_CONFIG": "f",
        "UNS_TEST_PG_DSN": "d",
        "PATH": "/",
    }
    assert unknown_env_variables(environ) == ["UNS_MQTT_URLL"]


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[mqtt]\nurll = 'x'\n", "mqtt.urll: unknown key; did you mean mqtt.url?"),
        ("[mqtt]\nkeepalive_s = 'ten'\n", "mqtt.keepalive_s: expected an integer, got 'ten'"),
        ("[mqtt]\nkeepalive_s = true\n", "mqtt.keepalive_s: expected an integer"),
        ("[mqtt]\nkeepalive_s = 70000\n", "mqtt.keepalive_s: must be between 0 and 65535"),
        ("[mqtt]\nurl = 'tcp://x:1'\n", "mqtt.url: URL scheme must be mqtt:// or mqtts://"),
        ("[mqtt]\nurl = 'mqtt://x:99999'\n", "mqtt.url: invalid URL"),
        ("[mqtt]\nprotocol = '4'\n", "mqtt.protocol: expected one of '3.1.1', '5'"),
        ("[mqtt]\ngroups = []\n", "mqtt.groups: an empty list subscribes to nothing"),
        ("[mqtt]\ngroups = ['a/b']\n", "mqtt.groups: 'a/b' is not a Sparkplug group id"),
        ("[mqtt]\nreconnect_min_s = 5.0\nreconnect_max_s = 1.0\n", "mqtt.reconnect_max_s: must be at least"),
        ("[mqtt.tls]\nkey_file = 'k.pem'\n", "mqtt.tls.key_file: needs mqtt.tls.cert_file"),
        ("[mqtt.tls]\ninsecure = 'yes'\n", "mqtt.tls.insecure: expected true or false"),
        ("mqtt = 3\n", "mqtt: expected a table [mqtt]"),
        ("[host]\nrole = 'primary'\n", "host.role: expected one of 'active', 'passive'"),
        ("[host]\nid = 'a/b'\n", "host.id: 'a/b' is not a valid host id"),
        ("[host.limits]\nmax_edge_nodes = 0\n", "host.limits.max_edge_nodes: must be at least 1"),
        (
            "[database]\nurl = 'mysql://x/y'\n",
            "database.url: URL scheme must be postgresql:// or postgres://",
        ),
        (
            "[database]\nbatch_rows = 100\nqueue_rows = 10\n",
            "database.queue_rows: must be at least database.batch_rows",
        ),
        ("[database]\npartition_interval = 'year'\n", "database.partition_interval: expected one of"),
        ("[uns]\nprefix = 'a/#'\n", "uns.prefix: the prefix must not contain '#'"),
        ("[uns]\nprefix = '$SYS'\n", "uns.prefix: the prefix must not start with '$'"),
        ("[uns]\nqos = 3\n", "uns.qos: must be between 0 and 2"),
        ("[spool]\nfsync = 'sometimes'\n", "spool.fsync: expected one of 'always', 'batch', 'never'"),
        ("[http]\nport = 70000\n", "http.port: must be between 0 and 65535"),
        ("log_level = 'LOUD'\n", "log_level: expected one of DEBUG"),
        ("source = 'x'\n", "source: unknown key"),
        (
            "[namespace]\nprecedence = 'rules-last'\n",
            "namespace.precedence: expected one of 'rules-first', 'birth-first'",
        ),
        ("[namespace]\ndefault = { planet = 'x' }\n", "namespace.default.planet: unknown level 'planet'"),
        ("[namespace]\ndefault = { site = '{node' }\n", "namespace.default.site: unclosed '{'"),
        ("[namespace]\ndefault = { site = '{line}' }\n", "namespace.default.site: unknown variable {line}"),
        ("[namespace]\nrules = { name = 'x' }\n", "namespace.rules: expected an array of rule tables"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = _write(tmp_path, toml)
    message = _error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


RULES = """
[[namespace.rules]]
name = "ok"
match = {{ group = "Plant{{site}}-*" }}
levels = {{ site = "Plant{{site}}" }}

[[namespace.rules]]
name = "second"
match = {{ group = "*" }}

[[namespace.rules]]
name = "broken"
{body}
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'match = { device = "re:Press(" }',
            "namespace.rules[2].match.device (rule 'broken'): invalid regular expression",
        ),
        ('match = { device = "Press{n" }', "namespace.rules[2].match.device (rule 'broken'): unclosed '{'"),
        ('match = { station = "x" }', "namespace.rules[2].match.station (rule 'broken'): unknown match key"),
        ("match = { device = 3 }", "namespace.rules[2].match.device (rule 'broken'): expected a string"),
        (
            'match = { group = "{a}", node = "{a}" }',
            "namespace.rules[2].match.node (rule 'broken'): capture {a} is already captured",
        ),
        (
            'match = { node = "{node}" }',
            "namespace.rules[2].match.node (rule 'broken'): capture name {node} is reserved",
        ),
        (
            'match = { device = "P{n}" }\nlevels = { cell = "{m}" }',
            "namespace.rules[2].levels.cell (rule 'broken'): unknown variable {m}",
        ),
        (
            'levels = { floor = "x" }',
            "namespace.rules[2].levels.floor (rule 'broken'): unknown level 'floor'",
        ),
        ('levels = { cell = "a}" }', "namespace.rules[2].levels.cell (rule 'broken'): unmatched '}'"),
        ('matches = { device = "x" }', "namespace.rules[2].matches: unknown key"),
    ],
)
def test_rule_errors_name_the_rule_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, RULES.format(body=body))
    message = _error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_rule_without_name_and_duplicate_names(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[namespace.rules]]\nmatch = { group = "*" }\n')
    assert "namespace.rules[0].name: every rule needs a non-empty name" in _error(path)
    path = _write(tmp_path, '[[namespace.rules]]\nname = "a"\n[[namespace.rules]]\nname = "a"\n')
    assert "namespace.rules[1].name: rule name 'a' is already used by namespace.rules[0]" in _error(path)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, "[mqtt]\nkeepalive_s = 'x'\nreceive_queue = 'y'\n[http]\nprot = 1\n")
    lines = _error(path).splitlines()
    assert len(lines) == 3
    assert any("mqtt.receive_queue" in line for line in lines)
    assert any("http.prot: unknown key; did you mean http.port?" in line for line in lines)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"UNS_MQTT_KEEPALIVE_S": "abc"},
            "environment variable UNS_MQTT_KEEPALIVE_S: mqtt.keepalive_s: expected an integer",
        ),
        (
            {"UNS_HOST_ROLE": "boss"},
            "environment variable UNS_HOST_ROLE: host.role: expected one of 'active', 'passive'",
        ),
        ({"UNS_MQTT_URL": "http://x"}, "environment variable UNS_MQTT_URL: mqtt.url: URL scheme"),
        (
            {"UNS_PREFIX": "a//b"},
            "environment variable UNS_PREFIX: uns.prefix: the prefix must not have empty levels",
        ),
        (
            {"UNS_PREFIX": "a", "UNS_UNS_PREFIX": "b"},
            "UNS_PREFIX and UNS_UNS_PREFIX: uns.prefix: set to different values",
        ),
        (
            {"UNS_MQTT_TLS_INSECURE": "maybe"},
            "UNS_MQTT_TLS_INSECURE: mqtt.tls.insecure: expected true or false",
        ),
        (
            {"UNS_MQTT_RECONNECT_MIN_S": "nan"},
            "UNS_MQTT_RECONNECT_MIN_S: mqtt.reconnect_min_s: expected a finite number",
        ),
        (
            {"UNS_NAMESPACE_RULES": "[{"},
            "UNS_NAMESPACE_RULES: namespace.rules: expected a JSON array of rules",
        ),
        (
            {"UNS_NAMESPACE_RULES": '[{"name": "x", "match": {"device": "re:("}}]'},
            "environment variable UNS_NAMESPACE_RULES: namespace.rules[0].match.device (rule 'x'): invalid regular",
        ),
        (
            {"UNS_NAMESPACE_DEFAULT_SITE": "{x}"},
            "UNS_NAMESPACE_DEFAULT_SITE: namespace.default.site: unknown variable {x}",
        ),
        (
            {"UNS_CONFIG": "/nonexistent/uns.toml"},
            "/nonexistent/uns.toml: cannot read the configuration file",
        ),
    ],
)
def test_environment_errors_name_the_variable(environ: dict[str, str], expected: str) -> None:
    assert expected in _error(None, environ)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    path = _write(tmp_path, "[mqtt\nurl = 1\n")
    message = _error(path)
    assert message.startswith(f"{path}: invalid TOML")
    path.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in _error(path)


# --------------------------------------------------------------------------------------------- examples


def test_annotated_example_has_every_key_and_loads(tmp_path: Path) -> None:
    path = EXAMPLES / "uns-bridge.toml"
    text = path.read_text()
    assert load_config(path, {}).source == str(path)  # loads as shipped
    # Uncommenting every commented-out "# key = value" line must still load and then set every key:
    # so each key appears exactly once, in its right table, with a valid example value.
    uncommented = re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", text)
    full = tmp_path / "full.toml"
    full.write_text(uncommented)
    _, origins = load_config_with_origins(full, {})
    missing = [key for key, _ in config_keys() if key not in origins]
    assert missing == [], f"keys missing from {path.name}: {missing}"
    for key, _ in config_keys():  # the variable of every key is derivable from the documented rule
        assert env_name(key).startswith("UNS_")


def test_demo_plant_example_loads_and_maps_the_simulator_naming() -> None:
    from uns_bridge.namespace import Namespace
    from uns_bridge.placement import Placer

    config = load_config(EXAMPLES / "demo-plant.toml", {})
    placer = Placer(Namespace.from_config(config.namespace), prefix=config.uns.prefix)
    press = placer.place("Plant1-Assembly", "Line1-PLC", "Press1")
    assert press.rule is not None
    assert (
        press.levels.site and press.levels.area and press.levels.line and press.levels.equipment == "Press1"
    )
    node = placer.place("Plant1-Assembly", "Line1-PLC", None)
    assert node.levels.equipment == "Line1-PLC"
    other_site = placer.place("Plant2-Paint", "Line3-PLC", "Oven2")
    assert other_site.levels.site != press.levels.site
    assert placer.place("Lab", "Bench-PLC", "Scope").rule is None  # off-convention: the default mapping


SPECIAL_ENV_VALUES = {
    "mqtt.url": ("mqtt://broker:1884", "mqtt://broker:1884"),
    "database.url": ("postgresql://u@db/uns", "postgresql://u@db/uns"),
    "uns.prefix": ("p/q", "p/q"),
    "log_level": ("debug", "DEBUG"),
    "mqtt.groups": ("A, B", ("A", "B")),
    "namespace.hint_prefixes": ("X/", ("X/",)),
    "namespace.default": ('{"site": "{node}"}', None),
    "namespace.rules": ('[{"name": "r", "match": {"group": "G"}}]', None),
    "uns.qos": ("2", 2),
}


def _other_value(key: str, tp: object, default: object) -> tuple[str, object]:
    """A valid non-default environment string for a key and the value it must load as."""
    import typing

    if key in SPECIAL_ENV_VALUES:
        return SPECIAL_ENV_VALUES[key]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    inner = args[0] if args and typing.get_origin(tp) is not typing.Literal else tp
    if typing.get_origin(inner) is typing.Literal:
        choice = next(c for c in typing.get_args(inner) if c != default)
        return str(choice), choice
    if inner is bool:
        return ("false" if default else "true"), not default
    if inner is int:
        value = (default or 0) + 1  # type: ignore[operator]
        return str(value), value
    if inner is float:
        value = float(default or 1.0) * 2  # type: ignore[arg-type]
        return str(value), value
    if inner is Path:
        return "/tmp/uns-x", Path("/tmp/uns-x")
    return "text-value", "text-value"


def test_every_key_is_read_from_its_environment_variable() -> None:
    from uns_bridge.config import Config, _get

    defaults = Config()
    for key, tp in config_keys():
        raw, expected = _other_value(key, tp, _get(defaults, key))
        environ = {env_name(key): raw}
        if key == "mqtt.tls.key_file":
            environ["UNS_MQTT_TLS_CERT_FILE"] = "/tmp/cert.pem"
        config, origins = load_config_with_origins(None, environ)
        assert origins[key] == f"environment variable {env_name(key)}", key
        value = _get(config, key)
        if expected is not None:
            assert value == expected, key
        assert value != _get(defaults, key), key
