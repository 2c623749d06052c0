"""`flows.registry_to_delta` on Avro end to end: confluent-kafka's AvroSerializer -> Kafka -> the
job -> Delta, against a real schema registry server (Apicurio Registry, started by the tests). One
schema with every mapped type (the container path), one of the common types only (pyruhvro's)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaReference,
    ServerConfig,
)
from deltalake import DeltaTable

from tests.jobs import run_job
from tests.registry_support import (
    ADDRESS,
    FLOW,
    avro,
    client,
    dead_letters,
    produce_values,
    registry_env,
    table_rows,
)

UTC = dt.UTC
CUSTOMER: dict[str, Any] = {
    "type": "record",
    "name": "Customer",
    "namespace": "waxlake.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "age", "type": "int"},
        {"name": "score", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "active", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "joined", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "birthday", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "balance",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
        },
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["FREE", "PRO"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counters", "type": {"type": "map", "values": "long"}},
        {"name": "home", "type": "waxlake.test.Address"},
    ],
}


def customer(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"name-{i}",
        "age": 20 + i,
        "score": i / 4,
        "ratio": 0.5,
        "active": i % 2 == 0,
        "note": None if i % 3 else f"note {i}",
        "joined": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=i),
        "birthday": dt.date(2000, 1, 1) + dt.timedelta(days=i),
        "balance": decimal.Decimal(f"{i}.25"),
        "ref": str(uuid.UUID(int=i)),
        "tier": "PRO" if i % 2 else "FREE",
        "tags": [f"t{i}", "x"],
        "counters": {"a": i},
        "home": {"city": f"c{i}", "zip": None if i % 2 else "123"},
    }


def address_reference(url: str) -> SchemaReference:
    """Register the Address record once under its own subject; a reference to it."""
    client(url).register_schema("waxlake.test.Address", Schema(json.dumps(ADDRESS), "AVRO"))
    return SchemaReference("waxlake.test.Address", "waxlake.test.Address", 1)


def test_avro_with_every_mapped_type_and_a_reference(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    ref = address_reference(schema_registry)
    records = [customer(i) for i in range(40)]
    values = avro(schema_registry, topic, CUSTOMER, records, references=[ref])
    produce_values(kafka_bootstrap, topic, [*values, None])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(root, topic)
    assert len(rows) == 41 and dead_letters(root, topic) == []
    got = [{k: v for k, v in r.items() if k in CUSTOMER_FIELDS} for r in rows[:40]]
    assert got == [{**r, "counters": list(r["counters"].items())} for r in records]
    latest = client(schema_registry).get_latest_version(f"{topic}-value")
    assert {r["schema_id"] for r in rows[:40]} == {latest.schema_id}
    tombstone = rows[40]
    assert (
        tombstone["is_tombstone"] and tombstone["name"] is None and tombstone["schema_id"] is None
    )
    types = {f.name: str(f.type) for f in DeltaTable(str(root / topic)).schema().fields}
    assert types["joined"] == 'PrimitiveType("timestamp")' and "decimal(10,2)" in types["balance"]


CUSTOMER_FIELDS = [f["name"] for f in CUSTOMER["fields"]]
COMMON_TYPES = {  # only types the direct (pyruhvro) decoder maps: it decodes these records
    **CUSTOMER,
    "fields": [
        f
        for f in CUSTOMER["fields"]
        if f["name"] not in ("balance", "ref")  # decimal and uuid take the container path
    ],
}


def test_avro_of_the_common_types_with_a_reference_lands_exactly(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    ref = address_reference(schema_registry)
    records = [
        {k: v for k, v in customer(i).items() if k not in ("balance", "ref")} for i in range(40)
    ]
    produce_values(
        kafka_bootstrap, topic, avro(schema_registry, topic, COMMON_TYPES, records, [ref])
    )
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(root, topic)
    assert dead_letters(root, topic) == []
    got = [{k: v for k, v in r.items() if k in records[0]} for r in rows]
    assert got == [{**r, "counters": list(r["counters"].items())} for r in records]


def test_avro_values_and_keys_that_are_not_records_become_one_column(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    from confluent_kafka.serialization import MessageField

    longs, uuids, blobs = topic_factory(1), topic_factory(1), topic_factory(1)
    keys = avro(schema_registry, longs, "string", ["t0", "t1", "t2"], field=MessageField.KEY)
    produce_values(kafka_bootstrap, longs, avro(schema_registry, longs, "long", [10, 11, 12]), keys)
    ids = [str(uuid.UUID(int=i)) for i in range(2)]  # the container path (pyruhvro's lacks uuid)
    uuid_schema = {"type": "string", "logicalType": "uuid"}
    produce_values(
        kafka_bootstrap, uuids, avro(schema_registry, uuids, uuid_schema, ids), [None] * 2
    )
    blob_values = avro(schema_registry, blobs, "bytes", [b"\x00a", b"b"])  # written as they are
    produce_values(kafka_bootstrap, blobs, blob_values, keys=[None, None])
    root = tmp_path / "lake"
    topics = [longs, uuids, blobs]
    env = registry_env(kafka_bootstrap, topics, root, schema_registry, registry_keys=1)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [dead_letters(root, t) for t in topics] == [[], [], []]
    rows = table_rows(root, longs)
    assert [(r["key_value"], r["value_value"]) for r in rows] == [
        ("t0", 10),
        ("t1", 11),
        ("t2", 12),
    ]
    assert [r["value_value"] for r in table_rows(root, uuids)] == ids
    assert [r["value_value"] for r in table_rows(root, blobs)] == [b"\x00a", b"b"]
    types = {f.name: str(f.type) for f in DeltaTable(str(root / longs)).schema().fields}
    assert types["value_value"] == 'PrimitiveType("long")'
    assert types["key_value"] == 'PrimitiveType("string")'


CLASHING = {  # fields named like the table's own columns
    "type": "record",
    "name": "Clash",
    "fields": [
        {"name": "schema_id", "type": "long"},
        {"name": "key_x", "type": "string"},
        {"name": "value", "type": "long"},
    ],
}
CHANGED = {**CLASHING, "fields": [{"name": "schema_id", "type": "string"}]}


def test_fields_named_like_columns_keep_their_columns_across_a_restart(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    client(schema_registry).set_config(
        subject_name=f"{topic}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    records = [{"schema_id": i, "key_x": f"x{i}", "value": 10 + i} for i in range(4)]
    values = avro(schema_registry, topic, CLASHING, records)
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [topic], root, schema_registry)
    produce_values(kafka_bootstrap, topic, values[:2])
    assert run_job(env, None, flow=FLOW).returncode == 0
    changed = avro(schema_registry, topic, CHANGED, [{"schema_id": "ten"}])
    produce_values(kafka_bootstrap, topic, changed)  # checked against the table read back
    assert run_job(env, None, flow=FLOW).returncode == 0
    produce_values(kafka_bootstrap, topic, values[2:])

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    columns = ["value_schema_id", "value_key_x", "value_value"]
    names = DeltaTable(str(root / topic)).schema().to_arrow().names
    assert [n for n in names if n.startswith("value_")] == columns
    rows = table_rows(root, topic)
    assert [tuple(r[c] for c in columns) for r in rows] == [tuple(r.values()) for r in records]
    dead = dead_letters(root, topic)
    assert [(d["offset"], d["error_class"]) for d in dead] == [(2, "SchemaConflict")]
    assert "field 'schema_id' is string in it but int64" in dead[0]["error_message"]


SHIPMENT: dict[str, Any] = {  # named types used again by name: short, full, from another space
    "type": "record",
    "name": "Shipment",
    "namespace": "waxlake.ship",
    "fields": [
        {
            "name": "origin",
            "type": {
                "type": "record",
                "name": "Place",
                "fields": [
                    {"name": "code", "type": {"type": "string", "logicalType": "uuid"}},
                    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A"]}},
                ],
            },
        },
        {"name": "target", "type": "waxlake.ship.Place"},
        {"name": "stops", "type": {"type": "array", "items": "Place"}},
        {"name": "last_kind", "type": "Kind"},
        {
            "name": "carrier",
            "type": {
                "type": "record",
                "name": "Carrier",
                "namespace": "waxlake.other",
                "fields": [{"name": "home", "type": ["null", "waxlake.ship.Place"]}],
            },
        },
    ],
}
NODE = {  # a record inside itself: no Delta column can hold it
    "type": "record",
    "name": "Node",
    "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
}


def test_named_types_used_again_by_name_land_and_a_recursive_one_is_a_dead_letter(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    shipments, nodes = topic_factory(1), topic_factory(1)

    def place(i: int) -> dict[str, Any]:
        return {"code": str(uuid.UUID(int=i)), "kind": "A"}

    records = [
        {
            "origin": place(i),
            "target": place(i + 1),
            "stops": [place(i + 2)],
            "last_kind": "A",
            "carrier": {"home": place(i + 3) if i % 2 else None},
        }
        for i in range(5)
    ]
    produce_values(kafka_bootstrap, shipments, avro(schema_registry, shipments, SHIPMENT, records))
    linked = [{"v": 1, "next": {"v": 2, "next": None}}, {"v": 3, "next": None}]
    produce_values(kafka_bootstrap, nodes, avro(schema_registry, nodes, NODE, linked))
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [shipments, nodes], root, schema_registry)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert dead_letters(root, shipments) == []
    rows = table_rows(root, shipments)
    assert [{k: r[k] for k in records[0]} for r in rows] == records
    letters = dead_letters(root, nodes)
    assert [r["offset"] for r in letters] == [0, 1]
    assert {r["error_class"] for r in letters} == {"UnsupportedSchema"}
    assert "field next holds a Node inside a Node" in letters[0]["error_message"]
    assert table_rows(root, nodes) == []  # its table holds only the markers


WIDE_DECIMAL = {
    "type": "record",
    "name": "Ledger",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "total",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2},
        },
    ],
}


def test_a_decimal_wider_than_delta_holds_is_a_dead_letter_that_says_so(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Delta decimals hold 38 digits: a decimal(40, 2) must not stop the job (it did, on every
    restart, with pyarrow's ValueError)."""
    topic = topic_factory(1)
    values = [{"id": 1, "total": decimal.Decimal("1.25")}]
    produce_values(kafka_bootstrap, topic, avro(schema_registry, topic, WIDE_DECIMAL, values))
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    letters = dead_letters(root, topic)
    assert [r["error_class"] for r in letters] == ["UnsupportedSchema"]
    assert (
        "field total is decimal(40, 2), wider than a Delta decimal" in letters[0]["error_message"]
    )


LOCAL_TIMES = {  # naive timestamps at the top, in a record and in a map
    "type": "record",
    "name": "Shift",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "checkins",
            "type": {
                "type": "map",
                "values": {"type": "long", "logicalType": "local-timestamp-millis"},
            },
        },
    ],
}


def test_naive_timestamps_in_a_map_land(kafka_bootstrap, schema_registry, topic_factory, tmp_path):
    """delta-rs turns on the timestampNtz table feature for a naive timestamp column, not for
    one inside a map, and then refuses the commit: every restart failed."""
    topic = topic_factory(1)
    at = dt.datetime(2026, 3, 1, 8, 30)
    records = [{"id": 1, "checkins": {"door": at}}, {"id": 2, "checkins": {}}]
    produce_values(kafka_bootstrap, topic, avro(schema_registry, topic, LOCAL_TIMES, records))
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert dead_letters(root, topic) == []
    assert [(r["id"], r["checkins"]) for r in table_rows(root, topic)] == [
        (1, [("door", at)]),
        (2, []),
    ]


INVALID_LOGICAL = {  # logical types on types the Avro spec does not allow them on
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "at", "type": {"type": "int", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "long", "logicalType": "date"}},
        {"name": "ref", "type": {"type": "long", "logicalType": "uuid"}},
        {
            "name": "amount",
            "type": {"type": "string", "logicalType": "decimal", "precision": 4, "scale": 2},
        },
    ],
}


def test_invalid_logical_types_land_as_their_underlying_types(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Readers must ignore an invalid logical type (Avro spec): an int timestamp-millis stopped
    the job on every restart (ArrowNotImplementedError). The second schema adds a bytes field,
    so its records take the container path; both must give the same columns."""
    topic = topic_factory(1)
    client(schema_registry).set_config(
        subject_name=f"{topic}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    record = {"id": 1, "at": 1000, "day": 5, "ref": 7, "amount": "ab"}
    with_bytes = {
        **INVALID_LOGICAL,
        "fields": [*INVALID_LOGICAL["fields"], {"name": "blob", "type": "bytes"}],
    }
    direct = avro(schema_registry, topic, INVALID_LOGICAL, [record])
    container = avro(schema_registry, topic, with_bytes, [{**record, "id": 2, "blob": b"b"}])
    produce_values(kafka_bootstrap, topic, [*direct, *container])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert dead_letters(root, topic) == []
    assert [
        (r["id"], r["at"], r["day"], r["ref"], r["amount"]) for r in table_rows(root, topic)
    ] == [
        (1, 1000, 5, 7, "ab"),
        (2, 1000, 5, 7, "ab"),
    ]
    fields = {f.name: str(f.type) for f in DeltaTable(str(root / topic)).schema().fields}
    assert (fields["at"], fields["day"], fields["amount"]) == (
        'PrimitiveType("integer")',
        'PrimitiveType("long")',
        'PrimitiveType("string")',
    )


TEXT = {
    "type": "record",
    "name": "Note",
    "fields": [{"name": "id", "type": "long"}, {"name": "text", "type": "string"}],
}


def test_a_string_of_invalid_utf8_is_a_dead_letter_and_the_rest_land(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """On the direct path the invalid string landed in the buffer, and the sink then failed
    (UnicodeDecodeError in the file statistics) on every restart."""
    topic = topic_factory(1)
    good = avro(schema_registry, topic, TEXT, [{"id": 1, "text": "ok"}, {"id": 3, "text": "é"}])
    bad = good[0][:5] + b"\x04" + b"\x04\xff\xfe"  # the same framing, id 2, text of 2 bad bytes
    produce_values(kafka_bootstrap, topic, [good[0], bad, good[1]])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["offset"], r["id"], r["text"]) for r in table_rows(root, topic)] == [
        (0, 1, "ok"),
        (2, 3, "é"),
    ]
    letters = dead_letters(root, topic)
    assert [(r["offset"], r["error_class"]) for r in letters] == [(1, "InvalidPayload")]
    assert "field text holds bytes that are not valid UTF-8" in letters[0]["error_message"]


SMALL_DECIMAL = {
    "type": "record",
    "name": "Price",
    "fields": [
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        }
    ],
}


def _decimal_payload(framing: bytes, unscaled: int) -> bytes:
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return framing + bytes([len(raw) * 2]) + raw


def test_a_decimal_beyond_its_precision_is_a_dead_letter_naming_the_field(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Other writers than fastavro (which refuses) may write 999.99 as a decimal(4, 2): it was
    stored as another number."""
    topic = topic_factory(1)
    good = avro(schema_registry, topic, SMALL_DECIMAL, [{"amount": decimal.Decimal("12.34")}])
    framing = good[0][:5]
    values = [good[0], _decimal_payload(framing, 99_999), _decimal_payload(framing, 10**12)]
    produce_values(kafka_bootstrap, topic, [*values, _decimal_payload(framing, -9999)])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["offset"], r["amount"]) for r in table_rows(root, topic)] == [
        (0, decimal.Decimal("12.34")),
        (3, decimal.Decimal("-99.99")),
    ]
    letters = dead_letters(root, topic)
    assert [(r["offset"], r["error_class"]) for r in letters] == [
        (1, "InvalidPayload"),
        (2, "InvalidPayload"),
    ]
    for letter in letters:
        assert (
            "field amount holds a decimal of more digits than its decimal(4, 2)"
            in letter["error_message"]
        )
