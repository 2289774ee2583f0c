"""Regenerate ``sparkplug_b_pb2.py`` from ``schemas/sparkplug_b.proto`` (``make proto``).

The generated module is committed. It registers the schema in a *private* descriptor pool, so another
Sparkplug library in the same process (pysparkplug, Tahu), which registers the same
``org.eclipse.tahu.protobuf`` names in the default pool, cannot collide with ours.
``python -m uns_bridge.sparkplug.protogen --check`` exits 1 when the committed module is stale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "schemas" / "sparkplug_b.proto"
TARGET = Path(__file__).with_name("sparkplug_b_pb2.py")

_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "POOL.AddSerializedFile("


def generate() -> str:
    """The text of the generated module for the current .proto."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO.parent}",
                f"--python_out={out}",
                PROTO.name,
            ],
            check=True,
        )
        text = (Path(out) / "sparkplug_b_pb2.py").read_text()
    if _DEFAULT_POOL not in text:
        raise RuntimeError("protoc output changed shape: the descriptor pool line was not found")
    text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL)
    text = text.replace(
        "_sym_db = _symbol_database.Default()",
        "_sym_db = _symbol_database.Default()\n\n#: private pool: see uns_bridge/sparkplug/protogen.py\n"
        "POOL = _descriptor_pool.DescriptorPool()",
    )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed module is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date with {PROTO}: run `make proto`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
