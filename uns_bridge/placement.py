"""Where each node, device and metric lives: ISA-95 levels, asset path and UNS topics (pure, cached).

:class:`Placer` combines the :class:`~uns_bridge.namespace.Namespace` rules with the hierarchy hints
that births carry (learned by :meth:`Placer.observe`; call it with every ``MetricsDefined`` before
sinks see the effect). Results are cached per entity and per ``MetricInfo`` object; a new birth of an
entity drops its cached results (a node's birth also those of its devices, whose hints inherit the
node's).

* ``place(group, node, device)`` -> :class:`Placement`
* ``metric_topic(info)`` -> ``<prefix>/<six levels>/<metric folders>/<metric>``
* ``state_topic(group, node, device)`` -> ``<prefix>/<six levels>/$state``

Topic levels are escaped as :mod:`uns_bridge.uns.contract` documents (an empty level is ``_``).

A node's own metrics take the node id as their equipment level (unless the namespace gives one), so a
device whose id equals its node's id shares the node's base topic; the ``source`` in each payload
still tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from uns_bridge.host.effects import MetricInfo, MetricsDefined
from uns_bridge.namespace import LEVELS, Hint, Isa95Path, Namespace
from uns_bridge.uns.contract import STATE_LEVEL, join_levels, metric_levels

NodeKey = tuple[str, str]
EntityKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class Placement:
    """One entity's place: its levels, the non-empty levels top-down, its UNS base topic and why."""

    levels: Isa95Path
    #: the non-empty levels, enterprise first (``levels`` tells which level each one is)
    asset_path: tuple[str, ...]
    #: ``<prefix>/<enterprise>/<site>/<area>/<line>/<cell>/<equipment>``, escaped
    uns_base: str
    #: the name of the matched rule, ``None`` when the default mapping applied
    rule: str | None
    #: per level: ``rule <name>``, ``birth metric <name>``, ``birth property <name>``, ``default``,
    #: ``node id (node metrics)`` or ``empty``
    origins: tuple[str, ...] = ()
    captures: tuple[tuple[str, str], ...] = ()

    @property
    def named_levels(self) -> tuple[tuple[str, str], ...]:
        """``(level name, value)`` of the non-empty levels, top-down (for an asset tree)."""
        return tuple((name, value) for name, value in zip(LEVELS, self.levels, strict=True) if value)


def validate_prefix(prefix: str) -> str | None:
    """Why ``prefix`` is no valid UNS topic prefix, or ``None`` when it is."""
    if not prefix:
        return "the prefix must not be empty"
    if prefix.startswith("$"):
        return "the prefix must not start with '$' (reserved by MQTT brokers)"
    for char in ("+", "#", "\x00"):
        if char in prefix:
            return f"the prefix must not contain {char!r}"
    if "" in prefix.split("/"):
        return "the prefix must not have empty levels (leading, trailing or double '/')"
    return None


class Placer:
    """Placement of Sparkplug entities on the ISA-95 namespace and the UNS, with birth hints."""

    def __init__(self, namespace: Namespace, prefix: str = "uns") -> None:
        problem = validate_prefix(prefix)
        if problem is not None:
            raise ValueError(f"invalid UNS prefix {prefix!r}: {problem}")
        self.namespace = namespace
        self.prefix = prefix
        self._hints: dict[EntityKey, dict[str, Hint]] = {}
        self._placements: dict[NodeKey, dict[str | None, Placement]] = {}
        self._topics: dict[MetricInfo, str] = {}
        self._infos: dict[EntityKey, list[MetricInfo]] = {}
        self._node_devices: dict[NodeKey, set[str | None]] = {}

    # ------------------------------------------------------------------------------------------ births

    def observe(self, effect: MetricsDefined) -> None:
        """Learn the hierarchy hints of a birth; forget the entity's (and a node's devices') cache."""
        properties: list[tuple[str, object]] = []
        for info in effect.metrics:
            if info.properties is not None:
                properties.extend(info.properties.items)
        hints = self.namespace.hints_from_birth(effect.birth_metrics, properties)
        key: EntityKey = (effect.group, effect.node, effect.device)
        if hints:
            self._hints[key] = hints
        else:
            self._hints.pop(key, None)
        node_key = (effect.group, effect.node)
        if effect.device is None:
            self._forget(key)
            for device in tuple(self._node_devices.get(node_key, ())):
                self._forget((effect.group, effect.node, device))
            self._placements.pop(node_key, None)
        else:
            self._forget(key)
            self._placements.get(node_key, {}).pop(effect.device, None)

    def _forget(self, key: EntityKey) -> None:
        for info in self._infos.pop(key, ()):
            self._topics.pop(info, None)

    def hints(self, group: str, node: str, device: str | None) -> dict[str, Hint]:
        """The effective hints of an entity: a device's own over its node's."""
        node_hints = self._hints.get((group, node, None), {})
        if device is None:
            return dict(node_hints)
        return {**node_hints, **self._hints.get((group, node, device), {})}

    # ------------------------------------------------------------------------------------------ places

    def place(self, group: str, node: str, device: str | None) -> Placement:
        """The placement of a node (``device is None``) or device (cached)."""
        by_device = self._placements.get((group, node))
        if by_device is not None:
            found = by_device.get(device)
            if found is not None:
                return found
        else:
            by_device = self._placements[(group, node)] = {}
        resolution = self.namespace.resolve(group, node, device, self.hints(group, node, device))
        levels = resolution.levels
        placement = Placement(
            levels=levels,
            asset_path=tuple(level for level in levels if level),
            uns_base=join_levels(self.prefix, levels),
            rule=resolution.rule,
            origins=resolution.origins,
            captures=resolution.captures,
        )
        by_device[device] = placement
        self._node_devices.setdefault((group, node), set()).add(device)
        return placement

    def metric_topic(self, info: MetricInfo) -> str:
        """``<uns_base>/<metric folders>/<metric>`` of a metric (cached per ``MetricInfo`` object)."""
        topic = self._topics.get(info)
        if topic is None:
            base = self.place(info.group, info.node, info.device).uns_base
            topic = f"{base}/{metric_levels(info.name)}"
            self._topics[info] = topic
            self._infos.setdefault((info.group, info.node, info.device), []).append(info)
        return topic

    def state_topic(self, group: str, node: str, device: str | None = None) -> str:
        """``<uns_base>/$state``: where a node's or device's online state is published."""
        return f"{self.place(group, node, device).uns_base}/{STATE_LEVEL}"
