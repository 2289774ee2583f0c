"""ISA-95 mapping: which enterprise / site / area / line / cell / equipment a Sparkplug entity belongs to.

Pure: no I/O. :class:`Namespace` is built once from :class:`~uns_bridge.config.NamespaceConfig`.

Rules
-----
``namespace.rules`` are tried in order; the first whose ``match`` patterns all match wins. ``match``
has optional keys ``group``, ``node``, ``device`` (a missing key matches anything). A pattern is

* a glob: ``*`` any text (also none), ``?`` one character, ``{name}`` captures one or more characters
  (shortest first), ``{{`` / ``}}`` literal braces; everything else literal, case-sensitive, whole id; or
* ``re:<regex>``: a Python regular expression that must match the whole id; named groups
  ``(?P<name>...)`` are captures.

For a node's own metrics the device is the empty string: ``*`` and ``re:.*`` match it, ``Press{n}``
does not. ``levels`` are templates for ``enterprise``, ``site``, ``area``, ``line`` (work center),
``cell`` (work unit) and ``equipment``, using the rule's captures and ``{group}``, ``{node}``,
``{device}`` (empty for a node); a missing level is empty.

Birth hints
-----------
A birth may carry the hierarchy itself: metrics named ``<hint prefix><Level>`` (default prefixes
``Device_Information/ISA95_Hierarchy/`` and ``Node_Information/ISA95_Hierarchy/``) with a string value,
or properties of any of its metrics keyed the same way or ``ISA95_Hierarchy/<Level>``. ``<Level>`` is one
of Enterprise, Site, Area, Work Center or Line, Work Unit or Cell, Equipment (case, spaces and ``_``
ignored). A node's hints apply to its devices unless a device's own hint overrides them.

Precedence
----------
Per level:

* ``rules-first`` (default): the matched rule's non-empty level, else the birth hint, else (only when
  no rule matched) the default mapping's level.
* ``birth-first``: the birth hint, else the matched rule's level, else (no rule matched) the default.

A level still empty stays empty (``_`` in topics). Finally, for a node's own metrics an empty
``equipment`` is the node id, so node metrics sit beside their devices, never on a cell itself.

Default mapping (``namespace.default``) when no rule matches: ``unassigned/{group}/-/-/{node}/{device}``
(enterprise ``unassigned``, site = group, no area or line, cell = edge node, equipment = device or,
for node metrics, the node) -- unknown equipment lands somewhere visible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from uns_bridge.config import ConfigError, NamespaceConfig, NamespaceRule

LEVELS: tuple[str, ...] = ("enterprise", "site", "area", "line", "cell", "equipment")
MATCH_KEYS: tuple[str, ...] = ("group", "node", "device")
BUILTIN_VARIABLES = frozenset(MATCH_KEYS)

#: normalised birth-hint level name -> level
_HINT_NAMES = {
    "enterprise": "enterprise",
    "site": "site",
    "area": "area",
    "workcenter": "line",
    "line": "line",
    "productionline": "line",
    "workunit": "cell",
    "cell": "cell",
    "workcell": "cell",
    "equipment": "equipment",
}


class Isa95Path(NamedTuple):
    """The six ISA-95 levels; an empty string is an empty level."""

    enterprise: str
    site: str
    area: str
    line: str
    cell: str
    equipment: str


def hint_level(name: str) -> str | None:
    """The level a birth-hint name stands for (``"Work Center"`` -> ``"line"``), or ``None``."""
    return _HINT_NAMES.get(re.sub(r"[\s_\-]", "", name).lower())


# ------------------------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class LevelTemplate:
    """A compiled level template: literal text and ``{variable}`` parts."""

    source: str
    parts: tuple[tuple[str, str | None], ...]

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(var for _, var in self.parts if var is not None)

    def render(self, variables: Mapping[str, str]) -> str:
        if len(self.parts) == 1 and self.parts[0][1] is None:
            return self.parts[0][0]
        return "".join(text if var is None else variables.get(var, "") for text, var in self.parts)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _scan_braces(text: str, where: str) -> list[tuple[str, str | None]]:
    """Split ``text`` into literal and ``{name}`` parts (``{{``/``}}`` are literal braces)."""
    parts: list[tuple[str, str | None]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i : i + 2] in ("{{", "}}"):
            literal.append(char)
            i += 2
            continue
        if char == "}":
            raise ConfigError(
                f"{where}: unmatched '}}' at position {i} in {text!r} (write '}}}}' for a brace)"
            )
        if char == "{":
            end = text.find("}", i)
            if end < 0:
                raise ConfigError(f"{where}: unclosed '{{' at position {i} in {text!r}")
            name = text[i + 1 : end]
            if not _NAME.match(name):
                raise ConfigError(f"{where}: {{{name}}} is not a valid name in {text!r}")
            if literal:
                parts.append(("".join(literal), None))
                literal = []
            parts.append(("", name))
            i = end + 1
            continue
        literal.append(char)
        i += 1
    if literal or not parts:
        parts.append(("".join(literal), None))
    return parts


def compile_template(text: str, allowed: Iterable[str], where: str) -> LevelTemplate:
    """Compile a level template; every ``{variable}`` must be in ``allowed``."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string template, got {type(text).__name__}")
    parts = tuple(_scan_braces(text, where))
    allowed_set = set(allowed)
    for _, var in parts:
        if var is not None and var not in allowed_set:
            known = ", ".join("{" + v + "}" for v in sorted(allowed_set))
            raise ConfigError(f"{where}: unknown variable {{{var}}} in {text!r}; known here: {known}")
    return LevelTemplate(text, parts)


# -------------------------------------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled match pattern for one id (group, node or device)."""

    source: str
    regex: re.Pattern[str]
    captures: tuple[str, ...]

    def match(self, value: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(value)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


def compile_pattern(text: str, where: str) -> Pattern:
    """Compile a glob (``*``, ``?``, ``{name}``) or ``re:<regex>`` pattern."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected a string pattern, got {type(text).__name__}")
    if text.startswith("re:"):
        try:
            regex = re.compile(text[3:])
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regular expression {text[3:]!r}: {exc}") from None
        return Pattern(text, regex, tuple(regex.groupindex))
    pieces: list[str] = []
    captures: list[str] = []
    for literal, var in _scan_braces(text, where):
        if var is None:
            for char in literal:
                pieces.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        else:
            if var in captures:
                raise ConfigError(f"{where}: capture {{{var}}} appears twice in {text!r}")
            captures.append(var)
            pieces.append(f"(?P<{var}>.+?)")
    return Pattern(text, re.compile("".join(pieces), re.DOTALL), tuple(captures))


# ----------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    index: int
    patterns: tuple[tuple[str, Pattern], ...]
    levels: tuple[LevelTemplate | None, ...]

    def match(self, ids: Mapping[str, str]) -> dict[str, str] | None:
        captures: dict[str, str] = {}
        for key, pattern in self.patterns:
            found = pattern.match(ids[key])
            if found is None:
                return None
            captures.update(found)
        return captures


def _compile_rule(rule: NamespaceRule, index: int) -> CompiledRule:
    base = f"namespace.rules[{index}]"
    name = rule.name
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{base}.name: every rule needs a non-empty name")
    base = f"{base} (rule {name!r})"
    if not isinstance(rule.match, Mapping):
        raise ConfigError(f"{base}.match: expected a table of group/node/device patterns")
    if not isinstance(rule.levels, Mapping):
        raise ConfigError(f"{base}.levels: expected a table of level templates")
    patterns: list[tuple[str, Pattern]] = []
    seen: dict[str, str] = {}
    for key, text in rule.match.items():
        where = f"namespace.rules[{index}].match.{key} (rule {name!r})"
        if key not in MATCH_KEYS:
            raise ConfigError(f"{where}: unknown match key {key!r}; use group, node or device")
        pattern = compile_pattern(text, where)
        for capture in pattern.captures:
            if capture in BUILTIN_VARIABLES:
                raise ConfigError(f"{where}: capture name {{{capture}}} is reserved (group, node, device)")
            if capture in seen:
                raise ConfigError(
                    f"{where}: capture {{{capture}}} is already captured by match.{seen[capture]}"
                )
            seen[capture] = key
        patterns.append((key, pattern))
    allowed = BUILTIN_VARIABLES | set(seen)
    for key in rule.levels:
        if key not in LEVELS:
            raise ConfigError(
                f"namespace.rules[{index}].levels.{key} (rule {name!r}): unknown level {key!r}; "
                f"use {', '.join(LEVELS)}"
            )
    levels = tuple(
        compile_template(
            rule.levels[level], allowed, f"namespace.rules[{index}].levels.{level} (rule {name!r})"
        )
        if level in rule.levels
        else None
        for level in LEVELS
    )
    order = {k: i for i, k in enumerate(MATCH_KEYS)}
    patterns.sort(key=lambda item: order[item[0]])
    return CompiledRule(name, index, tuple(patterns), levels)


@dataclass(frozen=True, slots=True)
class Hint:
    """A birth-provided level value and where it came from (the metric or property name)."""

    value: str
    origin: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The result of mapping one entity: its levels, each level's origin, the rule and captures."""

    levels: Isa95Path
    origins: tuple[str, ...]
    rule: str | None
    captures: tuple[tuple[str, str], ...]


class Namespace:
    """Ordered mapping rules, the default mapping and the precedence between rules and birth hints."""

    def __init__(
        self,
        rules: tuple[CompiledRule, ...],
        default: tuple[LevelTemplate, ...],
        precedence: str,
        hint_prefixes: tuple[str, ...],
    ) -> None:
        self.rules = rules
        self.default = default
        self.precedence = precedence
        self.hint_prefixes = hint_prefixes
        tails = {p[p.index("/") + 1 :] for p in hint_prefixes if "/" in p.rstrip("/")}
        self.property_prefixes: tuple[str, ...] = tuple(dict.fromkeys((*hint_prefixes, *sorted(tails))))

    @classmethod
    def from_config(cls, config: NamespaceConfig) -> Namespace:
        """Compile and validate; :class:`ConfigError` names the rule and field that is wrong."""
        if config.precedence not in ("rules-first", "birth-first"):
            raise ConfigError(
                f"namespace.precedence: {config.precedence!r} is not one of 'rules-first', 'birth-first'"
            )
        rules = tuple(_compile_rule(rule, i) for i, rule in enumerate(config.rules))
        names: dict[str, int] = {}
        for rule in rules:
            if rule.name in names:
                raise ConfigError(
                    f"namespace.rules[{rule.index}].name: rule name {rule.name!r} is already used by "
                    f"namespace.rules[{names[rule.name]}]"
                )
            names[rule.name] = rule.index
        for key in config.default:
            if key not in LEVELS:
                raise ConfigError(f"namespace.default.{key}: unknown level {key!r}; use {', '.join(LEVELS)}")
        default = tuple(
            compile_template(config.default.get(level, ""), BUILTIN_VARIABLES, f"namespace.default.{level}")
            for level in LEVELS
        )
        for i, prefix in enumerate(config.hint_prefixes):
            if not isinstance(prefix, str) or not prefix:
                raise ConfigError(f"namespace.hint_prefixes[{i}]: expected a non-empty string")
        return cls(rules, default, config.precedence, tuple(config.hint_prefixes))

    # ------------------------------------------------------------------------------------------ hints

    def hint_name(self, name: str, prefixes: tuple[str, ...] | None = None) -> str | None:
        """The level of a hint metric/property name (``Device_Information/ISA95_Hierarchy/Site``)."""
        for prefix in self.hint_prefixes if prefixes is None else prefixes:
            if name.startswith(prefix):
                return hint_level(name[len(prefix) :])
        return None

    def hints_from_birth(
        self, birth_metrics: Iterable[tuple[str, object]], properties: Iterable[tuple[str, object]] = ()
    ) -> dict[str, Hint]:
        """Level -> hint from a birth's hint metrics (win) and metric properties (name, value) pairs."""
        hints: dict[str, Hint] = {}
        for name, value in properties:
            level = self.hint_name(name, self.property_prefixes)
            text = _hint_text(value)
            if level is not None and text:
                hints[level] = Hint(text, f"birth property {name}")
        for name, value in birth_metrics:
            level = self.hint_name(name)
            text = _hint_text(value)
            if level is not None and text:
                hints[level] = Hint(text, f"birth metric {name}")
        return hints

    # ------------------------------------------------------------------------------------------- rules

    def match(self, group: str, node: str, device: str | None) -> tuple[CompiledRule | None, dict[str, str]]:
        """The first rule that matches, with its captures (``(None, {})`` when none does)."""
        ids = {"group": group, "node": node, "device": device or ""}
        for rule in self.rules:
            captures = rule.match(ids)
            if captures is not None:
                return rule, captures
        return None, {}

    def resolve(
        self, group: str, node: str, device: str | None, hints: Mapping[str, Hint] | None = None
    ) -> Resolution:
        """Map one node (``device is None``) or device to its ISA-95 levels (see module doc)."""
        rule, captures = self.match(group, node, device)
        variables = {**captures, "group": group, "node": node, "device": device or ""}
        hints = hints or {}
        birth_first = self.precedence == "birth-first"
        values: list[str] = []
        origins: list[str] = []
        for i, level in enumerate(LEVELS):
            candidates: list[tuple[str, str]] = []
            if rule is not None:
                template = rule.levels[i]
                candidates.append((template.render(variables) if template else "", f"rule {rule.name}"))
            hint = hints.get(level)
            hint_candidate = [(hint.value, hint.origin)] if hint is not None else []
            candidates = hint_candidate + candidates if birth_first else candidates + hint_candidate
            if rule is None:
                candidates.append((self.default[i].render(variables), "default"))
            value, origin = next(((v, o) for v, o in candidates if v), ("", "empty"))
            values.append(value)
            origins.append(origin)
        if device is None and not values[-1]:
            values[-1], origins[-1] = node, "node id (node metrics)"
        return Resolution(
            Isa95Path(*values), tuple(origins), rule.name if rule else None, tuple(sorted(captures.items()))
        )


def _hint_text(value: object) -> str:
    if value is None or isinstance(value, bytes | tuple):
        return ""
    inner = getattr(value, "value", value)  # a PropertyValue
    if inner is None or isinstance(inner, bytes | tuple):
        return ""
    return str(inner).strip()
