"""Simulated Sparkplug B edge nodes: a pure deterministic generator and a live fleet on a broker.

- :class:`~uns_bridge.simulator.fleet.FleetGenerator`: births, data rounds and faults as bytes, no I/O
  (benchmarks, tests, captures).
- :func:`~uns_bridge.simulator.live.run_fleet`: the same nodes connected to a broker, one connection
  each, with Wills, rebirth answers and optional STATE awareness (``uns-bridge simulate``,
  ``uns-bridge run --demo``).
"""

from __future__ import annotations

from typing import Any

from uns_bridge.simulator.fleet import FAULTS, FaultError, FleetGenerator, parse_faults
from uns_bridge.simulator.model import EdgeNode, SimMessage


async def run_fleet(*args: Any, **kwargs: Any) -> Any:
    """See :func:`uns_bridge.simulator.live.run_fleet` (imported lazily: it needs aiomqtt)."""
    from uns_bridge.simulator.live import run_fleet as run

    return await run(*args, **kwargs)


__all__ = ["FAULTS", "EdgeNode", "FaultError", "FleetGenerator", "SimMessage", "parse_faults", "run_fleet"]
