"""The committed generated module matches schemas/sparkplug_b.proto, which has the specification's fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uns_bridge.sparkplug import protogen
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb

PB: Any = pb.Payload

# message -> {field number: (name, protobuf type name, repeated)}; from the Sparkplug 3.0 field list
EXPECTED: dict[str, dict[int, tuple[str, str, bool]]] = {
    "Payload": {1: ("timestamp", "uint64", False), 2: ("metrics", "Metric", True), 3: ("seq", "uint64", False),
                4: ("uuid", "string", False), 5: ("body", "bytes", False)},
    "Metric": {1: ("name", "string", False), 2: ("alias", "uint64", False), 3: ("timestamp", "uint64", False),
               4: ("datatype", "uint32", False), 5: ("is_historical", "bool", False),
               6: ("is_transient", "bool", False), 7: ("is_null", "bool", False),
               8: ("metadata", "MetaData", False), 9: ("properties", "PropertySet", False),
               10: ("int_value", "uint32", False), 11: ("long_value", "uint64", False),
               12: ("float_value", "float", False), 13: ("double_value", "double", False),
               14: ("boolean_value", "bool", False), 15: ("string_value", "string", False),
               16: ("bytes_value", "bytes", False), 17: ("dataset_value", "DataSet", False),
               18: ("template_value", "Template", False),
               19: ("extension_value", "MetricValueExtension", False)},
    "MetaData": {1: ("is_multi_part", "bool", False), 2: ("content_type", "string", False),
                 3: ("size", "uint64", False), 4: ("seq", "uint64", False), 5: ("file_name", "string", False),
                 6: ("file_type", "string", False), 7: ("md5", "string", False),
                 8: ("description", "string", False)},
    "PropertyValue": {1: ("type", "uint32", False), 2: ("is_null", "bool", False),
                      3: ("int_value", "uint32", False), 4: ("long_value", "uint64", False),
                      5: ("float_value", "float", False), 6: ("double_value", "double", False),
                      7: ("boolean_value", "bool", False), 8: ("string_value", "string", False),
                      9: ("propertyset_value", "PropertySet", False),
                      10: ("propertysets_value", "PropertySetList", False),
                      11: ("extension_value", "PropertyValueExtension", False)},
    "PropertySet": {1: ("keys", "string", True), 2: ("values", "PropertyValue", True)},
    "PropertySetList": {1: ("propertyset", "PropertySet", True)},
    "DataSet": {1: ("num_of_columns", "uint64", False), 2: ("columns", "string", True),
                3: ("types", "uint32", True), 4: ("rows", "Row", True)},
    "Row": {1: ("elements", "DataSetValue", True)},
    "DataSetValue": {1: ("int_value", "uint32", False), 2: ("long_value", "uint64", False),
                     3: ("float_value", "float", False), 4: ("double_value", "double", False),
                     5: ("boolean_value", "bool", False), 6: ("string_value", "string", False),
                     7: ("extension_value", "DataSetValueExtension", False)},
    "Template": {1: ("version", "string", False), 2: ("metrics", "Metric", True),
                 3: ("parameters", "Parameter", True), 4: ("template_ref", "string", False),
                 5: ("is_definition", "bool", False)},
    "Parameter": {1: ("name", "string", False), 2: ("type", "uint32", False), 3: ("int_value", "uint32", False),
                  4: ("long_value", "uint64", False), 5: ("float_value", "float", False),
                  6: ("double_value", "double", False), 7: ("boolean_value", "bool", False),
                  8: ("string_value", "string", False),
                  9: ("extension_value", "ParameterValueExtension", False)},
}  # fmt: skip
_TYPE_NAMES = {1: "double", 2: "float", 4: "uint64", 8: "bool", 9: "string", 12: "bytes", 13: "uint32"}


def _messages(descriptor: Any) -> dict[str, Any]:
    found = {descriptor.name: descriptor}
    for nested in descriptor.nested_types:
        found.update(_messages(nested))
    return found


def test_generated_module_is_up_to_date() -> None:
    assert protogen.TARGET.read_text() == protogen.generate(), "run `make proto` and commit the result"
    assert protogen.main(["--check"]) == 0


def test_a_changed_proto_is_reported_stale_and_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = tmp_path / "sparkplug_b.proto"
    proto.write_text(
        protogen.PROTO.read_text().replace("optional string md5 = 7;", "optional bytes md5 = 7;")
    )
    target = tmp_path / "sparkplug_b_pb2.py"
    target.write_text(protogen.TARGET.read_text())
    monkeypatch.setattr(protogen, "PROTO", proto)
    monkeypatch.setattr(protogen, "TARGET", target)
    assert protogen.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert protogen.main([]) == 0
    assert protogen.main(["--check"]) == 0
    assert "POOL.AddSerializedFile(" in target.read_text()


def test_schema_has_the_specification_fields() -> None:
    messages = _messages(PB.DESCRIPTOR)
    assert set(EXPECTED) <= set(messages)
    for message, fields in EXPECTED.items():
        descriptor = messages[message]
        actual = {
            f.number: (
                f.name,
                f.message_type.name if f.message_type is not None else _TYPE_NAMES[f.type],
                f.is_repeated,
            )
            for f in descriptor.fields
        }
        assert actual == fields, message
    assert messages["Metric"].oneofs_by_name["value"].fields[0].name == "int_value"
    assert PB.DESCRIPTOR.file.package == "org.eclipse.tahu.protobuf"
    assert all(f.has_presence for f in messages["Metric"].fields)  # proto2: every optional field has presence
