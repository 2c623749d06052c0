"""Avro payloads of one writer schema, decoded as one batch.

The payloads of one schema, joined, are exactly the data of one uncompressed block of an Avro
object container file; given a header (the schema, a sync marker) `polars-avro` (arrow-rs's Avro
reader) decodes the whole block at once. The result is then mapped to the types a Delta table
holds (README, "Type mapping"). Schemas of the most common types take a cheaper path instead
(`avro_direct`), with the same result. On the container path each payload is first trimmed to
its record (`avro_block`).
"""

from __future__ import annotations

import io
import json
from typing import Any

import polars as pl
import polars_avro
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array
from connectors.decoding.registry.avro_block import RecordBounds, container
from connectors.decoding.registry.avro_direct import decode_direct, direct_schema
from connectors.decoding.registry.schemas import RegisteredSchema

_PRIMITIVES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


class UnsupportedSchema(Exception):
    """A writer schema with a type no Delta column can hold (named in the message)."""


def writer_schema(registered: RegisteredSchema) -> Any:
    """The schema as one self-contained document: each referenced named type defined inline
    where it is first used (a container file's header cannot refer to other schemas)."""
    named = {}
    for reference in _all_references(registered):
        named[reference.ref] = json.loads(reference.text)
    by_name = {}
    for schema in named.values():
        if isinstance(schema, dict) and "name" in schema:
            by_name[_fullname(schema, None)] = schema
    defined: set[str] = set()
    return _inline(json.loads(registered.text), None, by_name, defined)


def _all_references(registered: RegisteredSchema) -> list[RegisteredSchema]:
    found = []
    for reference in registered.references.values():
        found += [*_all_references(reference), reference]
    return found


def _fullname(schema: dict[str, Any], namespace: str | None) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _inline(schema: Any, namespace: str | None, by_name: dict[str, Any], defined: set[str]) -> Any:
    if isinstance(schema, str):
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        for candidate in (schema, full):
            if candidate in by_name and candidate not in defined:
                return _inline(by_name[candidate], None, by_name, defined)
        return schema
    if isinstance(schema, list):
        return [_inline(branch, namespace, by_name, defined) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
        defined.add(_fullname(schema, namespace))
        namespace = schema.get("namespace", namespace) if "." not in schema["name"] else None
    if "fields" in schema:
        out["fields"] = [
            {**f, "type": _inline(f["type"], namespace, by_name, defined)} for f in schema["fields"]
        ]
    for key in ("items", "values"):
        if key in schema:
            out[key] = _inline(schema[key], namespace, by_name, defined)
    if isinstance(schema.get("type"), dict | list):
        out["type"] = _inline(schema["type"], namespace, by_name, defined)
    return out


def _what(path: str) -> str:
    return f"field {path}" if path else "the value"


def arrow_type(schema: Any, names: dict[str, Any] | None = None, path: str = "") -> pa.DataType:
    """The Arrow (and so Delta) type of an Avro schema; UnsupportedSchema where there is none."""
    names = {} if names is None else names
    where = _what(path)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in names:
            return arrow_type(names[schema], names, path)
        raise UnsupportedSchema(f"{where} refers to unknown type {schema!r}")
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1:
            kinds = ", ".join(b if isinstance(b, str) else str(b.get("type")) for b in branches)
            raise UnsupportedSchema(
                f"{where} is a union of several types ({kinds}), which one Delta "
                'column cannot hold; make it ["null", T] or split it into fields'
            )
        return arrow_type(branches[0], names, path)
    kind, logical = schema.get("type"), schema.get("logicalType")
    if isinstance(kind, dict | list):
        return arrow_type(kind, names, path)
    if kind in ("record", "error"):
        names[str(schema["name"])] = schema
        return pa.struct(
            [
                pa.field(f["name"], arrow_type(f["type"], names, f"{path}.{f['name']}".lstrip(".")))
                for f in schema["fields"]
            ]
        )
    if kind in ("enum", "fixed"):
        names[str(schema["name"])] = schema
    if logical == "decimal":
        return pa.decimal128(int(schema["precision"]), int(schema.get("scale", 0)))
    if logical == "uuid":
        return pa.string()
    if logical in ("timestamp-millis", "timestamp-micros"):
        return pa.timestamp("us", tz="UTC")
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return pa.timestamp("us")
    if logical == "date":
        return pa.date32()
    if logical in ("time-millis", "time-micros"):
        return pa.int64()  # microseconds since midnight: Delta has no time type
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary()
    if kind == "array":
        return pa.list_(arrow_type(schema["items"], names, f"{path}[]"))
    if kind == "map":
        return pa.map_(pa.string(), arrow_type(schema["values"], names, f"{path}{{}}"))
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise UnsupportedSchema(f"{where} has unknown Avro type {kind!r}")


def decode(
    schema: Any, target: pa.StructType, payloads: pa.BinaryArray, bounds: RecordBounds | None = None
) -> pa.StructArray:
    """Decode `payloads` (all written with record `schema`) into a struct array of type `target`.

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
    columns = [
        _convert(one_array(table.column(f.name)), f.type, _field_schema(schema, f.name))
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


def _convert(array: pa.Array, target: pa.DataType, schema: Any) -> pa.Array:
    """polars-avro's array as `target`: uuids as text, times as µs, large types made plain."""
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
            _convert(array.field(f.name), f.type, _field_schema(struct_schema, f.name))
            for f in target
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())
    if pa.types.is_list(target):
        values = _convert(array.values, target.value_type, _items(schema, "items"))
        return pa.ListArray.from_arrays(
            array.offsets.cast(pa.int32()), values, type=target, mask=array.is_null()
        )
    if pa.types.is_map(target):
        items = _convert(array.items, target.item_type, _items(schema, "values"))
        return pa.MapArray.from_arrays(
            array.offsets.cast(pa.int32()), array.keys.cast(pa.string()), items, type=target
        )
    return array.cast(target)


def _record(schema: Any) -> Any:
    if isinstance(schema, list):
        return _record(next(b for b in schema if b != "null"))
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return _record(schema["type"])
    return schema


def _items(schema: Any, key: str) -> Any:
    record = _record(schema)
    return record.get(key) if isinstance(record, dict) else None


def as_record(writer: Any) -> Any:
    """`writer` itself if it is a record, else a record of one field `value` of that type: both
    decoders read only records, and a one-field record's binary encoding is exactly its field's."""
    if isinstance(writer, dict) and writer.get("type") in ("record", "error"):
        return writer
    return {
        "type": "record",
        "name": "waxlake_value",
        "fields": [{"name": "value", "type": writer}],
    }


def _plain_bytes(writer: Any) -> bool:
    """A value schema of plain `bytes`, which Confluent's serializers write as the bytes
    themselves, with no Avro length before them."""
    return bool(writer == "bytes" or writer == {"type": "bytes"})


class AvroBatchDecoder:
    """Decodes the payloads of one Avro writer schema into struct arrays."""

    def __init__(self, schema: RegisteredSchema) -> None:
        writer = writer_schema(schema)
        self._raw = _plain_bytes(writer)
        self._writer = as_record(writer)
        target = arrow_type(self._writer)
        assert pa.types.is_struct(target)
        self.arrow_type: pa.StructType = target
        self._direct = direct_schema(self._writer)
        self._bounds = RecordBounds(self._writer) if self._direct is None else None

    def decode(self, payloads: pa.BinaryArray) -> pa.StructArray:
        if self._raw:
            return pa.StructArray.from_arrays([payloads], fields=list(self.arrow_type))
        if self._direct is not None:
            return decode_direct(self._direct, self.arrow_type, payloads)
        return decode(self._writer, self.arrow_type, payloads, self._bounds)
