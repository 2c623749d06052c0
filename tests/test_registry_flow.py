"""`flows.registry_to_delta` end to end: confluent-kafka's serializers -> Kafka -> the job -> Delta,
against a real schema registry server (Apicurio Registry, started by the tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    ServerConfig,
)
from deltalake import DeltaTable

from tests.jobs import run_job
from tests.producing import produce
from tests.registry_support import (
    FLOW,
    avro,
    client,
    dead_letters,
    json_schema,
    order_class,
    produce_values,
    protobuf,
    registry_env,
    table_rows,
)

UTC = dt.UTC


def test_protobuf_end_to_end(kafka_bootstrap, schema_registry, topic_factory, tmp_path):
    topic = topic_factory(1)
    cls = order_class()
    messages = []
    for i in range(30):
        m = cls(id=i, item=f"item-{i}", qty=[i, i + 1], status=i % 2)
        m.placed_at.FromMilliseconds(1_700_000_000_000 + i)
        m.first_line.sku = f"sku-{i}"
        m.first_line.qty = i
        messages.append(m)
    produce_values(kafka_bootstrap, topic, protobuf(schema_registry, topic, messages))
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(root, topic)
    assert dead_letters(root, topic) == []
    assert [
        (r["id"], r["item"], r["qty"], r["placed_at"], r["status"], r["first_line"]) for r in rows
    ] == [
        (
            i,
            f"item-{i}",
            [i, i + 1],
            dt.datetime.fromtimestamp((1_700_000_000_000 + i) / 1000, UTC),
            ["NEW", "PAID"][i % 2],
            {"sku": f"sku-{i}", "qty": i},
        )
        for i in range(30)
    ]


def node_class() -> Any:
    """A Protobuf message that holds itself (a linked list), built at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="waxlake/test/node.proto", package="waxlake.test", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    node = proto.message_type.add(name="Node")
    node.field.add(name="v", number=1, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    node.field.add(
        name="next",
        number=2,
        type=f.TYPE_MESSAGE,
        type_name=".waxlake.test.Node",
        label=f.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("waxlake.test.Node"))


def test_a_recursive_protobuf_message_keeps_its_inner_message_as_bytes(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """README's type table: the field where a message holds itself is binary, the nested
    message's own Protobuf bytes (a Delta column cannot nest without end)."""
    topic = topic_factory(1)
    cls = node_class()
    head = cls(v=1)
    head.next.v = 2
    head.next.next.v = 3
    produce_values(kafka_bootstrap, topic, protobuf(schema_registry, topic, [head, cls(v=9)]))
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert dead_letters(root, topic) == []
    rows = table_rows(root, topic)
    assert [r["v"] for r in rows] == [1, 9] and rows[1]["next"] is None
    assert cls.FromString(rows[0]["next"]) == head.next


def pinged_class() -> Any:
    """A Protobuf message with a `google.protobuf.Empty` field (and a repeated one)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory

    pool = descriptor_pool.DescriptorPool()
    empty_file = descriptor_pb2.FileDescriptorProto()
    empty_pb2.DESCRIPTOR.CopyToProto(empty_file)
    pool.Add(empty_file)
    proto = descriptor_pb2.FileDescriptorProto(
        name="waxlake/test/ping.proto",
        package="waxlake.test",
        syntax="proto3",
        dependency=["google/protobuf/empty.proto"],
    )
    f = descriptor_pb2.FieldDescriptorProto
    ping = proto.message_type.add(name="Ping")
    ping.field.add(name="id", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    for number, (name, label) in enumerate(
        [("ack", f.LABEL_OPTIONAL), ("acks", f.LABEL_REPEATED)], start=2
    ):
        ping.field.add(
            name=name,
            number=number,
            type=f.TYPE_MESSAGE,
            type_name=".google.protobuf.Empty",
            label=label,
        )
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("waxlake.test.Ping"))


EMPTY_AVRO = {
    "type": "record",
    "name": "Beat",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "mark", "type": {"type": "record", "name": "Mark", "fields": []}},
        {"name": "marks", "type": {"type": "array", "items": "Mark"}},
    ],
}
EMPTY_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Beat",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "extra": {"type": "object"}},
}


def test_types_without_fields_land_without_a_column(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Parquet cannot store a struct without fields: Protobuf's Empty and a JSON Schema object
    without properties have no column, and the records land; an Avro record of no fields, which
    the Avro decoders cannot read, makes UnsupportedSchema dead letters that say so."""
    pings, beats, docs = topic_factory(1), topic_factory(1), topic_factory(1)
    cls = pinged_class()
    messages = [cls(id=1), cls(id=2)]
    messages[1].ack.SetInParent()
    messages[1].acks.add()
    produce_values(kafka_bootstrap, pings, protobuf(schema_registry, pings, messages))
    beat = [{"id": 1, "mark": {}, "marks": [{}, {}]}]
    produce_values(kafka_bootstrap, beats, avro(schema_registry, beats, EMPTY_AVRO, beat))
    doc = [{"id": 1, "extra": {}}]
    produce_values(
        kafka_bootstrap, docs, json_schema(schema_registry, docs, EMPTY_JSON_SCHEMA, doc)
    )
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [pings, beats, docs], root, schema_registry)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    letters = dead_letters(root, beats)
    assert [r["error_class"] for r in letters] == ["UnsupportedSchema"]
    assert "field mark is a record without fields (Mark)" in letters[0]["error_message"]
    for topic, ids in ((pings, [1, 2]), (docs, [1])):
        assert dead_letters(root, topic) == []
        rows = table_rows(root, topic)
        assert [r["id"] for r in rows] == ids
        assert not {"ack", "acks", "mark", "marks", "extra"} & set(rows[0])


EVENT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Event",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": ["click", "view"]},
        "at": {"type": "string", "format": "date-time"},
        "weight": {"type": ["number", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"page": {"type": "string"}}},
    },
    "required": ["id", "kind"],
}


def test_json_schema_end_to_end(kafka_bootstrap, schema_registry, topic_factory, tmp_path):
    topic = topic_factory(1)
    events: list[dict[str, Any]] = [
        {
            "id": i,
            "kind": ["click", "view"][i % 2],
            "at": f"2026-01-01T00:00:{i:02d}Z",
            "weight": None if i % 2 else i * 1.5,
            "tags": ["a"] * (i % 3),
            "where": {"page": f"/p/{i}"},
        }
        for i in range(25)
    ]
    produce_values(kafka_bootstrap, topic, json_schema(schema_registry, topic, EVENT, events))
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "HTTP Request" not in result.stderr  # no INFO line per schema fetched
    rows = table_rows(root, topic)
    assert dead_letters(root, topic) == []
    assert [(r["id"], r["kind"], r["at"], r["weight"], r["tags"], r["where"]) for r in rows] == [
        (
            e["id"],
            e["kind"],
            dt.datetime(2026, 1, 1, 0, 0, e["id"], tzinfo=UTC),
            e["weight"],
            e["tags"],
            e["where"],
        )
        for e in events
    ]


V1 = {"type": "record", "name": "Reading", "fields": [{"name": "n", "type": "long"}]}
V2 = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "n", "type": "long"},
        {"name": "unit", "type": ["null", "string"], "default": None},
    ],
}
UNION = {"type": "record", "name": "Reading", "fields": [{"name": "n", "type": ["string", "long"]}]}
V3 = {"type": "record", "name": "Reading", "fields": [{"name": "n", "type": "string"}]}


def test_evolution_widens_and_a_conflicting_schema_goes_to_dead_letters(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    sr = client(schema_registry)
    sr.set_config(
        subject_name=f"{topic}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    v1 = avro(schema_registry, topic, V1, [{"n": i} for i in range(5)])
    v2 = avro(schema_registry, topic, V2, [{"n": i, "unit": "kg"} for i in range(5, 10)])
    v3 = avro(schema_registry, topic, V3, [{"n": f"s{i}"} for i in range(3)])
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [topic], root, schema_registry)
    produce_values(kafka_bootstrap, topic, v1)
    assert run_job(env, None, flow=FLOW).returncode == 0  # the table starts with v1's columns
    produce_values(kafka_bootstrap, topic, [*v2, *v3])

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(root, topic)
    assert [(r["n"], r["unit"]) for r in rows] == [(i, None) for i in range(5)] + [
        (i, "kg") for i in range(5, 10)
    ]
    dead = dead_letters(root, topic)
    assert [d["offset"] for d in dead] == [10, 11, 12]
    assert {d["error_class"] for d in dead} == {"SchemaConflict"}
    v3_id = int.from_bytes(v3[0][1:5], "big")
    message = dead[0]["error_message"]
    assert f"schema id {v3_id}" in message and "field 'n' is string in it but int64" in message
    assert dead[0]["value"] == v3[0]


def test_on_a_new_table_the_first_schema_by_offset_wins_a_conflict(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Two conflicting schemas in one poll of a new table: the records read first make the
    table, whichever schema id is lower (it used to be the lower id, so where polls fell
    decided which records became dead letters)."""
    topic = topic_factory(1)
    sr = client(schema_registry)
    sr.set_config(
        subject_name=f"{topic}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    v1 = avro(schema_registry, topic, V1, [{"n": i} for i in range(2)])  # the lower id
    v3 = avro(schema_registry, topic, V3, [{"n": f"s{i}"} for i in range(2)])
    produce_values(kafka_bootstrap, topic, [*v3, *v1])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["offset"], r["n"]) for r in table_rows(root, topic)] == [(0, "s0"), (1, "s1")]
    dead = dead_letters(root, topic)
    assert [(d["offset"], d["error_class"]) for d in dead] == [
        (2, "SchemaConflict"),
        (3, "SchemaConflict"),
    ]


def test_bad_framing_and_unknown_schemas_are_dead_letters(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    good = avro(schema_registry, topic, V1, [{"n": 1}])[0]
    client(schema_registry).set_config(
        subject_name=f"{topic}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    union = avro(schema_registry, topic, UNION, [{"n": 5}])[0]
    values = [
        good,
        b"plain text",  # no framing at all
        b"\x00\x00",  # too short
        b"\x00\x7f\xff\xff\xf0" + good[5:],  # an id the registry never gave
        b"\x01" + uuid.uuid4().bytes + good[5:],  # a GUID the registry does not know
        good[:5] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # not Avro of that schema
        good,
        union,  # a schema whose union no Delta column can hold
        good[5:],  # its GUID in a header (confluent-kafka's header framing), unknown here
    ]
    headers = [()] * (len(values) - 1) + [(("__value_schema_id", b"\x01" + uuid.uuid4().bytes),)]
    produce(kafka_bootstrap, [(topic, 0, b"k", v, h) for v, h in zip(values, headers, strict=True)])
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["offset"] for r in table_rows(root, topic)] == [0, 6]
    dead = {d["offset"]: (d["error_class"], d["error_message"]) for d in dead_letters(root, topic)}
    assert {o: c for o, (c, _) in dead.items()} == {
        1: "BadFraming",
        2: "BadFraming",
        3: "UnknownSchema",
        4: "UnknownSchema",
        5: "InvalidPayload",
        7: "UnsupportedSchema",
        8: "UnknownSchema",
    }
    assert "unknown magic byte 112" in dead[1][1]
    assert "field n is a union of several types (string, long)" in dead[7][1]
    assert "schema id 2147483632" in dead[3][1]


def nested_records(depth: int) -> dict[str, Any]:
    """An Avro record nesting `depth` records (itself the first)."""
    schema: dict[str, Any] = {"type": "record", "name": f"L{depth}", "fields": []}
    schema["fields"].append({"name": "v", "type": "int"})
    for level in range(depth - 1, 0, -1):
        schema = {
            "type": "record",
            "name": f"L{level}",
            "fields": [{"name": "v", "type": "int"}, {"name": "inner", "type": schema}],
        }
    return schema


def nested_value(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"v": depth}
    for level in range(depth - 1, 0, -1):
        value = {"v": level, "inner": value}
    return value


def test_payloads_naming_no_message_and_schemas_too_deep_are_dead_letters(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Both stopped the job on every restart (an IndexError; delta-rs refusing the schema)."""
    pings, deep = topic_factory(1), topic_factory(1)
    cls = order_class()
    framed = protobuf(schema_registry, pings, [cls(id=1), cls(id=2)])
    assert framed[1][5:7] == b"\x02\x02"  # message indexes [1]: Order, after Line
    framed[1] = framed[1][:5] + b"\x02\x0a" + framed[1][7:]  # indexes [5]: no such message
    produce_values(kafka_bootstrap, pings, framed)
    records = [nested_value(32), nested_value(33)]
    values = [
        avro(schema_registry, deep, nested_records(32), records[:1])[0],
        avro(schema_registry, deep, nested_records(33), records[1:])[0],
    ]
    client(schema_registry).set_config(
        subject_name=f"{deep}-value",
        config=ServerConfig(compatibility=ConfigCompatibilityLevel.NONE),
    )
    produce_values(kafka_bootstrap, deep, values)
    root = tmp_path / "lake"

    result = run_job(
        registry_env(kafka_bootstrap, [pings, deep], root, schema_registry), None, flow=FLOW
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["id"] for r in table_rows(root, pings)] == [1]
    letters = dead_letters(root, pings)
    assert [(r["offset"], r["error_class"]) for r in letters] == [(1, "InvalidPayload")]
    assert "message indexes [5] name no message of" in letters[0]["error_message"]
    assert [r["v"] for r in table_rows(root, deep)] == [1]
    letters = dead_letters(root, deep)
    assert [(r["offset"], r["error_class"]) for r in letters] == [(1, "UnsupportedSchema")]
    assert "nests deeper than 32 levels" in letters[0]["error_message"]


def test_keys_in_the_registry_format_become_key_columns(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    from confluent_kafka.serialization import MessageField

    topic = topic_factory(1)
    key_schema = {"type": "record", "name": "Key", "fields": [{"name": "tenant", "type": "string"}]}
    keys = avro(
        schema_registry,
        topic,
        key_schema,
        [{"tenant": f"t{i}"} for i in range(4)],
        field=MessageField.KEY,
    )
    values = avro(schema_registry, topic, V1, [{"n": i} for i in range(5)])
    produce_values(kafka_bootstrap, topic, values, keys=[*keys, b"plain"])
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [topic], root, schema_registry, registry_keys=1)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = table_rows(root, topic)
    assert [(r["key_tenant"], r["n"], r["key"]) for r in rows] == [
        (f"t{i}", i, keys[i]) for i in range(4)
    ]
    [(offset, message)] = [(d["offset"], d["error_message"]) for d in dead_letters(root, topic)]
    assert offset == 4 and "key: unknown magic byte 112 in the key" in message


def test_a_raw_table_is_refused_not_rewritten(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    topic = topic_factory(1)
    produce_values(kafka_bootstrap, topic, avro(schema_registry, topic, V1, [{"n": 1}]))
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [topic], root, schema_registry)
    assert run_job(env, None).returncode == 0  # the raw flow made the table

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("waxlake: error: WAXLAKE_TABLE_ROOT: the existing table of topic")
    assert "flows.kafka_to_delta" in line and "point WAXLAKE_TABLE_ROOT elsewhere" in line
    assert "n" not in DeltaTable(str(root / topic)).schema().to_arrow().names


@pytest.mark.parametrize("problem", ["unset", "unreachable", "no scheme"])
def test_registry_setting_problems_stop_at_start_with_one_line(
    problem, kafka_bootstrap, topic_factory, tmp_path
):
    from connectors.local_broker import free_port

    topic = topic_factory(1)
    url = {"unset": "", "unreachable": "http://", "no scheme": ""}[problem]
    url += "" if problem == "unset" else f"127.0.0.1:{free_port()}"
    env = registry_env(kafka_bootstrap, [topic], tmp_path / "lake", url)
    result = run_job(env, None, flow=FLOW, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("waxlake: error: WAXLAKE_SCHEMA_REGISTRY_URL"), last


PING_PROTO = (
    'syntax = "proto3";\npackage w;\nmessage Ping {\n  int64 id = 1;\n  string name = 2;\n}\n'
)
WIDE_PROTO = (  # field numbers and names whose descriptor bytes are not ASCII
    'syntax = "proto3";\npackage w;\nmessage Wide {\n  int64 id = 1;\n'
    + "".join(f"  string field_{n} = {n};\n" for n in range(200, 230))
    + "}\n"
)


def test_protobuf_registered_as_proto_text_is_read_serialized(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Java producers register .proto text, which a registry gives back as text unless asked
    for `format=serialized`. Apicurio's serialized form turns every byte above 0x7f into U+FFFD:
    a descriptor that is all ASCII decodes, another stays an UnsupportedSchema saying why."""
    from confluent_kafka.schema_registry import Schema

    topic = topic_factory(1)
    registry = client(schema_registry)
    ping = registry.register_schema(f"{topic}-value", Schema(PING_PROTO, "PROTOBUF"))
    wide = registry.register_schema(f"{topic}-wide", Schema(WIDE_PROTO, "PROTOBUF"))
    body = b"\x08\x05\x12\x02hi"  # id 5, name "hi"
    framed = [b"\x00" + i.to_bytes(4, "big") + b"\x00" + body for i in (ping, wide)]
    produce_values(kafka_bootstrap, topic, framed)
    root = tmp_path / "lake"

    result = run_job(registry_env(kafka_bootstrap, [topic], root, schema_registry), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["offset"], r["id"], r["name"]) for r in table_rows(root, topic)] == [(0, 5, "hi")]
    letters = dead_letters(root, topic)
    assert [(r["offset"], r["error_class"]) for r in letters] == [(1, "UnsupportedSchema")]
    assert "as .proto text" in letters[0]["error_message"]
    assert "format=serialized" in letters[0]["error_message"]
