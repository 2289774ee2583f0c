"""The optional C extensions of the hot path, each with the environment switch that turns it off.

Each extension follows Python code that stays its definition (and does all the work when the extension
was not built, for want of a C compiler at install time, or is switched off):

* ``uns_bridge.sparkplug._native``: the common DATA payload decoder; ``UNS_BRIDGE_DECODER=python``
* ``uns_bridge.store._pgcopy``: the binary COPY encoder; ``UNS_BRIDGE_PGCOPY=asyncpg``
* ``uns_bridge.store._rows``: the writer's sample rows; ``UNS_BRIDGE_ROWS=python``
* ``uns_bridge.host._plain``: the host's plain DATA metrics; ``UNS_BRIDGE_HOST_LOOP=python``
* ``uns_bridge.uns._coalesce``: the UNS sink's coalescing; ``UNS_BRIDGE_SINK_LOOP=python``
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def extension(module: str, switch: str, off: str) -> ModuleType | None:
    """The built extension ``module``, or None when it is not built or ``switch`` is set to ``off``."""
    if os.environ.get(switch, "").lower() == off:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
