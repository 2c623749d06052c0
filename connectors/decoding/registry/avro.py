"""Avro payloads of one writer schema, decoded as one batch.

The payloads of one schema, joined, are exactly the data of one uncompressed block of an Avro
object container file; given a header (the schema, a sync marker) `polars-avro` (arrow-rs's Avro
reader) decodes the whole block at once. The result is then mapped to the types a Delta table
holds (README, "Type mapping"). Schemas of the most common types take a cheaper path instead
(`avro_direct`), with the same result. On the container path each payload is first trimmed to
its record (`avro_block`).
"""

from __future__ import annotations

import decimal
import io
from typing import Any

import polars as pl
import polars_avro
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array
from connectors.decoding.registry.avro_block import RecordBounds, container
from connectors.decoding.registry.avro_direct import decode_direct, direct_schema
from connectors.decoding.registry.avro_schema import (
    arrow_type,
    as_record,
    expanded,
    plain_bytes,
    writer_schema,
)
from connectors.decoding.registry.schemas import RegisteredSchema


def decode(
    schema: Any,
    target: pa.StructType,
    payloads: pa.BinaryArray,
    bounds: RecordBounds | None = None,
    walked: Any = None,
) -> pa.StructArray:
    """Decode `payloads` (all written with record `schema`) into a struct array of type `target`
    (`walked`: `expanded(schema)`, if known).

    Raises ValueError if any payload does not decode (the caller bisects to find which)."""
    try:
        payloads = (bounds or RecordBounds(schema)).trimmed(payloads)
    except ValueError as exc:
        raise ValueError(f"undecodable Avro payload: {exc}") from None
    try:
        # batch_size sizes the builders: a large one left every decoded poll holding buffers
        # sized for a million rows (RSS grew to 3.8 GB on 1 KB records)
        data = io.BytesIO(container(schema, payloads))
        frame = polars_avro.read_avro(data, batch_size=max(1, len(payloads)))
    except BaseException as exc:  # arrow-rs panics surface as BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ValueError(f"undecodable Avro payload: {type(exc).__name__}: {exc}") from None
    if frame.height != len(payloads):
        raise ValueError(f"decoded {frame.height} records from {len(payloads)} payloads")
    table = frame.to_arrow()
    schema = expanded(schema) if walked is None else walked
    columns = [
        _convert(one_array(table.column(f.name)), f.type, _field_schema(schema, f.name), f.name)
        for f in target
    ]
    return pa.StructArray.from_arrays(columns, fields=list(target))


def _field_schema(schema: Any, name: str) -> Any:
    if isinstance(schema, dict) and "fields" in schema:
        return next(f["type"] for f in schema["fields"] if f["name"] == name)
    return schema


def _logical(schema: Any) -> str | None:
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        return _logical(branches[0]) if branches else None
    if isinstance(schema, dict):
        inner = schema.get("type")
        return schema.get("logicalType") or (_logical(inner) if isinstance(inner, dict) else None)
    return None


def _convert(array: pa.Array, target: pa.DataType, schema: Any, path: str) -> pa.Array:
    """polars-avro's array as `target`: uuids as text, times as µs, large types made plain;
    ValueError naming the field (at `path`) if a decimal has more digits than its precision."""
    if isinstance(array, pa.DictionaryArray):
        array = array.cast(array.type.value_type)
    logical = _logical(schema)
    binary = pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)
    if logical == "uuid" and binary:
        hexed = pl.col("u").bin.encode("hex")
        parts = [
            hexed.str.slice(a, b - a) for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
        ]
        frame = pl.DataFrame({"u": pl.from_arrow(array)})
        text = frame.select(pl.concat_str(parts, separator="-")).to_series()
        return text.to_arrow().cast(pa.string())
    if logical in ("time-millis", "time-micros"):
        return pc.divide(array.cast(pa.time64("ns")).cast(pa.int64()), 1000)
    if pa.types.is_struct(target):
        struct_schema = _record(schema)
        children = [
            _convert(
                array.field(f.name),
                f.type,
                _field_schema(struct_schema, f.name),
                f"{path}.{f.name}",
            )
            for f in target
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if pa.types.is_list(target):
        values = _convert(array.values, target.value_type, _items(schema, "items"), f"{path}[]")
        return pa.ListArray.from_arrays(
            array.offsets.cast(pa.int32()), values, type=target, mask=array.is_null()
        )
    if pa.types.is_map(target):
        items = _convert(array.items, target.item_type, _items(schema, "values"), f"{path}{{}}")
        return pa.MapArray.from_arrays(
            array.offsets.cast(pa.int32()), array.keys.cast(pa.string()), items, type=target
        )
    if pa.types.is_decimal(target):
        _check_precision(array, target, path)
    return array.cast(target)


def _check_precision(array: pa.Array, target: pa.Decimal128Type, path: str) -> None:
    """arrow-rs reads a decimal's unscaled bytes up to 16 whatever its precision, and Arrow
    does not check it: a decimal(4, 2) holding 999.99 landed as another number. Compared in
    decimal256, where the bound 10^p fits even for p = 38 (0.03 µs a value)."""
    wide = pa.decimal256(76, target.scale)
    values = array.cast(wide)
    bound = pa.scalar(decimal.Decimal(10**target.precision).scaleb(-target.scale), wide)
    outside = pc.or_(pc.greater_equal(values, bound), pc.less_equal(values, pc.negate(bound)))
    if pc.any(outside).as_py():
        raise ValueError(
            f"undecodable Avro payload: field {path} holds a decimal of more digits than its "
            f"decimal({target.precision}, {target.scale})"
        )


def _record(schema: Any) -> Any:
    if isinstance(schema, list):
        return _record(next(b for b in schema if b != "null"))
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return _record(schema["type"])
    return schema


def _items(schema: Any, key: str) -> Any:
    record = _record(schema)
    return record.get(key) if isinstance(record, dict) else None


class AvroBatchDecoder:
    """Decodes the payloads of one Avro writer schema into struct arrays."""

    def __init__(self, schema: RegisteredSchema) -> None:
        writer = writer_schema(schema)
        self._raw = plain_bytes(writer)
        self._writer = as_record(writer)
        self._walked = expanded(self._writer)
        target = arrow_type(self._walked)
        assert pa.types.is_struct(target)
        self.arrow_type: pa.StructType = target
        self._direct = direct_schema(self._writer)
        self._bounds = RecordBounds(self._writer) if self._direct is None else None

    def decode(self, payloads: pa.BinaryArray) -> pa.StructArray:
        if self._raw:
            return pa.StructArray.from_arrays([payloads], fields=list(self.arrow_type))
        if self._direct is not None:
            return decode_direct(self._direct, self.arrow_type, payloads)
        return decode(self._writer, self.arrow_type, payloads, self._bounds, self._walked)
