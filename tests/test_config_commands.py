"""``uns-bridge config check`` and ``config show`` through the real command line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from uns_bridge.cli import app
from uns_bridge.commands.config import mask_url
from uns_bridge.config import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"UNS_CONFIG": "", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def test_check_accepts_the_examples() -> None:
    for name in ("uns-bridge.toml", "demo-plant.toml"):
        code, out, err = _run("config", "check", str(EXAMPLES / name))
        assert code == 0, err
        assert out.startswith(f"configuration OK ({EXAMPLES / name})")


def test_check_names_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[mqtt]\nkeepalive_s = "x"\n'
        '[[namespace.rules]]\nname = "a"\n'
        '[[namespace.rules]]\nname = "b"\n'
        '[[namespace.rules]]\nname = "presses"\nmatch = { device = "Press{n" }\n'
    )
    code, _, err = _run("config", "check", str(path))
    assert code == 1
    assert f"{path}: mqtt.keepalive_s: expected an integer, got 'x'" in err
    assert f"{path}: namespace.rules[2].match.device (rule 'presses'): unclosed '{{'" in err


def test_check_environment_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(f'[mqtt.tls]\nca_file = "{tmp_path / "missing.pem"}"\n')
    code, _, err = _run("config", "check", str(path), env={"UNS_MQTT_URLL": "x"})
    assert code == 1
    assert "mqtt.tls.ca_file: file" in err and "does not exist" in err
    assert "UNS_MQTT_URLL is not a uns-bridge setting" in err
    (tmp_path / "missing.pem").write_text("pem")
    code, _, err = _run("config", "check", str(path), env={"UNS_HOST_ROLE": "boss"})
    assert code == 1 and "environment variable UNS_HOST_ROLE: host.role" in err
    code, out, _ = _run("config", "check", "--no-env", str(path), env={"UNS_HOST_ROLE": "boss"})
    assert code == 0, out
    code, out, _ = _run("config", "check", env={"UNS_CONFIG": str(path)})
    assert code == 0 and str(path) in out


def test_show_masks_secrets_and_round_trips(tmp_path: Path) -> None:
    env = {
        "UNS_MQTT_PASSWORD": "hunter2",
        "UNS_DATABASE_URL": "postgresql://uns:s3cret@db.example:5432/uns",
        "UNS_MQTT_URL": "mqtt://bridge:pw@broker:1883",
        "UNS_MQTT_GROUPS": "A,B",
    }
    code, out, _ = _run("config", "show", "-c", str(EXAMPLES / "demo-plant.toml"), env=env)
    assert code == 0, out
    assert "hunter2" not in out and "s3cret" not in out and ":pw@" not in out
    assert 'password = "***"' in out
    assert 'url = "postgresql://uns:***@db.example:5432/uns"' in out
    # the TOML it prints is valid and means the same configuration (secrets aside)
    shown = tmp_path / "shown.toml"
    shown.write_text(out)
    tomllib.loads(out)
    again = load_config(
        shown, {"UNS_MQTT_PASSWORD": "hunter2", **{k: v for k, v in env.items() if "URL" in k}}
    )
    original = load_config(EXAMPLES / "demo-plant.toml", env)
    assert again.namespace == original.namespace
    assert again.mqtt.groups == ("A", "B")
    assert again.uns == original.uns and again.spool == original.spool and again.host == original.host


def test_show_origins_and_json() -> None:
    code, out, _ = _run("config", "show", "--origins", env={"UNS_HOST_ID": "h7"})
    assert code == 0
    assert 'id = "h7"  # environment variable UNS_HOST_ID' in out
    assert 'role = "active"  # default' in out
    code, out, _ = _run("config", "show", "--json", env={"UNS_MQTT_PASSWORD": "x"})
    data = json.loads(out)
    assert data["mqtt"]["password"] == "***" and data["host"]["id"] == "uns-bridge"


def test_show_reports_errors_with_status_2() -> None:
    code, _, err = _run("config", "show", env={"UNS_HTTP_PORT": "http"})
    assert code == 2 and "environment variable UNS_HTTP_PORT: http.port: expected an integer" in err


def test_mask_url() -> None:
    assert mask_url("mqtt://u:p@h:1883") == "mqtt://u:***@h:1883"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("mqtts://[::1]:8883") == "mqtts://[::1]:8883"
    assert mask_url("mqtts://u:p@[::1]:8883/x") == "mqtts://u:***@[::1]:8883/x"
