"""``uns-bridge namespace explain`` and ``namespace rules`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from uns_bridge.cli import app
from uns_bridge.commands.namespace import TargetError, parse_target

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-plant.toml"
runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"UNS_CONFIG": "", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("target", "ids"),
    [
        ("spBv1.0/G/DDATA/N/D", ("G", "N", "D")),
        ("spBv1.0/G/NBIRTH/N", ("G", "N", None)),
        ("G/N/D", ("G", "N", "D")),
        ("G/N", ("G", "N", None)),
    ],
)
def test_parse_target(target: str, ids: tuple[str, str, str | None]) -> None:
    assert parse_target(target) == ids


@pytest.mark.parametrize("bad", ["G", "a/b/c/d", "spBv1.0/STATE/host", "spBv1.0/G/XDATA/N", "G//D", "/N"])
def test_parse_target_rejects(bad: str) -> None:
    with pytest.raises(TargetError):
        parse_target(bad)


def test_explain_device_with_the_demo_plant() -> None:
    code, out, _ = _run(
        "namespace", "explain", "-c", str(DEMO), "Plant1-Assembly/Line1-PLC/Press1", "-m", "Motor/Speed"
    )
    assert code == 0, out
    assert "rule:     'detroit-stations' (namespace.rules[0])" in out
    assert "station='1'" in out and "area='Assembly'" in out
    assert "cell       Station1" in out
    assert "UNS base:  uns/AcmeMotors/Detroit/Assembly/Line1/Station1/Press1" in out
    assert "metric:    uns/AcmeMotors/Detroit/Assembly/Line1/Station1/Press1/Motor/Speed" in out


def test_explain_node_shows_skipped_rules_and_origins() -> None:
    code, out, _ = _run(
        "namespace", "explain", "-c", str(DEMO), "--json", "spBv1.0/Plant1-Paint/NDATA/Line2-PLC"
    )
    assert code == 0, out
    report = json.loads(out)
    assert report["rule"] == "detroit-lines" and report["rule_index"] == 1
    assert report["skipped"][0]["rule"] == "detroit-stations"
    assert "device '' does not match" in report["skipped"][0]["why"]
    levels = {item["level"]: item for item in report["levels"]}
    assert levels["equipment"] == {
        "level": "equipment",
        "value": "Line2-PLC",
        "origin": "node id (node metrics)",
    }
    assert levels["cell"]["origin"] == "empty"
    assert report["uns_base"] == "uns/AcmeMotors/Detroit/Paint/Line2/_/Line2-PLC"
    assert report["state_topic"] == report["uns_base"] + "/$state"


def test_explain_default_mapping_with_hints_and_environment() -> None:
    code, out, _ = _run(
        "namespace",
        "explain",
        "Lab/Bench/Scope",
        "--hint",
        "Work Center=Line 4",
        env={"UNS_PREFIX": "acme/uns"},
    )
    assert code == 0, out
    assert "none matched: the default mapping" in out
    assert "line       Line 4" in out and "birth metric Device_Information/ISA95_Hierarchy/Work Center" in out
    assert "UNS base:  acme/uns/unassigned/Lab/_/Line 4/Bench/Scope" in out


def test_explain_errors() -> None:
    code, _, err = _run("namespace", "explain", "nonsense")
    assert code == 2 and "expected a Sparkplug topic" in err
    code, _, err = _run("namespace", "explain", "G/N", "--hint", "Site")
    assert code == 2 and "expected Level=Value" in err
    code, _, err = _run("namespace", "explain", "G/N", env={"UNS_NAMESPACE_DEFAULT_SITE": "{nope}"})
    assert code == 2
    assert "UNS_NAMESPACE_DEFAULT_SITE: namespace.default.site: unknown variable {nope}" in err


def test_rules_lists_in_order() -> None:
    code, out, _ = _run("namespace", "rules", "-c", str(DEMO))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "precedence: rules-first"
    order = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert order == [
        "detroit-stations",
        "detroit-lines",
        "monterrey-stations",
        "monterrey-lines",
        "other-plants",
    ]
    assert "default:    unassigned/{group}/_/_/{node}/{device}" in out


def test_help_of_every_command_renders() -> None:
    for args in (["namespace", "explain"], ["namespace", "rules"], ["config", "check"], ["config", "show"]):
        code, out, err = _run(*args, "--help")
        assert code == 0, err
        assert "Usage" in out
