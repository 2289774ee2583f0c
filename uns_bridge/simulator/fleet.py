"""A fleet of simulated edge nodes, and the faults it can inject. Pure and deterministic.

Naming follows the demo plant (``examples/demo-plant.toml``): groups ``<prefix>-<Area>`` (``Plant1-Assembly``),
edge nodes ``Line<n>-PLC``, devices ``<Kind><Station>`` (``Press1``, ``Robot1``, ..., ``Press2``). Node ``i``
goes to area ``i % 4``, line ``i // 4 + 1``. The NBIRTH hints name enterprise ``AcmeMotors`` and site
``Detroit`` for ``Plant1``, ``Monterrey`` for ``Plant2`` (the prefix itself otherwise).

Faults (``--fault NAME[=PROBABILITY]``, probability per data round of a node):

=========== ======================================================================================
gap         one message's seq is skipped (a message lost on the way)
reorder     two messages of the round are sent in swapped order
duplicate   a message is sent twice
death       the connection dies: the broker delivers the Will (NDEATH with the session's bdSeq), the
            node reconnects with the next bdSeq and births again
reconnect   a clean reconnect: the node publishes its NDEATH itself, disconnects, reconnects, births
devicedeath a device goes offline (DDEATH) and comes back with a DBIRTH in the next round
=========== ======================================================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from uns_bridge.simulator.model import EdgeNode, NodeIdentity, SimMessage
from uns_bridge.sparkplug.values import Payload

AREAS = ("Assembly", "Paint", "Packaging", "Welding")
DEVICE_KINDS = ("Press", "Robot", "Conveyor", "Oven", "Filler", "Welder")
FAULTS = ("gap", "reorder", "duplicate", "death", "reconnect", "devicedeath")
DEFAULT_PROBABILITY = 0.05


class FaultError(ValueError):
    """A ``--fault`` value is not ``NAME[=PROBABILITY]`` with a known name and 0 <= p <= 1."""


def parse_faults(specs: list[str] | tuple[str, ...]) -> dict[str, float]:
    """``["gap=0.1", "death"]`` -> ``{"gap": 0.1, "death": 0.05}``."""
    faults: dict[str, float] = {}
    for spec in specs:
        for part in spec.split(","):
            name, _, raw = part.strip().partition("=")
            name = name.strip().lower()
            if not name:
                continue
            if name not in FAULTS:
                raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
            try:
                probability = float(raw) if raw else DEFAULT_PROBABILITY
            except ValueError:
                raise FaultError(f"fault {name}: {raw!r} is not a probability") from None
            if not 0.0 <= probability <= 1.0:
                raise FaultError(f"fault {name}: probability {probability} is not between 0 and 1")
            faults[name] = probability
    return faults


def device_ids(count: int) -> tuple[str, ...]:
    return tuple(f"{DEVICE_KINDS[i % len(DEVICE_KINDS)]}{i // len(DEVICE_KINDS) + 1}" for i in range(count))


#: the demo plant's sites by plant prefix (``examples/demo-plant.toml``); other prefixes name themselves
SITES = {"Plant1": "Detroit", "Plant2": "Monterrey"}


def node_identity(index: int, group_prefix: str, site: str | None = None) -> NodeIdentity:
    area = AREAS[index % len(AREAS)]
    line = f"Line{index // len(AREAS) + 1}"
    return NodeIdentity(
        group=f"{group_prefix}-{area}",
        node=f"{line}-PLC",
        site=site or SITES.get(group_prefix, group_prefix),
        area=area,
        line=line,
    )


def default_encoder(data_datatypes: bool = False) -> Callable[[Payload], bytes]:
    """The codec's encoder; alias-only (DATA) metrics without their datatype unless ``data_datatypes``."""
    from uns_bridge.sparkplug.payload import encode_payload

    omit = not data_datatypes

    def encode(payload: Payload) -> bytes:
        return encode_payload(payload, omit_alias_datatypes=omit)

    return encode


@dataclass
class FleetEvent:
    """What the fleet asks its transport to do besides publishing (live runs act on these)."""

    #: "publish", "die" (drop the connection, the broker sends the Will), "reconnect" (clean)
    kind: str
    node: int
    message: SimMessage | None = None


@dataclass
class FleetGenerator:
    """Nodes x devices x metrics, stepped at ``rate`` rounds per second, with optional faults.

    ``start(now)`` gives every node's births; ``step(now)`` one round of data (and of faults). With the
    same arguments and seed the output is byte-for-byte the same: benchmarks and tests rely on it.
    """

    nodes: int = 1
    devices: int = 2
    metrics: int = 10
    rate: float = 1.0
    group_prefix: str = "Plant1"
    seed: int = 1
    faults: dict[str, float] = field(default_factory=dict)
    data_datatypes: bool = False
    encode: Callable[[Payload], bytes] | None = None
    edge_nodes: list[EdgeNode] = field(init=False)
    rng: random.Random = field(init=False)
    #: counts of injected faults by name
    injected: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        encode = self.encode or default_encoder(self.data_datatypes)
        ids = device_ids(self.devices)
        self.edge_nodes = [
            EdgeNode(
                node_identity(i, self.group_prefix),
                ids,
                self.metrics,
                self.seed * 1_000_003 + i,
                encode,
                data_datatypes=self.data_datatypes,
            )
            for i in range(self.nodes)
        ]
        self.rng = random.Random(self.seed)
        self.injected = dict.fromkeys(FAULTS, 0)
        self._reborn: list[list[int]] = [[] for _ in range(self.nodes)]

    @property
    def interval_ms(self) -> int:
        return max(1, round(1000 / self.rate))

    def start(self, now_ms: int) -> list[FleetEvent]:
        events = []
        for i, node in enumerate(self.edge_nodes):
            node.connection_made()
            events += [FleetEvent("publish", i, m) for m in node.births(now_ms)]
        return events

    def step(self, now_ms: int) -> list[FleetEvent]:
        events: list[FleetEvent] = []
        for i, node in enumerate(self.edge_nodes):
            events += self._node_round(i, node, now_ms)
        return events

    def _chance(self, name: str) -> bool:
        p = self.faults.get(name, 0.0)
        if p and self.rng.random() < p:
            self.injected[name] += 1
            return True
        return False

    def _node_round(self, index: int, node: EdgeNode, now_ms: int) -> list[FleetEvent]:
        if self._chance("death"):
            will = node.will(now_ms)
            node.connection_closed()
            node.connection_made()
            return [FleetEvent("die", index, will)] + [
                FleetEvent("publish", index, m) for m in node.births(now_ms)
            ]
        if self._chance("reconnect"):
            death = node.clean_death(now_ms)
            node.connection_closed()
            node.connection_made()
            return [FleetEvent("publish", index, death), FleetEvent("reconnect", index)] + [
                FleetEvent("publish", index, m) for m in node.births(now_ms)
            ]
        messages: list[SimMessage] = [node.device_rebirth(d, now_ms) for d in self._reborn[index]]
        self._reborn[index] = []
        if self._chance("gap"):
            node.seq = (node.seq + 1) % 256
        messages += node.data(now_ms)
        if node.devices and self._chance("devicedeath"):
            d = self.rng.randrange(len(node.devices))
            if node.devices[d].online:
                messages.append(node.device_death(d, now_ms))
                self._reborn[index].append(d)
        if len(messages) >= 2 and self._chance("reorder"):
            k = self.rng.randrange(len(messages) - 1)
            messages[k], messages[k + 1] = messages[k + 1], messages[k]
        if messages and self._chance("duplicate"):
            k = self.rng.randrange(len(messages))
            messages.insert(k + 1, messages[k])
        return [FleetEvent("publish", index, m) for m in messages]

    def messages(self, start_ms: int, rounds: int) -> Iterator[SimMessage]:
        """Births at ``start_ms`` then ``rounds`` data rounds, as the broker would deliver them.

        A ``die`` event yields the Will (as the broker publishes it); ``reconnect`` yields nothing.
        """
        for event in self.start(start_ms):
            assert event.message is not None
            yield event.message
        for r in range(1, rounds + 1):
            for event in self.step(start_ms + r * self.interval_ms):
                if event.message is not None:
                    yield event.message._replace(t_ms=start_ms + r * self.interval_ms)
