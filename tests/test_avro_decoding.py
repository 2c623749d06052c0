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
    ],
)
def test_decimals_a_delta_table_cannot_hold_are_unsupported(decimal_type, message):
    field = {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", **decimal_type}}
    schema = {"type": "record", "name": "R", "fields": [field]}
    registered = RegisteredSchema("id 1", 1, "AVRO", json.dumps(schema), {})
    with pytest.raises(UnsupportedSchema, match=re.escape(message)):
        AvroBatchDecoder(registered)


INVALID_LOGICAL: list[tuple[Any, Any, pa.DataType, bool]] = [
    # (field type, a value, its column's type, whether the direct path takes it)
    ({"type": "int", "logicalType": "timestamp-millis"}, 1000, pa.int32(), True),
    ({"type": "long", "logicalType": "date"}, 5, pa.int64(), True),
    ({"type": "long", "logicalType": "uuid"}, 7, pa.int64(), True),
    ({"type": "long", "logicalType": "time-millis"}, 3, pa.int64(), True),
    ({"type": "int", "logicalType": "time-micros"}, 3, pa.int32(), True),
    ({"type": "string", "logicalType": "date"}, "x", pa.string(), True),
    ({"type": "string", "logicalType": "decimal", "precision": 4}, "ab", pa.string(), True),
    (
        {"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 4},
        b"\x01",
        pa.binary(),
        False,
    ),
    ({"type": "bytes", "logicalType": "decimal"}, b"\x01", pa.binary(), False),
    ({"type": "bytes", "logicalType": "decimal", "precision": 0}, b"\x01", pa.binary(), False),
    (
        {"type": "fixed", "name": "F", "size": 2, "logicalType": "decimal", "precision": 9},
        b"\x00\x01",
        pa.binary(),
        False,
    ),
    (
        {"type": "fixed", "name": "G", "size": 4, "logicalType": "uuid"},
        b"\x00\x01\x02\x03",
        pa.binary(),
        False,
    ),
    (
        {"type": "array", "items": {"type": "int", "logicalType": "timestamp-micros"}},
        [1, 2],
        pa.list_(pa.int32()),
        True,
    ),
]


def _base(schema: Any) -> Any:
    """`schema` without its logical types: what a writer writes for an invalid one."""
    if isinstance(schema, dict):
        drop = ("logicalType", "precision", "scale")
        return {k: _base(v) for k, v in schema.items() if k not in drop}
    return [_base(v) for v in schema] if isinstance(schema, list) else schema


@pytest.mark.parametrize(("field_type", "value", "column", "direct"), INVALID_LOGICAL)
def test_an_invalid_logical_type_is_ignored_for_its_underlying_type(
    field_type, value, column, direct
):
    """The Avro spec: a logical type on a type it does not allow (or a decimal whose scale
    exceeds its precision) is ignored. Some stopped the job on every restart with
    ArrowNotImplementedError; others landed cast (a long time-millis read as 0)."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": "long"}, {"name": "x", "type": field_type}],
    }
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", json.dumps(schema), {}))
    data = payloads(_base(schema), [{"id": 1, "x": value}, {"id": 2, "x": value}])

    decoded = decoder.decode(data)

    assert decoder.arrow_type.field("x").type == column
    assert decoded.to_pylist() == [{"id": 1, "x": value}, {"id": 2, "x": value}]
    assert (decoder._direct is not None) == direct
    assert decoded.equals(decode(decoder._writer, decoder.arrow_type, data))  # container path


TEXTS: dict[str, Any] = {
    "type": "record",
    "name": "Texts",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "s", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": ["null", "string"]}},
    ],
}


@pytest.mark.parametrize(
    ("tail", "where"),
    [
        (b"\x04\xff\xfe\x00\x00", "field s"),  # s, then no tags, no attrs
        (b"\x02a\x02\x02\xc3\x00\x00", "field tags[]"),  # one tag: half of a two-byte é
        (b"\x02a\x00\x02\x02\xa9\x00\x00", "field attrs{}"),  # a key that is only its tail
        (b"\x02a\x00\x02\x02k\x02\x04\xe2\x82\x00", "field attrs{}"),  # a value cut short
    ],
)
def test_invalid_utf8_in_a_string_is_found_by_bisection_on_the_direct_path(tail, where):
    """pyruhvro copies a string's bytes as they are: an invalid one landed, then the sink's
    statistics failed with UnicodeDecodeError on every restart. It must be undecodable, as on
    the container path."""
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", json.dumps(TEXTS), {}))
    assert decoder._direct is not None
    records = [{"id": i, "s": "é", "tags": ["t", "é"], "attrs": {"k": "v"}} for i in range(20)]
    good = payloads(TEXTS, records).to_pylist()
    values = pa.array([*good[:11], b"\x16" + tail, *good[12:]], pa.binary())

    decoded, bad = bisect(len(values), lambda a, b: decoder.decode(values.slice(a, b - a)))

    assert list(bad) == [11] and "undecodable Avro payload" in bad[11]
    assert f"{where} holds bytes that are not valid UTF-8" in bad[11]
    for _, _, struct in decoded:
        struct.validate(full=True)
    assert sum(stop - start for start, stop, _ in decoded) == 19
    with pytest.raises(ValueError, match="undecodable Avro payload"):  # the same on that path
        decode(decoder._writer, decoder.arrow_type, values.slice(11, 1))


FIXED_DECIMAL = {"type": "fixed", "name": "F", "size": 8, "logicalType": "decimal", "precision": 4}
DECIMALS: dict[str, Any] = {
    "type": "record",
    "name": "Amounts",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "d",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        },
        {
            "name": "lines",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Line",
                    "fields": [{"name": "f", "type": ["null", {**FIXED_DECIMAL, "scale": 2}]}],
                },
            },
        },
    ],
}


def _amounts(d: int, f: int) -> bytes:
    """An Amounts payload of unscaled values, whatever their digits (fastavro refuses more)."""
    raw = d.to_bytes((d.bit_length() + 8) // 8, "big", signed=True)
    line = b"\x02" + b"\x02" + f.to_bytes(8, "big", signed=True) + b"\x00"  # one line, not null
    return b"\x02" + bytes([len(raw) * 2]) + raw + line


@pytest.mark.parametrize(
    ("d", "f", "where"),
    [(10**4, 1, "d"), (-(10**12), 1, "d"), (99_999, 1, "d"), (1, -(10**4), "lines[].f")],
)
def test_a_decimal_with_more_digits_than_its_precision_is_found_by_bisection(d, f, where):
    """A decimal(4, 2) holding 999.99 (unscaled 99999) was stored as some other number."""
    decoder = AvroBatchDecoder(RegisteredSchema("id 1", 1, "AVRO", json.dumps(DECIMALS), {}))
    values = pa.array([_amounts(9999, -9999)] * 8 + [_amounts(d, f)] + [_amounts(-1, 0)] * 3)

    decoded, bad = bisect(len(values), lambda a, b: decoder.decode(values.slice(a, b - a)))

    assert list(bad) == [8], bad
    assert f"field {where} holds a decimal of more digits than its decimal(4, 2)" in bad[8]
    assert sum(stop - start for start, stop, _ in decoded) == 11
    assert decoded[0][2].to_pylist()[0] == {
        "id": 1,
        "d": decimal.Decimal("99.99"),
        "lines": [{"f": decimal.Decimal("-99.99")}],
    }
