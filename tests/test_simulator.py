"""The pure simulator: what its edge nodes put on the wire, decoded by our codec and by pysparkplug."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pysparkplug
import pytest

from uns_bridge.simulator import FleetGenerator, SimMessage, parse_faults
from uns_bridge.simulator.fleet import FaultError, device_ids, node_identity
from uns_bridge.simulator.model import HIERARCHY, MOTOR_DEFINITION, MOTOR_REF
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import DataSet, Metric, Payload, Template

T0 = 1_764_700_000_000


def kind(message: SimMessage) -> str:
    return message.topic.split("/")[2]


def node_key(message: SimMessage) -> tuple[str, str]:
    parts = message.topic.split("/")
    return parts[1], parts[3]


def bd_seq_of(payload: Payload) -> int:
    values = [m.value for m in payload.metrics if m.name == "bdSeq"]
    assert len(values) == 1
    assert isinstance(values[0], int)
    return values[0]


def test_births_describe_every_metric_with_aliases_templates_datasets_and_hierarchy() -> None:
    fleet = FleetGenerator(nodes=1, devices=2, metrics=11, seed=3)
    births = [e.message for e in fleet.start(T0) if e.message is not None]
    assert [kind(m) for m in births] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert births[0].topic == "spBv1.0/Plant1-Assembly/NBIRTH/Line1-PLC"
    assert births[1].topic == "spBv1.0/Plant1-Assembly/DBIRTH/Line1-PLC/Press1"
    assert births[2].topic.endswith("/Robot1")
    decoded = [decode_payload(m.payload) for m in births]
    assert [p.seq for p in decoded] == [0, 1, 2]
    nbirth = {m.name: m for m in decoded[0].metrics}
    assert nbirth["bdSeq"].datatype == DataType.Int64 and nbirth["bdSeq"].value == 0
    assert (
        nbirth["Node Control/Rebirth"].datatype == DataType.Boolean
        and nbirth["Node Control/Rebirth"].value is False
    )
    assert nbirth[f"{HIERARCHY}/Site"].value == "Detroit" and nbirth[f"{HIERARCHY}/Area"].value == "Assembly"
    assert nbirth[f"{HIERARCHY}/Line"].value == "Line1"
    definition = nbirth[MOTOR_DEFINITION].value
    assert isinstance(definition, Template) and definition.is_definition and definition.template_ref is None
    aliases = [m.alias for p in decoded for m in p.metrics if m.alias is not None]
    assert len(aliases) == len(set(aliases)), "aliases are unique across the node and its devices"
    press = {m.name: m for m in decoded[1].metrics}
    assert len(press) == 11
    motor = press[MOTOR_REF].value
    assert isinstance(motor, Template) and motor.template_ref == MOTOR_REF and not motor.is_definition
    assert {m.name for m in motor.metrics} == {"Speed", "Current", "Temperature", "Running"}
    assert isinstance(press["Recipe"].value, DataSet) and press["Recipe"].value.columns == (
        "Step",
        "Setpoint",
        "Duration",
    )
    assert (
        press["Vibration/Spectrum"].datatype == DataType.FloatArray
        and len(press["Vibration/Spectrum"].value) == 8
    )
    assert press["Offset"].datatype == DataType.Int8
    temperature = press["Temperature"]
    assert temperature.properties is not None
    assert (
        temperature.properties.get("engUnit") is not None
        and temperature.properties.get("engUnit").value == "degC"
    )  # type: ignore[union-attr]
    assert temperature.properties.get("Quality").value == 192  # type: ignore[union-attr]
    assert all(m.timestamp == T0 for m in press.values())


def test_data_carries_aliases_only_and_seq_runs_across_node_and_devices_with_wrap() -> None:
    fleet = FleetGenerator(nodes=1, devices=3, metrics=6, seed=5)
    messages = list(fleet.messages(T0, 150))
    seqs = [decode_payload(m.payload).seq for m in messages]
    assert seqs == [i % 256 for i in range(len(seqs))]
    assert len(seqs) > 256, "the run is long enough to wrap"
    for message in messages:
        if kind(message) in ("NDATA", "DDATA"):
            payload = decode_payload(message.payload)
            assert payload.metrics
            assert all(
                m.name is None and m.alias is not None and m.timestamp == message.t_ms
                for m in payload.metrics
            )
            assert message.qos == 0 and not message.retain


def test_negative_int8_values_travel() -> None:
    fleet = FleetGenerator(nodes=1, devices=1, metrics=11, seed=9, data_datatypes=True)
    values = [
        m.value
        for message in fleet.messages(T0, 60)
        if kind(message) == "DDATA"
        for m in decode_payload(message.payload).metrics
        if m.datatype == DataType.Int8
    ]
    assert any(v < 0 for v in values) and all(-128 <= v <= 127 for v in values)


def test_rebirth_command_answers_with_births_seq_zero_same_bd_seq() -> None:
    fleet = FleetGenerator(nodes=1, devices=2, metrics=3, seed=1)
    fleet.start(T0)
    fleet.step(T0 + 1000)
    node = fleet.edge_nodes[0]
    ncmd = Payload(T0 + 1500, (Metric("Node Control/Rebirth", None, T0 + 1500, DataType.Boolean, True),))
    wire = decode_payload(encode_payload(ncmd))
    replies = node.command("spBv1.0/Plant1-Assembly/NCMD/Line1-PLC", wire.metrics, T0 + 1500)
    assert [kind(m) for m in replies] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [decode_payload(m.payload).seq for m in replies] == [0, 1, 2]
    assert bd_seq_of(decode_payload(replies[0].payload)) == 0
    # a command for another node, or a false rebirth, is not answered
    assert node.command("spBv1.0/Plant1-Assembly/NCMD/Other", wire.metrics, T0) == []
    no = Payload(T0, (Metric("Node Control/Rebirth", None, T0, DataType.Boolean, False),))
    assert (
        node.command("spBv1.0/Plant1-Assembly/NCMD/Line1-PLC", decode_payload(encode_payload(no)).metrics, T0)
        == []
    )


def test_dcmd_write_is_reported_in_the_next_data() -> None:
    fleet = FleetGenerator(nodes=1, devices=1, metrics=8, seed=2)
    births = fleet.start(T0)
    batch = next(m for m in decode_payload(births[1].message.payload).metrics if m.name == "Batch")  # type: ignore[union-attr]
    node = fleet.edge_nodes[0]
    dcmd = Payload(T0, (Metric(None, batch.alias, T0, DataType.String, "OPERATOR-SET"),))
    node.command(
        "spBv1.0/Plant1-Assembly/DCMD/Line1-PLC/Press1", decode_payload(encode_payload(dcmd)).metrics, T0
    )
    data = [decode_payload(m.payload) for m in node.data(T0 + 1000)]
    written = [m.value for p in data for m in p.metrics if m.alias == batch.alias]
    assert written == ["OPERATOR-SET"]


def test_will_matches_birth_and_deaths_advance_bd_seq() -> None:
    fleet = FleetGenerator(nodes=2, devices=1, metrics=2, seed=11, faults={"death": 0.2, "reconnect": 0.1})
    messages = list(fleet.messages(T0, 200))
    current: dict[tuple[str, str], int] = {}
    deaths = 0
    for message in messages:
        payload = decode_payload(message.payload)
        if kind(message) == "NBIRTH":
            bd = bd_seq_of(payload)
            key = node_key(message)
            if key in current:
                assert bd == (current[key] + 1) % 256, "a new connection takes the next bdSeq"
            current[key] = bd
        elif kind(message) == "NDEATH":
            deaths += 1
            assert payload.seq is None, "NDEATH carries no seq"
            assert bd_seq_of(payload) == current[node_key(message)], "the death names the session it ends"
            assert message.qos == 1 and not message.retain
    assert deaths == fleet.injected["death"] + fleet.injected["reconnect"] > 0


def test_fault_injection_gaps_reorders_duplicates() -> None:
    fleet = FleetGenerator(
        nodes=1, devices=3, metrics=4, seed=4, faults=parse_faults(["gap=0.2", "reorder=0.2,duplicate=0.2"])
    )
    messages = list(fleet.messages(T0, 100))
    seqs = [decode_payload(m.payload).seq for m in messages]
    steps = defaultdict(int)
    for a, b in itertools.pairwise(seqs):
        assert a is not None and b is not None
        steps[(b - a) % 256] += 1
    assert steps[2] > 0  # a gap (or the far side of a swap)
    assert steps[0] >= fleet.injected["duplicate"] > 0  # duplicates repeat the seq
    assert steps[255] >= 1 and fleet.injected["reorder"] > 0  # a swap goes one back
    assert fleet.injected["gap"] > 0


def test_generator_is_deterministic() -> None:
    def run(seed: int) -> list[SimMessage]:
        return list(
            FleetGenerator(nodes=2, devices=2, metrics=11, seed=seed, faults={"gap": 0.1}).messages(T0, 30)
        )

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_names_follow_the_demo_plant() -> None:
    assert device_ids(7) == ("Press1", "Robot1", "Conveyor1", "Oven1", "Filler1", "Welder1", "Press2")
    assert (
        node_identity(0, "Plant1").group == "Plant1-Assembly"
        and node_identity(0, "Plant1").node == "Line1-PLC"
    )
    assert (
        node_identity(5, "Plant2").group == "Plant2-Paint" and node_identity(5, "Plant2").node == "Line2-PLC"
    )
    with pytest.raises(FaultError):
        parse_faults(["meteor"])
    with pytest.raises(FaultError):
        parse_faults(["gap=2"])


def test_pysparkplug_reads_the_simulated_wire() -> None:
    """An independent Sparkplug implementation agrees on seq, bdSeq, names, aliases and values."""
    fleet = FleetGenerator(nodes=1, devices=1, metrics=1, seed=1, data_datatypes=True, faults={"death": 0.1})
    births: dict[str, object] = {}
    checked = 0
    for message in fleet.messages(T0, 60):
        ours = decode_payload(message.payload)
        k = kind(message)
        if k == "NBIRTH":
            theirs = pysparkplug.NBirth.decode(message.payload)
            births["node"] = theirs
            names = {m.name: m.value for m in theirs.metrics}
            assert names["bdSeq"] == bd_seq_of(ours)
            assert theirs.seq == ours.seq == 0
        elif k == "DBIRTH":
            theirs = pysparkplug.DBirth.decode(message.payload)
            births["device"] = theirs
            assert theirs.seq == ours.seq
            assert [(m.name, m.alias, m.value) for m in theirs.metrics] == [
                (m.name, m.alias, m.value) for m in ours.metrics
            ]
        elif k == "DDATA":
            theirs = pysparkplug.DData.decode(message.payload)
            assert theirs.seq == ours.seq
            assert [(m.alias, m.value, m.timestamp) for m in theirs.metrics] == [
                (m.alias, m.value, m.timestamp) for m in ours.metrics
            ]
        elif k == "NDEATH":
            theirs = pysparkplug.NDeath.decode(message.payload)
            assert theirs.bd_seq_metric.value == bd_seq_of(ours)
        checked += 1
    assert checked > 60 and "device" in births
