"""Placer: rules + birth hints -> levels, asset path, UNS topics; caching and invalidation on rebirth."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.config import NamespaceConfig, NamespaceRule
from uns_bridge.host.effects import MetricInfo, MetricsDefined
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer, validate_prefix
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import PropertySet, PropertyValue
from uns_bridge.uns.contract import split_metric_topic, unescape_level

RULE = NamespaceRule(
    "assembly",
    {"group": "Plant{site}-{area}", "node": "Line{line}-PLC"},
    {
        "enterprise": "Acme",
        "site": "Plant{site}",
        "area": "{area}",
        "line": "Line{line}",
        "equipment": "{device}",
    },
)


def _placer(*rules: NamespaceRule, precedence: str = "rules-first", prefix: str = "uns") -> Placer:
    config = NamespaceConfig(precedence=precedence, rules=rules)  # type: ignore[arg-type]
    return Placer(Namespace.from_config(config), prefix=prefix)


def _birth(
    group: str, node: str, device: str | None, hints: dict[str, str], *metrics: MetricInfo
) -> MetricsDefined:
    prefix = "Node_Information/ISA95_Hierarchy/" if device is None else "Device_Information/ISA95_Hierarchy/"
    return MetricsDefined(group, node, device, metrics, 0, tuple((prefix + k, v) for k, v in hints.items()))


def test_rule_placement_of_devices_and_nodes() -> None:
    placer = _placer(RULE)
    device = placer.place("Plant1-Assembly", "Line2-PLC", "Press1")
    assert tuple(device.levels) == ("Acme", "Plant1", "Assembly", "Line2", "", "Press1")
    assert device.asset_path == ("Acme", "Plant1", "Assembly", "Line2", "Press1")
    assert device.named_levels[-1] == ("equipment", "Press1")
    assert device.uns_base == "uns/Acme/Plant1/Assembly/Line2/_/Press1"
    assert device.rule == "assembly"
    assert dict(device.captures) == {"site": "1", "area": "Assembly", "line": "2"}
    node = placer.place("Plant1-Assembly", "Line2-PLC", None)
    assert node.levels.equipment == "Line2-PLC"
    assert node.origins[-1] == "node id (node metrics)"
    assert (
        placer.state_topic("Plant1-Assembly", "Line2-PLC")
        == "uns/Acme/Plant1/Assembly/Line2/_/Line2-PLC/$state"
    )
    assert placer.state_topic("Plant1-Assembly", "Line2-PLC", "Press1") == device.uns_base + "/$state"


def test_default_mapping_when_nothing_matches() -> None:
    placer = _placer(RULE)
    device = placer.place("Lab", "Bench-7", "Scope")
    assert tuple(device.levels) == ("unassigned", "Lab", "", "", "Bench-7", "Scope")
    assert device.rule is None
    assert device.uns_base == "uns/unassigned/Lab/_/_/Bench-7/Scope"
    node = placer.place("Lab", "Bench-7", None)
    assert node.uns_base == "uns/unassigned/Lab/_/_/Bench-7/Bench-7"


def test_metric_topic_folders_and_cache_identity() -> None:
    placer = _placer(RULE)
    info = MetricInfo("Plant1-Assembly", "Line1-PLC", "Press1", "Motor/Speed", DataType.Float)
    topic = placer.metric_topic(info)
    assert topic == "uns/Acme/Plant1/Assembly/Line1/_/Press1/Motor/Speed"
    assert placer.metric_topic(info) is topic  # cached
    weird = MetricInfo("Plant1-Assembly", "Line1-PLC", "Press1", "a+b/#/$x", DataType.Int32)
    assert placer.metric_topic(weird) == "uns/Acme/Plant1/Assembly/Line1/_/Press1/a%2Bb/%23/%24x"


def test_birth_hints_fill_levels_and_inherit_from_the_node() -> None:
    placer = _placer()
    placer.observe(_birth("G", "N", None, {"Enterprise": "Acme", "Site": "Berlin", "Area": "Paint"}))
    placer.observe(
        _birth("G", "N", "D", {"Work Center": "Line 4", "Work Unit": "Cell-2", "Area": "Paint-West"})
    )
    device = placer.place("G", "N", "D")
    assert tuple(device.levels) == ("Acme", "Berlin", "Paint-West", "Line 4", "Cell-2", "D")
    assert device.origins[0] == "birth metric Node_Information/ISA95_Hierarchy/Enterprise"
    assert device.origins[2] == "birth metric Device_Information/ISA95_Hierarchy/Area"
    assert device.origins[5] == "default"
    other = placer.place("G", "N", "D2")  # no own birth hints: the node's apply
    assert tuple(other.levels) == ("Acme", "Berlin", "Paint", "", "N", "D2")
    assert placer.place("G", "N", None).uns_base == "uns/Acme/Berlin/Paint/_/N/N"


def test_precedence_rules_first_and_birth_first() -> None:
    hints = {"Site": "HintSite", "Work Unit": "HintCell"}
    rules_first = _placer(RULE)
    rules_first.observe(_birth("Plant1-Assembly", "Line1-PLC", "Press1", hints))
    placed = rules_first.place("Plant1-Assembly", "Line1-PLC", "Press1")
    assert placed.levels.site == "Plant1"  # the rule's level wins
    assert placed.levels.cell == "HintCell"  # the rule left cell empty: the hint fills it
    birth_first = _placer(RULE, precedence="birth-first")
    birth_first.observe(_birth("Plant1-Assembly", "Line1-PLC", "Press1", hints))
    placed = birth_first.place("Plant1-Assembly", "Line1-PLC", "Press1")
    assert placed.levels.site == "HintSite"
    assert placed.levels.area == "Assembly"  # no hint: the rule's
    assert placed.origins[1].startswith("birth metric")


def test_property_hints() -> None:
    placer = _placer()
    props = PropertySet((("ISA95_Hierarchy/Site", PropertyValue(DataType.String, "Lyon")),))
    info = MetricInfo("G", "N", "D", "Temp", DataType.Double, properties=props)
    placer.observe(MetricsDefined("G", "N", "D", (info,), 0, ()))
    placed = placer.place("G", "N", "D")
    assert placed.levels.site == "Lyon"
    assert placed.origins[1] == "birth property ISA95_Hierarchy/Site"


def test_rebirth_with_new_hints_invalidates_caches() -> None:
    placer = _placer()
    old = MetricInfo("G", "N", "D", "Temp", DataType.Double)
    placer.observe(_birth("G", "N", "D", {"Site": "One"}, old))
    assert placer.metric_topic(old).startswith("uns/unassigned/One/")
    new = MetricInfo("G", "N", "D", "Temp", DataType.Double)
    placer.observe(_birth("G", "N", "D", {"Site": "Two"}, new))
    assert placer.metric_topic(new).startswith("uns/unassigned/Two/")
    assert old not in placer._topics  # the old session's entry is gone
    # a node rebirth drops its devices' placements too (they inherit the node's hints)
    placer.observe(_birth("G", "N", None, {"Enterprise": "E2"}))
    assert placer.place("G", "N", "D").levels.enterprise == "E2"
    # a rebirth without hints forgets the old hints
    placer.observe(_birth("G", "N", "D", {}))
    assert placer.place("G", "N", "D").levels.site == "G"


def test_prefix_validation() -> None:
    assert validate_prefix("uns") is None
    assert validate_prefix("acme/uns/v1") is None
    for bad in ("", "$uns", "a/+/b", "a/#", "a//b", "/a", "a/"):
        assert validate_prefix(bad) is not None
        with pytest.raises(ValueError):
            _placer(prefix=bad)


names = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FFF), min_size=0, max_size=12)


@settings(max_examples=200)
@given(names, names, st.one_of(st.none(), names), names)
def test_any_ids_give_a_fixed_depth_topic_under_the_prefix(
    group: str, node: str, device: str | None, metric: str
) -> None:
    placer = _placer(RULE, prefix="acme/uns")
    info = MetricInfo(group, node, device, metric, DataType.Int32)
    topic = placer.metric_topic(info)
    parts = topic.split("/")
    assert parts[:2] == ["acme", "uns"]
    assert len(parts) == 2 + 6 + metric.count("/") + 1
    assert not any(c in topic for c in "+#\x00")
    assert all(p and not p.startswith("$") for p in parts)
    base = placer.place(group, node, device).uns_base
    assert split_metric_topic(topic, base) == metric
    levels = [unescape_level(p) for p in parts[2:8]]
    assert levels == list(placer.place(group, node, device).levels)


@pytest.mark.soak
@settings(max_examples=200_000, deadline=None)
@given(names, names, st.one_of(st.none(), names), names)
def test_soak_any_ids_give_a_fixed_depth_topic(
    group: str, node: str, device: str | None, metric: str
) -> None:
    test_any_ids_give_a_fixed_depth_topic_under_the_prefix.hypothesis.inner_test(group, node, device, metric)  # type: ignore[attr-defined]
