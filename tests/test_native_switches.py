"""Each native piece of the hot path can be missing (an install without a C compiler) or turned off by
its environment switch; the Python code it follows then does the work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: (module that picks the implementation, its module-level name, the native module, switch, off value)
PIECES = [
    (
        "uns_bridge.sparkplug.decode",
        "_native_decode",
        "uns_bridge.sparkplug._native",
        "UNS_BRIDGE_DECODER",
        "python",
    ),
    ("uns_bridge.store.pgcopy", "_encode", "uns_bridge.store._pgcopy", "UNS_BRIDGE_PGCOPY", "asyncpg"),
    ("uns_bridge.store.writer", "_native_rows", "uns_bridge.store._rows", "UNS_BRIDGE_ROWS", "python"),
    ("uns_bridge.host.host", "_native_plain", "uns_bridge.host._plain", "UNS_BRIDGE_HOST_LOOP", "python"),
    ("uns_bridge.uns.sink", "_native_coalesce", "uns_bridge.uns._coalesce", "UNS_BRIDGE_SINK_LOOP", "python"),
]


@pytest.mark.parametrize("how", ["no module", "switch"])
@pytest.mark.parametrize(("module", "name", "native", "switch", "off"), PIECES, ids=[p[3] for p in PIECES])
def test_python_does_the_work_without_the_native_piece(
    how: str, module: str, name: str, native: str, switch: str, off: str
) -> None:
    hide = f"import sys; sys.modules[{native!r}] = None\n" if how == "no module" else ""
    script = f"{hide}import importlib\nprint(getattr(importlib.import_module({module!r}), {name!r}))\n"
    env = {**os.environ, switch: off if how == "switch" else ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "None"


def test_the_native_pieces_are_used_when_built() -> None:
    """Where the extensions are built (as in CI), nothing turns them off by default."""
    script = "import importlib\n" + "".join(
        f"print(getattr(importlib.import_module({m!r}), {n!r}) is not None)\n" for m, n, *_ in PIECES
    )
    env = {k: v for k, v in os.environ.items() if k not in {p[3] for p in PIECES}}
    built = subprocess.run(
        [sys.executable, "-c", "\n".join(f"import {p[2]}" for p in PIECES)], env=env, capture_output=True
    )
    if built.returncode != 0:
        pytest.skip("the C extensions are not built in this install")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.split() == ["True"] * len(PIECES)
