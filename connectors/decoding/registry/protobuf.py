"""Protobuf payloads of one writer schema, decoded as one batch with `ptars` (Rust).

A Protobuf payload starts with the message indexes (which message of the schema's file it is:
a zigzag varint count then the indexes; a single 0 byte means the first message). The schema is
the registry's `FileDescriptorProto` (base64, as confluent-kafka's serializer registers it, or as
`schemas` fetches one registered as .proto text) with its references; well-known types come from
the protobuf runtime.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import ptars
import pyarrow as pa
from google.protobuf import (  # the well-known types, so their files are in the default pool
    any_pb2,  # noqa: F401
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,  # noqa: F401
    empty_pb2,  # noqa: F401
    field_mask_pb2,  # noqa: F401
    struct_pb2,  # noqa: F401
    timestamp_pb2,  # noqa: F401
    wrappers_pb2,  # noqa: F401
)
from google.protobuf.descriptor import Descriptor, FileDescriptor

from connectors.decoding.registry.avro_schema import UnsupportedSchema
from connectors.decoding.registry.schemas import RegisteredSchema

_CONFIG = ptars.PtarsConfig(
    timestamp_tz="UTC",
    timestamp_unit="us",
    time_unit="us",
    duration_unit="us",
    enum_repr="string",
    list_value_name="item",
)


def _file_proto(schema: RegisteredSchema) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    try:
        proto.ParseFromString(base64.b64decode(schema.text, validate=True))
    except Exception:
        raise UnsupportedSchema(
            f"schema {schema.ref} is Protobuf as .proto text, and the registry did not serve it "
            "as a serialized FileDescriptorProto (format=serialized: Confluent Schema Registry "
            "does; Apicurio Registry's answer is lossy unless all ASCII); register it serialized "
            "(as confluent-kafka's serializers do) or use a registry that serves it"
        ) from None
    return proto


def file_descriptor(schema: RegisteredSchema) -> FileDescriptor:
    """The schema's file in a pool of its own (versions of one file may differ)."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(registered: RegisteredSchema) -> FileDescriptor:
        proto = _file_proto(registered)
        for reference in registered.references.values():
            add(reference)
        for dependency in proto.dependency:
            if dependency not in added and dependency.startswith("google/protobuf/"):
                known = descriptor_pb2.FileDescriptorProto()
                descriptor_pool.Default().FindFileByName(dependency).CopyToProto(known)
                pool.Add(known)
                added.add(dependency)
        if proto.name not in added:
            pool.Add(proto)
            added.add(proto.name)
        return pool.FindFileByName(proto.name)

    try:
        return add(schema)
    except (KeyError, TypeError) as exc:
        raise UnsupportedSchema(
            f"schema {schema.ref} cannot be loaded ({exc}): does it import a file the registry "
            "does not list among its references?"
        ) from None


def message_at(file: FileDescriptor, indexes: tuple[int, ...]) -> Descriptor:
    """The message the indexes name: top-level message, then nested ones."""
    if not indexes:
        indexes = (0,)
    try:
        message = file.message_types_by_name[list(file.message_types_by_name)[indexes[0]]]
        for index in indexes[1:]:
            message = message.nested_types[index]
    except IndexError:
        raise ValueError(
            f"message indexes {list(indexes)} name no message of {file.name}"
        ) from None
    return message


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def split_indexes(payloads: list[bytes]) -> dict[tuple[int, ...], tuple[list[int], list[bytes]]]:
    """Group payloads by their message indexes, each stripped of them."""
    groups: dict[tuple[int, ...], tuple[list[int], list[bytes]]] = {}
    for row, payload in enumerate(payloads):
        key: tuple[int, ...]
        if payload[:1] == b"\x00":
            key, body = (0,), payload[1:]
        else:
            count, pos = _varint(payload, 0)
            indexes = []
            for _ in range(count):
                index, pos = _varint(payload, pos)
                indexes.append(index)
            key, body = tuple(indexes), payload[pos:]
        rows, bodies = groups.setdefault(key, ([], []))
        rows.append(row)
        bodies.append(body)
    return groups


class ProtobufBatchDecoder:
    """Decodes the messages of one schema (all its message types) into struct arrays."""

    def __init__(self, schema: RegisteredSchema) -> None:
        self._file = file_descriptor(schema)
        self._pool = ptars.HandlerPool([self._file], config=_CONFIG)

    def arrow_type(self, indexes: tuple[int, ...]) -> pa.DataType:
        return delta_type(pa.struct(list(self._handler(indexes).schema())))

    def _handler(self, indexes: tuple[int, ...]) -> Any:
        return self._pool.get_for_message(message_at(self._file, indexes))

    def decode(self, indexes: tuple[int, ...], bodies: list[bytes]) -> pa.StructArray:
        """Raises ValueError if a message does not parse (the caller bisects)."""
        try:
            batch = self._handler(indexes).list_to_record_batch(bodies)
        except BaseException as exc:  # Rust panics surface as BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise ValueError(f"undecodable Protobuf message: {exc}") from None
        struct = pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))
        return _to_delta(struct, delta_type(struct.type))


def delta_type(t: pa.DataType) -> pa.DataType:
    """Protobuf's Arrow types as a Delta table holds them: no unsigned ints, no durations."""
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(delta_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type), delta_type(t.item_type))
    if pa.types.is_uint64(t):
        return pa.decimal128(20, 0)
    if pa.types.is_unsigned_integer(t):
        return pa.int64()
    if pa.types.is_duration(t):
        return pa.int64()  # microseconds
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    return t


def _to_delta(array: pa.Array, target: pa.DataType) -> pa.Array:
    if array.type == target:
        return array
    if pa.types.is_duration(array.type):
        return array.cast(pa.int64())
    if pa.types.is_struct(target):
        children = [_to_delta(array.field(f.name), f.type) for f in target]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if pa.types.is_list(target):
        values = _to_delta(array.values, target.value_type)
        offsets = pa.array(np.asarray(array.offsets), pa.int32())
        return pa.ListArray.from_arrays(offsets, values, type=target, mask=array.is_null())
    if pa.types.is_map(target):
        offsets = pa.array(np.asarray(array.offsets), pa.int32())
        keys = _to_delta(array.keys, target.key_type)
        items = _to_delta(array.items, target.item_type)
        return pa.MapArray.from_arrays(offsets, keys, items, type=target)
    return array.cast(target)
