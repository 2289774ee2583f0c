"""Namespace rules: globs, regexes, captures, templates, precedence, defaults, hint names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.config import ConfigError, NamespaceConfig, NamespaceRule
from uns_bridge.namespace import Hint, Namespace, compile_pattern, compile_template, hint_level


def _ns(*rules: NamespaceRule, precedence: str = "rules-first", **kw: object) -> Namespace:
    return Namespace.from_config(NamespaceConfig(precedence=precedence, rules=rules, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "value", "captures"),
    [
        ("Plant{n}-{area}", "Plant1-Assembly", {"n": "1", "area": "Assembly"}),
        ("Plant{n}-{area}", "Plant12-Paint-West", {"n": "12", "area": "Paint-West"}),  # shortest first
        ("Line?-PLC", "Line7-PLC", {}),
        ("*", "", {}),
        ("*-PLC", "Line1-PLC", {}),
        ("a.b", "a.b", {}),
        ("{{x}}", "{x}", {}),
        ("re:(?P<kind>[A-Za-z]+)(?P<no>[0-9]+)", "Press12", {"kind": "Press", "no": "12"}),
        ("re:Press(?P<no>[0-9]+)?", "Press", {}),
    ],
)
def test_patterns_match(pattern: str, value: str, captures: dict[str, str]) -> None:
    assert compile_pattern(pattern, "t").match(value) == captures


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("Plant{n}-{area}", "Plant-Assembly"),  # {n} needs a character
        ("Line?-PLC", "Line10-PLC"),
        ("a.b", "axb"),  # dots are literal
        ("Press*", "press1"),  # case-sensitive
        ("Press{n}", ""),  # a node's device "" never matches a capture
        ("re:Press[0-9]", "Press10"),  # whole id
        ("re:Press", "XPress"),
    ],
)
def test_patterns_do_not_match(pattern: str, value: str) -> None:
    assert compile_pattern(pattern, "t").match(value) is None


@settings(max_examples=200)
@given(st.text(max_size=20))
def test_glob_literals_match_only_themselves(text: str) -> None:
    literal = text.replace("{", "{{").replace("}", "}}").replace("*", "").replace("?", "")
    pattern = compile_pattern(literal, "t")
    plain = text.replace("*", "").replace("?", "")
    assert pattern.match(plain) == {}
    assert pattern.match(plain + "x") is None


def test_templates_render_and_validate() -> None:
    template = compile_template("Line{line}-{{raw}}", {"line"}, "where")
    assert template.render({"line": "4"}) == "Line4-{raw}"
    assert template.variables == frozenset({"line"})
    with pytest.raises(ConfigError, match=r"where: unknown variable \{x\} in 'a\{x\}'; known here: \{line\}"):
        compile_template("a{x}", {"line"}, "where")
    with pytest.raises(ConfigError, match=r"where: .* is not a valid name"):
        compile_template("{1a}", {"line"}, "where")


def test_first_matching_rule_wins_and_missing_keys_match_anything() -> None:
    ns = _ns(
        NamespaceRule("presses", {"device": "Press{n}"}, {"site": "S", "cell": "Cell{n}"}),
        NamespaceRule("rest", {"group": "*"}, {"site": "R"}),
    )
    placed = ns.resolve("G", "N", "Press3")
    assert placed.rule == "presses" and placed.levels.cell == "Cell3" and placed.levels.area == ""
    assert ns.resolve("G", "N", "Robot1").rule == "rest"
    node = ns.resolve("G", "N", None)  # device "" does not match Press{n}
    assert node.rule == "rest" and node.levels.equipment == "N"


def test_default_mapping_and_custom_default() -> None:
    placed = _ns().resolve("G", "N", "D")
    assert tuple(placed.levels) == ("unassigned", "G", "", "", "N", "D")
    assert placed.origins == ("default", "default", "empty", "empty", "default", "default")
    custom = _ns(default={"enterprise": "lost", "site": "{group}-{node}"})
    assert tuple(custom.resolve("G", "N", "D").levels) == ("lost", "G-N", "", "", "", "")
    assert custom.resolve("G", "N", None).levels.equipment == "N"


def test_precedence_per_level() -> None:
    rule = NamespaceRule("r", {"group": "G"}, {"site": "RuleSite", "area": ""})
    hints = {"site": Hint("HintSite", "birth metric X/Site"), "area": Hint("HintArea", "birth metric X/Area")}
    first = _ns(rule).resolve("G", "N", "D", hints)
    assert (first.levels.site, first.levels.area) == ("RuleSite", "HintArea")
    assert first.levels.enterprise == ""  # a matched rule never mixes in the default mapping
    birth = _ns(rule, precedence="birth-first").resolve("G", "N", "D", hints)
    assert (birth.levels.site, birth.levels.area) == ("HintSite", "HintArea")
    # no rule matched: hints beat the default mapping in both modes
    other = _ns(rule).resolve("Other", "N", "D", hints)
    assert other.levels.site == "HintSite" and other.levels.enterprise == "unassigned"


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("Enterprise", "enterprise"),
        ("site", "site"),
        ("Work Center", "line"),
        ("WorkCenter", "line"),
        ("work_center", "line"),
        ("Line", "line"),
        ("Work Unit", "cell"),
        ("Cell", "cell"),
        ("Equipment", "equipment"),
        ("Floor", None),
    ],
)
def test_hint_level_names(name: str, level: str | None) -> None:
    assert hint_level(name) == level


def test_hints_from_birth_metrics_and_properties() -> None:
    ns = _ns()
    hints = ns.hints_from_birth(
        [
            ("Device_Information/ISA95_Hierarchy/Site", "Berlin"),
            ("Node_Information/ISA95_Hierarchy/Work Unit", "  Cell 7 "),
            ("Device_Information/ISA95_Hierarchy/Area", ""),  # empty: ignored
            ("Device_Information/ISA95_Hierarchy/Floor", "3"),  # not a level
            ("Other/Site", "nope"),
        ],
        [("ISA95_Hierarchy/Site", "PropSite"), ("ISA95_Hierarchy/Enterprise", "PropEnt")],
    )
    assert {k: v.value for k, v in hints.items()} == {
        "site": "Berlin",
        "cell": "Cell 7",
        "enterprise": "PropEnt",
    }
    assert hints["site"].origin == "birth metric Device_Information/ISA95_Hierarchy/Site"


def test_from_config_rejects_bad_rules() -> None:
    with pytest.raises(ConfigError, match=r"namespace.rules\[0\].match.device \(rule 'x'\): invalid regular"):
        _ns(NamespaceRule("x", {"device": "re:("}, {}))
    with pytest.raises(ConfigError, match=r"namespace.rules\[1\].name: rule name 'x' is already used"):
        _ns(NamespaceRule("x", {}, {}), NamespaceRule("x", {}, {}))
    with pytest.raises(ConfigError, match=r"namespace.precedence"):
        _ns(precedence="first")
    with pytest.raises(
        ConfigError, match=r"namespace.rules\[0\].levels.site \(rule 'x'\): unknown variable \{n\}"
    ):
        _ns(NamespaceRule("x", {"group": "G{m}"}, {"site": "{n}"}))
