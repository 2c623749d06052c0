"""Producing registry-framed records with confluent-kafka's own serializers, for the tests."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from tests.jobs import job_env
from tests.producing import Record, produce

FLOW = "flows.registry_to_delta:flow"
# Name subjects by topic and give the client a timeout (see tests/test_local_registry.py).
SERDE: dict[str, Any] = {"subject.name.strategy.type": "TOPIC"}


@functools.cache
def client(url: str) -> SchemaRegistryClient:
    """One client per registry for the session (a dropped client leaks its HTTP session)."""
    return SchemaRegistryClient({"url": url, "timeout": 10})


def table_rows(root: Path, topic: str) -> list[dict[str, Any]]:
    """A topic's table, in Kafka order."""
    rows = DeltaTable(str(root / topic)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: (r["partition"], r["offset"]))


def dead_letters(root: Path, topic: str) -> list[dict[str, Any]]:
    uri = root / "_dead_letters" / topic
    if not (uri / "_delta_log").exists():
        return []
    return sorted(DeltaTable(str(uri)).to_pyarrow_table().to_pylist(), key=lambda r: r["offset"])


def registry_env(
    bootstrap: str, topics: Sequence[str], root: Path, url: str, **settings: str | int
) -> dict[str, str]:
    env = job_env(bootstrap, topics, root, "exactly-once", **settings)
    env["WAXLAKE_SCHEMA_REGISTRY_URL"] = url
    return env


def avro(
    url: str,
    topic: str,
    schema: dict[str, Any] | str,
    records: Iterable[Any],
    references: Sequence[SchemaReference] = (),
    field: MessageField = MessageField.VALUE,
) -> list[bytes]:
    if isinstance(schema, str):  # a primitive, as confluent-kafka registers it from '"long"'
        schema = {"type": schema}
    serializer = AvroSerializer(
        client(url), Schema(json.dumps(schema), "AVRO", list(references)), conf=SERDE
    )
    ctx = SerializationContext(topic, field)
    return [serializer(r, ctx) for r in records]


def json_schema(
    url: str, topic: str, schema: dict[str, Any], records: Iterable[Any]
) -> list[bytes]:
    serializer = JSONSerializer(json.dumps(schema), client(url), conf=SERDE)
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [serializer(r, ctx) for r in records]


def protobuf(url: str, topic: str, messages: Iterable[Any]) -> list[bytes]:
    items = list(messages)
    serializer = ProtobufSerializer(
        type(items[0]), client(url), {**SERDE, "use.deprecated.format": False}
    )
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [serializer(m, ctx) for m in items]


def produce_values(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    partitions: int = 1,
) -> list[Record]:
    keys = keys if keys is not None else [f"k{i}".encode() for i in range(len(values))]
    return produce(
        bootstrap,
        [
            (topic, i % partitions, k, v, ())
            for i, (k, v) in enumerate(zip(keys, values, strict=True))
        ],
    )


ADDRESS = {
    "type": "record",
    "name": "Address",
    "namespace": "waxlake.test",
    "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"]}],
}
"""An Avro record other schemas refer to (a schema reference)."""


def order_class() -> Any:
    """A Protobuf message class built at run time (no protoc): Order, with a Timestamp, an enum,
    a repeated field, a map and a nested message."""
    pool = descriptor_pool.DescriptorPool()
    timestamp_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp_file)
    pool.Add(timestamp_file)
    proto = descriptor_pb2.FileDescriptorProto(
        name="waxlake/test/shop.proto",
        package="waxlake.test",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    f = descriptor_pb2.FieldDescriptorProto
    status = proto.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    line = proto.message_type.add(name="Line")
    line.field.add(name="sku", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    line.field.add(name="qty", number=2, type=f.TYPE_INT32, label=f.LABEL_OPTIONAL)
    order = proto.message_type.add(name="Order")
    order.field.add(name="id", number=1, type=f.TYPE_INT64, label=f.LABEL_OPTIONAL)
    order.field.add(name="item", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    order.field.add(name="qty", number=3, type=f.TYPE_INT32, label=f.LABEL_REPEATED)
    order.field.add(
        name="placed_at",
        number=4,
        type=f.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=f.LABEL_OPTIONAL,
    )
    order.field.add(
        name="status",
        number=5,
        type=f.TYPE_ENUM,
        type_name=".waxlake.test.Status",
        label=f.LABEL_OPTIONAL,
    )
    order.field.add(
        name="first_line",
        number=6,
        type=f.TYPE_MESSAGE,
        type_name=".waxlake.test.Line",
        label=f.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("waxlake.test.Order"))
