"""The two Avro decoders give the same columns: the direct one (pyruhvro) for the schemas whose
types it maps, the container one (polars-avro) for every schema. Payloads are written by fastavro,
the library confluent-kafka's AvroSerializer writes with."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import random
import re
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from connectors.decoding.registry.avro import AvroBatchDecoder, decode
from connectors.decoding.registry.avro_direct import decode_direct, direct_schema
from connectors.decoding.registry.avro_schema import UnsupportedSchema, arrow_type, expanded
from connectors.decoding.registry.decoder import bisect
from connectors.decoding.registry.schemas import RegisteredSchema

UTC = dt.UTC
ITEM = {
    "type": "record",
    "name": "Item",
    "fields": [
        {"name": "sku", "type": "string"},
        {"name": "size", "type": {"type": "enum", "name": "Size", "symbols": ["S", "M", "L"]}},
    ],
}
DIRECT: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "waxlake.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "count", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "paid", "type": "boolean"},
        {"name": "name", "type": {"type": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "late_note", "type": ["string", "null"]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "first", "type": ITEM},
        {"name": "items", "type": {"type": "array", "items": "Item"}},
        {"name": "spare", "type": ["null", "Item"], "default": None},
        {"name": "counters", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "tags", "type": ["null", {"type": "array", "items": "string"}]},
    ],
}


def order(r: random.Random) -> dict[str, Any]:
    def item() -> dict[str, Any]:
        return {"sku": f"sku-{r.randrange(100)}", "size": r.choice("SML")}

    maybe = r.random() < 0.5
    return {
        "id": r.randrange(-(2**62), 2**62),
        "count": r.randrange(-(2**31), 2**31),
        "price": r.uniform(-1e6, 1e6),
        "ratio": 0.25,
        "paid": maybe,
        "name": "é" * r.randrange(40),
        "note": None if maybe else "n",
        "late_note": "l" if maybe else None,
        "at": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=r.randrange(10**9)),
        "at_us": dt.datetime(1999, 1, 1, tzinfo=UTC)
        + dt.timedelta(microseconds=r.randrange(10**12)),
        "day": dt.date(2000, 1, 1) + dt.timedelta(days=r.randrange(10_000)),
        "first": item(),
        "items": [item() for _ in range(r.randrange(3))],
        "spare": item() if maybe else None,
        "counters": {f"k{i}": (None if i % 2 else i) for i in range(r.randrange(3))},
        "tags": None if maybe else ["a", "b"],
    }


def payloads(schema: Any, records: list[Any]) -> pa.BinaryArray:
    parsed = fastavro.parse_schema(schema)
    out = []
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        out.append(buffer.getvalue())
    return pa.array(out, pa.binary())


def test_the_direct_decoder_gives_what_the_container_decoder_gives():
    records = [order(random.Random(seed)) for seed in range(500)]
    data = payloads(DIRECT, records)
    target = arrow_type(expanded(DIRECT))
    schema_text = direct_schema(DIRECT)
    assert schema_text is not None

    direct = decode_direct(schema_text, target, data)

    assert direct.type == target
    assert direct.equals(decode(DIRECT, target, data))
    assert direct.to_pylist()[7]["counters"] == list(records[7]["counters"].items())


@pytest.mark.parametrize(
    "field_type",
    [
        "bytes",
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
        {"type": "string", "logicalType": "uuid"},
        {"type": "int", "logicalType": "time-millis"},
        {"type": "long", "logicalType": "local-timestamp-millis"},
        {"type": "array", "items": ["null", "bytes"]},
        {"type": "map", "values": {"type": "fixed", "name": "G", "size": 2}},
    ],
)
def test_schemas_with_types_the_direct_decoder_lacks_take_the_container_path(field_type):
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert direct_schema(schema) is None


@pytest.mark.parametrize(
    ("schema", "values", "direct"),
    [
        ("long", [1, -(2**40)], True),
        ({"type": "array", "items": "string"}, [["a"], []], True),
        ({"type": "fixed", "name": "F", "size": 2}, [b"\x00a", b"bc"], False),
        (
            {"type": "string", "logicalType": "uuid"},
            ["00000000-0000-0000-0000-00000000002a"],
            False,
        ),
    ],
)
def test_a_value_that_is_not_a_record_decodes_as_one_field_value(
    schema: Any, values: list[Any], direct: bool
):
    registered = RegisteredSchema("id 1", 1, "AVRO", json.dumps(schema), {})
    decoder = AvroBatchDecoder(registered)
    data = payloads(schema, values)

    decoded = decoder.decode(data)

    assert decoder.arrow_type.names == ["value"]
    assert decoded.to_pylist() == [{"value": v} for v in values]
    assert (decoder._direct is not None) == direct


def test_a_value_of_plain_bytes_is_the_payload_itself():
    """As Confluent's serializers write it: no Avro length prefix."""
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", '"bytes"', {}))

    decoded = decoder.decode(pa.array([b"\x00a", b""], pa.binary()))

    assert decoded.to_pylist() == [{"value": b"\x00a"}, {"value": b""}]


def test_an_undecodable_payload_is_found_by_bisection_on_the_direct_path():
    registered = RegisteredSchema("id 1", 1, "AVRO", json.dumps(DIRECT), {})
    decoder = AvroBatchDecoder(registered)
    good = payloads(DIRECT, [order(random.Random(seed)) for seed in range(100)]).to_pylist()
    values = pa.array([*good[:42], good[42][:9], *good[43:]], pa.binary())

    decoded, bad = bisect(len(values), lambda a, b: decoder.decode(values.slice(a, b - a)))

    assert list(bad) == [42] and "undecodable Avro payload" in bad[42]
    assert sum(stop - start for start, stop, _ in decoded) == 99


CONTAINER: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "memo", "type": "string"},
    ],
}


def payments(n: int) -> list[bytes]:
    rows = [
        {"id": i, "amount": decimal.Decimal(f"{i}.25"), "memo": "m" * (i % 7)} for i in range(n)
    ]
    return [bytes(p) for p in payloads(CONTAINER, rows).to_pylist()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("at", "extra"), [(5, b"\x02\x04"), (19, b"\x00"), (0, b"\x02\x02a")])
def test_a_payload_with_bytes_after_its_record_decodes_on_the_container_path_too(at, extra):
    """As on the direct path, bytes after a complete record are ignored (polars-avro alone
    hung forever on a block whose bytes outran its record count)."""
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", json.dumps(CONTAINER), {}))
    assert decoder._direct is None
    good = payments(20)
    values = pa.array([*good[:at], good[at] + extra, *good[at + 1 :]], pa.binary())

    assert decoder.decode(values).equals(decoder.decode(pa.array(good, pa.binary())))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut", [1, 3])
def test_a_truncated_payload_is_found_by_bisection_on_the_container_path(cut):
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", json.dumps(CONTAINER), {}))
    good = payments(30)
    values = pa.array([*good[:17], good[17][:-cut], *good[18:]], pa.binary())

    decoded, bad = bisect(len(values), lambda a, b: decoder.decode(values.slice(a, b - a)))

    assert list(bad) == [17] and "undecodable Avro payload" in bad[17]
    assert sum(stop - start for start, stop, _ in decoded) == 29


@pytest.mark.parametrize(
    ("decimal_type", "message"),
    [
        ({"precision": 40, "scale": 2}, "is decimal(40, 2), wider than a Delta decimal"),
        ({}, "is a decimal with precision None and scale 0, which is not valid Avro"),
        ({"precision": 5, "scale": 7}, "is a decimal with precision 5 and scale 7"),
    ],
)
def test_decimals_a_delta_table_cannot_hold_are_unsupported(decimal_type, message):
    field = {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", **decimal_type}}
    schema = {"type": "record", "name": "R", "fields": [field]}
    registered = RegisteredSchema("id 1", 1, "AVRO", json.dumps(schema), {})
    with pytest.raises(UnsupportedSchema, match=re.escape(message)):
        AvroBatchDecoder(registered)
