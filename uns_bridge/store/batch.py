"""The unit of delivery to PostgreSQL: a :class:`Batch` of rows of primitives, and its byte codec.

Everything a batch needs is inside it (catalog ids are 64-bit hashes of natural keys, :func:`stable_id`),
so a batch built while the database is away can be spooled (:class:`BatchCodec`) and delivered later.
Times are integer microseconds since 2000-01-01 UTC (PostgreSQL's own epoch; the writer's connections
send them as such, see ``uns_bridge.store.writer``).
"""

from __future__ import annotations

import json
import marshal
from dataclasses import dataclass, field, fields
from hashlib import blake2b
from typing import Any

#: ms since the Unix epoch -> µs since 2000-01-01 UTC: ``(ms - PG_EPOCH_MS) * 1000``
PG_EPOCH_MS = 946_684_800_000

#: column order of ``uns.sample`` rows
SAMPLE_COLUMNS = (
    "time", "metric_id", "vhash", "kind", "quality", "is_historical",
    "v_int", "v_float", "v_bool", "v_text", "v_bytes", "v_json", "v_floats",
)  # fmt: skip
#: their types, as :mod:`uns_bridge.store.pgcopy` column kinds
SAMPLE_KINDS = b"Tqqhh?qd?tyjD"
#: column order of ``uns.metric_current`` rows
CURRENT_COLUMNS = (
    "metric_id", "time", "kind", "quality", "is_historical",
    "v_int", "v_float", "v_bool", "v_text", "v_bytes", "v_json", "v_floats",
)  # fmt: skip
CURRENT_KINDS = b"qThh?qd?tyjD"

_CODEC_VERSION = 1


def ms_to_pg_us(ms: int) -> int:
    return (ms - PG_EPOCH_MS) * 1000


def pg_us_to_ms(us: int) -> int:
    return us // 1000 + PG_EPOCH_MS


def stable_id(*parts: object) -> int:
    """A signed 64-bit id from a natural key (``("metric", group, node, device, name)`` ...)."""
    text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return int.from_bytes(blake2b(text.encode("ascii"), digest_size=8).digest(), "little", signed=True)


@dataclass
class Batch:
    """Rows to write in one transaction. Row layouts (all primitives):

    * ``samples``: :data:`SAMPLE_COLUMNS`; ``current``: :data:`CURRENT_COLUMNS` (newest per metric)
    * ``assets``: ``(id, parent_id, level, name, path list)``
    * ``nodes``: ``(id, group_id, edge_node_id, asset_id)``; ``devices``: ``(id, node_id, device_id, asset_id)``
    * ``metrics``: ``(id, node_id, device_id, name, datatype, datatype_name, alias, unit, description,
      properties json text, asset_id, uns_topic, birth time)``
    * ``node_states``: ``(node id, online, bd_seq, time)``; ``device_states``: ``(device id, online, time)``
    * ``lifecycle``: ``(time, event, group_id, edge_node_id, device_id, reason, bd_seq, detail json text)``
    * ``stale``: ``(metric_id, time)``; ``dead_letters``: ``(time, topic, payload bytes, reason, kind)``
    """

    samples: list[tuple[Any, ...]] = field(default_factory=list)
    current: list[tuple[Any, ...]] = field(default_factory=list)
    assets: list[tuple[Any, ...]] = field(default_factory=list)
    nodes: list[tuple[Any, ...]] = field(default_factory=list)
    devices: list[tuple[Any, ...]] = field(default_factory=list)
    metrics: list[tuple[Any, ...]] = field(default_factory=list)
    node_states: list[tuple[Any, ...]] = field(default_factory=list)
    device_states: list[tuple[Any, ...]] = field(default_factory=list)
    lifecycle: list[tuple[Any, ...]] = field(default_factory=list)
    stale: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        """Rows of every kind (what the queue bound counts)."""
        return (
            len(self.samples) + len(self.current) + len(self.assets) + len(self.nodes) + len(self.devices)
            + len(self.metrics) + len(self.node_states) + len(self.device_states) + len(self.lifecycle)
            + len(self.stale) + len(self.dead_letters)
        )  # fmt: skip

    def is_empty(self) -> bool:
        return len(self) == 0


_FIELDS = tuple(f.name for f in fields(Batch))


class BatchCodec:
    """Batch <-> bytes for the spool (``marshal`` of tuples of primitives, versioned)."""

    def encode(self, batch: Batch) -> bytes:
        data = (_CODEC_VERSION, tuple(tuple(getattr(batch, name)) for name in _FIELDS))
        return marshal.dumps(data)

    def decode(self, data: bytes) -> Batch:
        try:
            version, parts = marshal.loads(data)
        except (EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"not a store batch: {exc}") from exc
        if version != _CODEC_VERSION or len(parts) != len(_FIELDS):
            raise ValueError(f"unknown store batch format {version!r}")
        return Batch(**{name: list(rows) for name, rows in zip(_FIELDS, parts, strict=True)})
