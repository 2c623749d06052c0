"""One decoder per writer schema, whatever its format, behind the same small interface."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import numpy as np
import pyarrow as pa

from connectors.decoding.registry.avro import AvroBatchDecoder
from connectors.decoding.registry.avro_schema import UnsupportedSchema
from connectors.decoding.registry.json_schema import JsonSchemaDecoder
from connectors.decoding.registry.protobuf import ProtobufBatchDecoder, split_indexes
from connectors.decoding.registry.schemas import RegisteredSchema


class Format(Protocol):
    """The payloads of one schema, split by message type where a format has several per schema
    (Protobuf), each part decodable as one batch."""

    def parts(self, payloads: pa.BinaryArray) -> list[tuple[Hashable, np.ndarray, pa.BinaryArray]]:
        """(message type, row indexes into `payloads`, payloads of that type) per type."""
        ...

    def arrow_type(self, part: Hashable) -> pa.StructType: ...

    def decode(self, part: Hashable, payloads: pa.BinaryArray) -> pa.StructArray:
        """ValueError if any payload does not decode."""
        ...


class _Single:
    """Avro and JSON Schema: one message type per schema."""

    def __init__(self, decoder: AvroBatchDecoder | JsonSchemaDecoder) -> None:
        self._decoder = decoder

    def parts(self, payloads: pa.BinaryArray) -> list[tuple[Hashable, np.ndarray, pa.BinaryArray]]:
        return [(None, np.arange(len(payloads)), payloads)]

    def arrow_type(self, part: Hashable) -> pa.StructType:
        return self._decoder.arrow_type

    def decode(self, part: Hashable, payloads: pa.BinaryArray) -> pa.StructArray:
        return self._decoder.decode(payloads)


class _Protobuf:
    def __init__(self, schema: RegisteredSchema) -> None:
        self._decoder = ProtobufBatchDecoder(schema)

    def parts(self, payloads: pa.BinaryArray) -> list[tuple[Hashable, np.ndarray, pa.BinaryArray]]:
        try:
            groups = split_indexes(payloads.to_pylist())
        except IndexError:
            raise ValueError("Protobuf message indexes are cut short") from None
        return [
            (indexes, np.array(rows), pa.array(bodies, pa.binary()))
            for indexes, (rows, bodies) in groups.items()
        ]

    def arrow_type(self, part: Hashable) -> pa.StructType:
        assert isinstance(part, tuple)
        return self._decoder.arrow_type(part)

    def decode(self, part: Hashable, payloads: pa.BinaryArray) -> pa.StructArray:
        assert isinstance(part, tuple)
        return self._decoder.decode(part, payloads.to_pylist())


def format_for(schema: RegisteredSchema) -> Format:
    """The decoder of `schema`; UnsupportedSchema if its type or format cannot be a table."""
    if schema.kind == "AVRO":
        return _Single(AvroBatchDecoder(schema))
    if schema.kind == "JSON":
        return _Single(JsonSchemaDecoder(schema))
    if schema.kind == "PROTOBUF":
        return _Protobuf(schema)
    raise UnsupportedSchema(f"schema {schema.ref} has unknown schema type {schema.kind}")
