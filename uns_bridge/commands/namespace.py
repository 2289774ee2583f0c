"""``uns-bridge namespace explain <topic | group/node[/device]>`` and ``uns-bridge namespace rules``.

``explain`` shows which rule matched (and why earlier ones did not), the captures, each ISA-95 level
with where its value came from, and the resulting UNS topics. ``--hint Site=Berlin`` pretends the
birth carried that hierarchy hint, to see the precedence at work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from uns_bridge.commands.config import ConfigOption, load_or_exit
from uns_bridge.config import ConfigError, NamespaceConfig
from uns_bridge.host.effects import MetricsDefined
from uns_bridge.namespace import LEVELS, CompiledRule, Namespace
from uns_bridge.placement import Placer
from uns_bridge.uns.contract import metric_topic

SPARKPLUG_NAMESPACE = "spBv1.0"
_MESSAGE_TYPES = {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"}


class TargetError(ValueError):
    """The explain target is neither a Sparkplug topic nor ``group/node[/device]``."""


def parse_target(text: str) -> tuple[str, str, str | None]:
    """``spBv1.0/G/DDATA/N/D`` or ``G/N/D`` or ``G/N`` -> ``(group, node, device | None)``."""
    parts = text.strip().split("/")
    if parts[0] == SPARKPLUG_NAMESPACE:
        if len(parts) == 3 and parts[1] == "STATE":
            raise TargetError(f"{text!r} is a host STATE topic, not an edge node or device")
        if len(parts) not in (4, 5) or parts[2] not in _MESSAGE_TYPES:
            raise TargetError(
                f"{text!r} is not a Sparkplug topic (spBv1.0/<group>/<NBIRTH|NDATA|DDATA|...>/<node>[/<device>])"
            )
        group, node, device = parts[1], parts[3], (parts[4] if len(parts) == 5 else None)
    elif len(parts) in (2, 3):
        group, node, device = parts[0], parts[1], (parts[2] if len(parts) == 3 else None)
    else:
        raise TargetError(f"{text!r}: expected a Sparkplug topic or <group>/<node>[/<device>]")
    if not group or not node or device == "":
        raise TargetError(f"{text!r}: group, node and device ids must not be empty")
    return group, node, device


def _why_not(rule: CompiledRule, ids: dict[str, str]) -> str:
    for key, pattern in rule.patterns:
        if pattern.match(ids[key]) is None:
            return f"{key} {ids[key]!r} does not match {pattern.source!r}"
    return "matched"  # pragma: no cover - only asked for rules that did not match


def explain(
    namespace: Namespace,
    prefix: str,
    group: str,
    node: str,
    device: str | None,
    hints: dict[str, str] | None = None,
    metric: str | None = None,
) -> dict[str, object]:
    """What ``namespace explain`` reports, as data (the command prints it)."""
    placer = Placer(namespace, prefix=prefix)
    if hints:
        folder = namespace.hint_prefixes[0] if namespace.hint_prefixes else ""
        birth = tuple((folder + level, value) for level, value in hints.items())
        placer.observe(MetricsDefined(group, node, device, (), 0, birth))
    placement = placer.place(group, node, device)
    ids = {"group": group, "node": node, "device": device or ""}
    skipped = []
    for rule in namespace.rules:
        if rule.name == placement.rule:
            break
        skipped.append({"rule": rule.name, "index": rule.index, "why": _why_not(rule, ids)})
    matched = next((r for r in namespace.rules if r.name == placement.rule), None)
    report: dict[str, object] = {
        "group": group,
        "node": node,
        "device": device,
        "rule": placement.rule,
        "rule_index": matched.index if matched else None,
        "skipped": skipped,
        "captures": dict(placement.captures),
        "precedence": namespace.precedence,
        "levels": [
            {"level": level, "value": value, "origin": origin}
            for level, value, origin in zip(LEVELS, placement.levels, placement.origins, strict=True)
        ],
        "asset_path": list(placement.asset_path),
        "uns_base": placement.uns_base,
        "state_topic": placer.state_topic(group, node, device),
    }
    if metric is not None:
        report["metric_topic"] = metric_topic(placement.uns_base, metric)
    return report


def _print_report(report: dict[str, object]) -> None:
    device = report["device"]
    entity = f"group {report['group']!r}, node {report['node']!r}"
    entity += f", device {device!r}" if device is not None else " (the node's own metrics)"
    typer.echo(entity)
    for skip in report["skipped"]:  # type: ignore[attr-defined]
        typer.echo(f"  skipped rule {skip['rule']!r} (namespace.rules[{skip['index']}]): {skip['why']}")
    if report["rule"] is None:
        typer.echo("rule:     none matched: the default mapping (namespace.default)")
    else:
        typer.echo(f"rule:     {report['rule']!r} (namespace.rules[{report['rule_index']}])")
    captures = report["captures"]
    assert isinstance(captures, dict)
    text = ", ".join(f"{k}={v!r}" for k, v in captures.items()) if captures else "(none)"
    typer.echo(f"captures: {text}")
    typer.echo(f"levels ({report['precedence']}):")
    for item in report["levels"]:  # type: ignore[attr-defined]
        value = item["value"] or "(empty: _)"
        typer.echo(f"  {item['level']:<10} {value:<28} <- {item['origin']}")
    typer.echo(f"UNS base:  {report['uns_base']}")
    typer.echo(f"state:     {report['state_topic']}")
    if "metric_topic" in report:
        typer.echo(f"metric:    {report['metric_topic']}")


def _parse_hints(values: list[str]) -> dict[str, str]:
    hints = {}
    for item in values:
        level, sep, value = item.partition("=")
        if not sep or not level.strip():
            raise typer.BadParameter(f"{item!r}: expected Level=Value, e.g. Site=Berlin", param_hint="--hint")
        hints[level.strip()] = value
    return hints


def _namespace(config_file: Path | None) -> tuple[Namespace, str, NamespaceConfig]:
    config, _ = load_or_exit(config_file)
    try:
        return Namespace.from_config(config.namespace), config.uns.prefix, config.namespace
    except ConfigError as exc:  # pragma: no cover - load_config validated it already
        typer.echo(f"uns-bridge: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add ``namespace explain`` and ``namespace rules``."""
    group = typer.Typer(help="Inspect the ISA-95 namespace mapping.", no_args_is_help=True)
    app.add_typer(group, name="namespace")

    @group.command("explain")
    def explain_command(
        target: Annotated[
            str,
            typer.Argument(
                help="A Sparkplug topic (spBv1.0/G/DDATA/N/D), <group>/<node> or <group>/<node>/<device>."
            ),
        ],
        config_file: ConfigOption = None,
        metric: Annotated[
            str | None, typer.Option("--metric", "-m", help="Also show this metric's UNS topic.")
        ] = None,
        hint: Annotated[
            list[str] | None,
            typer.Option(
                "--hint", help="Pretend the birth carried this ISA-95 hint, e.g. --hint 'Work Center=Line 4'."
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Which rule matches an edge node or device, and where it lands on the UNS."""
        try:
            group_id, node, device = parse_target(target)
        except TargetError as exc:
            raise typer.BadParameter(str(exc), param_hint="TARGET") from None
        namespace, prefix, _ = _namespace(config_file)
        report = explain(namespace, prefix, group_id, node, device, _parse_hints(hint or []), metric)
        if as_json:
            typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            _print_report(report)

    @group.command("rules")
    def rules_command(
        config_file: ConfigOption = None,
    ) -> None:
        """List the mapping rules in the order they are tried, then the default mapping."""
        _, _, settings = _namespace(config_file)
        typer.echo(f"precedence: {settings.precedence}")
        typer.echo(f"birth hints under: {', '.join(settings.hint_prefixes)}")
        for index, rule in enumerate(settings.rules):
            typer.echo(f"[{index}] {rule.name}")
            match = ", ".join(f"{k}={v!r}" for k, v in rule.match.items()) or "(anything)"
            typer.echo(f"    match:  {match}")
            levels = "/".join(rule.levels.get(level, "") or "_" for level in LEVELS)
            typer.echo(f"    levels: {levels}")
        if not settings.rules:
            typer.echo("(no rules)")
        default = "/".join(settings.default.get(level, "") or "_" for level in LEVELS)
        typer.echo(f"default:    {default}")
