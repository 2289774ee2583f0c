"""A tiny protobuf wire-format writer and hypothesis strategies for Sparkplug-shaped (and broken) payloads.

Written from the field table in SPARKPLUG_NOTES.md, independent of the codec under test, so the fuzzers
can build payloads that are valid, nearly valid (wrong wire types, wrong datatypes, truncated, absurd
lengths) or garbage.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def f_varint(field: int, value: int) -> bytes:
    return key(field, VARINT) + varint(value)


def f_bytes(field: int, value: bytes) -> bytes:
    return key(field, LEN) + varint(len(value)) + value


def f_double(field: int, value: float) -> bytes:
    return key(field, I64) + struct.pack("<d", value)


def f_float(field: int, value: float) -> bytes:
    return key(field, I32) + struct.pack("<f", value)


# ------------------------------------------------------------------------------------------ strategies
names = st.one_of(
    st.sampled_from(["bdSeq", "Node Control/Rebirth", "Motor/Speed", "temp", "a/b/c", ""]),
    st.text(max_size=20),
)
datatypes = st.one_of(st.integers(min_value=0, max_value=34), st.integers(min_value=0, max_value=2**32 - 1))
u64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def metric_value(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(min_value=0, max_value=9))
    if choice == 0:
        return f_varint(10, draw(st.integers(min_value=0, max_value=2**32 - 1)))
    if choice == 1:
        return f_varint(11, draw(u64))
    if choice == 2:
        return f_float(12, draw(st.floats(width=32)))
    if choice == 3:
        return f_double(13, draw(st.floats()))
    if choice == 4:
        return f_varint(14, draw(st.integers(min_value=0, max_value=3)))
    if choice == 5:
        return f_bytes(15, draw(st.text(max_size=30)).encode("utf-8", "surrogatepass"))
    if choice == 6:
        return f_bytes(16, draw(st.binary(max_size=40)))
    if choice == 7:
        return f_bytes(17, draw(dataset()))
    if choice == 8:
        return f_bytes(18, draw(template(depth=1)))
    return b""


@st.composite
def property_set(draw: st.DrawFn) -> bytes:
    out = b""
    for name in draw(st.lists(st.sampled_from(["Quality", "engUnit", "engLow", "x"]), max_size=3)):
        out += f_bytes(1, name.encode())
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        value = f_varint(1, draw(datatypes)) + draw(
            st.sampled_from([f_varint(3, 192), f_varint(3, 500), f_bytes(8, b"m/s"), f_varint(2, 1), b""])
        )
        out += f_bytes(2, value)
    return out


@st.composite
def dataset(draw: st.DrawFn) -> bytes:
    columns = draw(st.integers(min_value=0, max_value=3))
    out = f_varint(1, draw(st.sampled_from([columns, columns + 1, 2**40])))
    for i in range(columns):
        out += f_bytes(2, f"c{i}".encode())
    for _ in range(draw(st.integers(min_value=0, max_value=columns + 1))):
        out += f_varint(3, draw(datatypes))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        row = b"".join(
            f_bytes(1, draw(st.sampled_from([f_varint(1, 5), f_double(4, 1.5), f_bytes(6, b"s"), b""])))
            for _ in range(draw(st.integers(min_value=0, max_value=columns + 1)))
        )
        out += f_bytes(4, row)
    return out


@st.composite
def template(draw: st.DrawFn, depth: int = 0) -> bytes:
    out = b""
    if draw(st.booleans()):
        out += f_bytes(4, draw(names).encode("utf-8", "surrogatepass"))
    if draw(st.booleans()):
        out += f_varint(5, 1)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        out += f_bytes(3, f_bytes(1, b"p") + f_varint(2, draw(datatypes)) + f_varint(3, 7))
    if depth < 2:
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            out += f_bytes(2, draw(metric(depth + 1)))
    return out


@st.composite
def metric(draw: st.DrawFn, depth: int = 0) -> bytes:
    out = b""
    if draw(st.booleans()):
        out += f_bytes(1, draw(names).encode("utf-8", "surrogatepass"))
    if draw(st.booleans()):
        out += f_varint(2, draw(st.one_of(st.integers(min_value=0, max_value=10), u64)))
    if draw(st.booleans()):
        out += f_varint(3, draw(u64))
    if draw(st.booleans()):
        out += f_varint(4, draw(datatypes))
    for field in (5, 6, 7):
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            out += f_varint(field, 1)
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        out += f_bytes(9, draw(property_set()))
    if depth < 2:
        out += draw(metric_value())
    return out


@st.composite
def payload(draw: st.DrawFn) -> bytes:
    """A Sparkplug payload that is often valid and often subtly not."""
    parts = []
    if draw(st.booleans()):
        parts.append(f_varint(1, draw(u64)))
    if draw(st.booleans()):
        parts.append(f_varint(3, draw(st.one_of(st.integers(min_value=0, max_value=255), u64))))
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        parts.append(f_bytes(2, draw(metric())))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        parts.append(f_bytes(4, b"uuid"))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        parts.append(f_bytes(5, draw(st.binary(max_size=20))))
    if draw(st.integers(min_value=0, max_value=6)) == 0:  # an unknown field, sometimes with a bad wire type
        parts.append(
            key(
                draw(st.integers(min_value=6, max_value=100)), draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
            )
        )
    return b"".join(draw(st.permutations(parts)))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` bytes with a few flips, cuts, insertions or length-field bombs."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(st.integers(min_value=0, max_value=4))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == 0 and data:
            data[pos % len(data)] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == 1:
            del data[pos:]
        elif kind == 2:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 3:
            data[pos:pos] = varint(draw(st.sampled_from([2**31, 2**32 + 5, 2**63, 2**64 - 1])))
        elif kind == 4 and data:
            del data[pos : pos + draw(st.integers(min_value=1, max_value=5))]
    return bytes(data)


payload_bytes = st.one_of(payload(), mutated(payload()), st.binary(max_size=200))

group_or_node = st.one_of(st.sampled_from(["G", "g1", "Plant A", "E1"]), st.text(max_size=10))
message_types = st.one_of(
    st.sampled_from(["NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA", "NCMD", "DCMD", "STATE"]),
    st.text(max_size=8),
)


@st.composite
def topic(draw: st.DrawFn) -> str:
    """Sparkplug topics: valid, with wrong parts, wrong arity, wildcards, empty levels or odd Unicode."""
    parts = ["spBv1.0", draw(group_or_node), draw(message_types), draw(group_or_node)]
    if draw(st.booleans()):
        parts.append(draw(group_or_node))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        parts = parts[: draw(st.integers(min_value=1, max_value=len(parts)))]
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        parts.append(draw(st.sampled_from(["", "+", "#", "extra"])))
    return "/".join(parts)


# ----------------------------------------------------------------------- plausible sessions, then damaged
_VALUE_FIELD = {
    1: 10,
    2: 10,
    3: 10,
    5: 10,
    6: 10,
    7: 10,
    4: 11,
    8: 11,
    13: 11,
    9: 12,
    10: 13,
    11: 14,
    12: 15,
    14: 15,
}


def _value_for(draw: st.DrawFn, datatype: int) -> bytes:
    field = _VALUE_FIELD[datatype]
    if field == 10:
        return f_varint(10, draw(st.integers(min_value=0, max_value=2**32 - 1)))
    if field == 11:
        return f_varint(11, draw(u64))
    if field == 12:
        return f_float(12, draw(st.floats(width=32)))
    if field == 13:
        return f_double(13, draw(st.floats()))
    if field == 14:
        return f_varint(14, draw(st.integers(min_value=0, max_value=1)))
    return f_bytes(15, draw(st.text(max_size=12)).encode("utf-8", "surrogatepass"))


@st.composite
def session(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """NBIRTH, DBIRTH, a run of NDATA/DDATA with aliases and seq, maybe a death; some messages damaged."""
    group = draw(st.sampled_from(["G", "Plant A", "Ünï", "G", "g+1"]))
    node = draw(st.sampled_from(["E1", "E 2", "E1"]))
    device = draw(st.sampled_from(["D1", "D-2"]))
    bd_seq = draw(st.integers(min_value=0, max_value=255))
    count = draw(st.integers(min_value=1, max_value=4))
    types = [draw(st.sampled_from(sorted(_VALUE_FIELD))) for _ in range(count)]
    ts = 1_700_000_000_000

    def birth_metrics(offset: int) -> bytes:
        out = b""
        for i, dt in enumerate(types):
            body = f_bytes(1, f"m{i}".encode()) + f_varint(2, offset + i) + f_varint(3, ts) + f_varint(4, dt)
            out += f_bytes(2, body + _value_for(draw, dt))
        return out

    seq = 0
    nbirth = (
        f_varint(1, ts)
        + f_varint(3, seq)
        + f_bytes(2, f_bytes(1, b"bdSeq") + f_varint(4, 4) + f_varint(11, bd_seq))
        + f_bytes(2, f_bytes(1, b"Node Control/Rebirth") + f_varint(4, 11) + f_varint(14, 0))
        + birth_metrics(0)
    )
    base = f"spBv1.0/{group}"
    messages = [(f"{base}/NBIRTH/{node}", nbirth)]
    seq += 1
    messages.append(
        (f"{base}/DBIRTH/{node}/{device}", f_varint(1, ts) + f_varint(3, seq) + birth_metrics(100))
    )
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        seq = (seq + draw(st.sampled_from([1, 1, 1, 2, 0, 255]))) % 256
        on_device = draw(st.booleans())
        i = draw(st.integers(min_value=0, max_value=count - 1))
        alias = (100 if on_device else 0) + i + draw(st.sampled_from([0, 0, 0, 50]))
        body = f_varint(2, alias) + f_varint(3, ts + seq) + _value_for(draw, types[i])
        data = f_varint(1, ts + seq) + f_varint(3, seq) + f_bytes(2, body)
        topic_ = f"{base}/DDATA/{node}/{device}" if on_device else f"{base}/NDATA/{node}"
        messages.append((topic_, data))
    if draw(st.booleans()):
        death_seq = draw(st.sampled_from([bd_seq, (bd_seq + 1) % 256]))
        messages.append(
            (
                f"{base}/NDEATH/{node}",
                f_bytes(2, f_bytes(1, b"bdSeq") + f_varint(4, 4) + f_varint(11, death_seq)),
            )
        )
    damaged = []
    for t, p in messages:
        if draw(st.integers(min_value=0, max_value=6)) == 0:
            p = draw(mutated(st.just(p)))
        damaged.append((t, p))
    return damaged
