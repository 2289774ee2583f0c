"""The committed protobuf module is what `make proto` generates from schemas/sparkplug_b.proto."""

from __future__ import annotations

from uns_bridge.sparkplug import protogen


def test_generated_module_is_up_to_date() -> None:
    assert protogen.TARGET.read_text() == protogen.generate(), "run `make proto` and commit the result"


def test_generated_module_uses_a_private_pool() -> None:
    from google.protobuf import descriptor_pool

    from uns_bridge.sparkplug import sparkplug_b_pb2

    assert sparkplug_b_pb2.POOL is not descriptor_pool.Default()
    assert sparkplug_b_pb2.DESCRIPTOR.pool is sparkplug_b_pb2.POOL
