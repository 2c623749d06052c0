"""JSON Schema decoding, schema by schema. References resolve in the document they are written
in: a `#/...` inside a referenced schema points into that schema, not into the one that
references it, and a reference may name a fragment of another schema
(`defs.json#/definitions/Zip`). Date-times keep microseconds of finer ones."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest

from connectors.decoding.registry.avro_schema import UnsupportedSchema
from connectors.decoding.registry.json_schema import JsonSchemaDecoder
from connectors.decoding.registry.schemas import RegisteredSchema

ADDRESS = {
    "type": "object",
    "properties": {"zip": {"$ref": "#/definitions/zip"}},
    "definitions": {"zip": {"type": "object", "properties": {"code": {"type": "string"}}}},
}
DEFS = {"definitions": {"Zip": {"type": "object", "properties": {"code": {"type": "string"}}}}}


def registered(schema: dict[str, Any], **references: dict[str, Any]) -> RegisteredSchema:
    refs = {
        name: RegisteredSchema(f"ref {name}", None, "JSON", json.dumps(doc))
        for name, doc in references.items()
    }
    return RegisteredSchema("id 1", 1, "JSON", json.dumps(schema), refs)


def decoded(decoder: JsonSchemaDecoder, value: dict[str, Any]) -> list[Any]:
    return list(decoder.decode(pa.array([json.dumps(value).encode()], pa.binary())).to_pylist())


@pytest.mark.parametrize(
    "root_definitions",
    [{}, {"definitions": {"zip": {"type": "object", "properties": {"other": {"type": "string"}}}}}],
)
def test_a_pointer_inside_a_referenced_schema_points_into_that_schema(root_definitions):
    """With a clashing name in the root, the value used to land as `{'other': None}`."""
    root = {
        "type": "object",
        "properties": {"z": {"$ref": "address.json"}},
        **root_definitions,
    }
    decoder = JsonSchemaDecoder(registered(root, **{"address.json": ADDRESS}))

    assert decoded(decoder, {"z": {"zip": {"code": "12345"}}}) == [
        {"z": {"zip": {"code": "12345"}}}
    ]


def test_a_reference_to_a_fragment_of_another_schema():
    root = {"type": "object", "properties": {"zip": {"$ref": "defs.json#/definitions/Zip"}}}
    decoder = JsonSchemaDecoder(registered(root, **{"defs.json": DEFS}))

    assert decoded(decoder, {"zip": {"code": "9"}}) == [{"zip": {"code": "9"}}]


@pytest.mark.parametrize("ref", ["#/definitions/nowhere", "defs.json#/definitions/Nope", "x.json"])
def test_a_reference_to_nothing_is_an_unsupported_schema(ref):
    root = {"type": "object", "properties": {"zip": {"$ref": ref}}}
    with pytest.raises(UnsupportedSchema, match="not resolvable"):
        JsonSchemaDecoder(registered(root, **{"defs.json": DEFS}))


def test_all_of_objects_is_one_struct_of_their_fields():
    root = {
        "allOf": [{"$ref": "defs.json#/definitions/Zip"}, {"$ref": "#/definitions/named"}],
        "properties": {"n": {"type": "integer"}},
        "definitions": {"named": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    decoder = JsonSchemaDecoder(registered(root, **{"defs.json": DEFS}))

    assert decoded(decoder, {"code": "9", "name": "a", "n": 1}) == [
        {"code": "9", "name": "a", "n": 1}
    ]


def test_all_of_parts_that_disagree_on_a_field_is_an_unsupported_schema():
    root = {
        "allOf": [
            {"type": "object", "properties": {"n": {"type": "integer"}}},
            {"type": "object", "properties": {"n": {"type": "string"}}},
        ]
    }
    with pytest.raises(UnsupportedSchema, match="n is int64 in one part of its allOf and string"):
        JsonSchemaDecoder(registered(root))


@pytest.mark.parametrize(
    ("values", "kind"),
    [([1, 2, 3], pa.int64()), (["a", None], pa.string()), ([1, 2.5], pa.float64())],
)
def test_an_enum_without_a_type_takes_its_values_type(values, kind):
    root = {"type": "object", "properties": {"e": {"enum": values}}}
    decoder = JsonSchemaDecoder(registered(root))

    assert decoder.arrow_type.field("e").type == kind
    assert decoded(decoder, {"e": values[0]}) == [{"e": values[0]}]


def test_an_enum_of_several_types_is_an_unsupported_schema():
    root = {"type": "object", "properties": {"e": {"enum": [1, "a"]}}}
    with pytest.raises(UnsupportedSchema, match="enum of"):
        JsonSchemaDecoder(registered(root))


STAMPED = {
    "type": "object",
    "properties": {
        "at": {"type": "string", "format": "date-time"},
        "seen": {"type": "array", "items": {"type": "string", "format": "date-time"}},
    },
}


def test_date_times_with_more_fraction_digits_than_microseconds_are_truncated():
    """.NET writes 7 digits, Java's Instant up to 9: Delta keeps microseconds."""
    decoder = JsonSchemaDecoder(registered(STAMPED))
    value = {
        "at": "2026-01-02T03:04:05.1234567Z",
        "seen": ["2026-01-02T03:04:05.123456789+02:00", None, "2026-01-02T03:04:05Z"],
    }

    [row] = decoded(decoder, value)

    utc = dt.UTC
    assert row["at"] == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=utc)
    assert row["seen"] == [
        dt.datetime(2026, 1, 2, 1, 4, 5, 123456, tzinfo=utc),
        None,
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc),
    ]


def test_a_date_time_that_is_none_still_does_not_fit():
    decoder = JsonSchemaDecoder(registered(STAMPED))
    with pytest.raises(ValueError, match="does not fit"):
        decoded(decoder, {"at": "yesterday, 7 digits .1234567"})
