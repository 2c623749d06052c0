"""Decoding Kafka values into table rows, per flow: raw bytes, or JSON into typed columns.

The JSON path is vectorised: every value of a batch is wrapped as `{"v": <value>}` (so each value
is exactly one line of one JSON document, whatever it contains) and the batch is parsed in one
call by Arrow's JSON reader against the table's schema. Types are strict: a value that does not
fit its column (`2.5` for an integer, `5` for a string) fails instead of being cast. Only when a
batch fails is it bisected, so the cost of finding k bad records among n is O(k log n) parses.
New fields are inferred and added to the table (additive schema evolution).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import yaml

from connectors.config import ConfigError
from connectors.dead_letters import Split, reject_oversized
from connectors.records import SCHEMA

METADATA_COLUMNS = ["topic", "partition", "offset", "timestamp", "key", "headers"]
TOMBSTONE_COLUMN = "is_tombstone"
RESERVED = {*SCHEMA.names, TOMBSTONE_COLUMN}


class Decoder(Protocol):
    """Turns a raw batch (record schema) into table rows and dead letters."""

    evolves_schema: bool

    def split(self, raw: pa.Table) -> Split: ...


class RawDecoder:
    """The raw flow: every record is a row as it is; only oversized records are rejected."""

    evolves_schema = False

    def __init__(self, max_record_bytes: int) -> None:
        self._max = max_record_bytes

    def split(self, raw: pa.Table) -> Split:
        split = Split(rows=raw)
        split.rows = reject_oversized(split, raw, self._max)
        return split


class JsonDecoder:
    """The decoded flow: Kafka metadata columns, `is_tombstone`, then one column per JSON field."""

    evolves_schema = True

    def __init__(self, max_record_bytes: int, fields: pa.Schema | None = None) -> None:
        self._max = max_record_bytes
        self.fields = fields if fields is not None else pa.schema([])

    def split(self, raw: pa.Table) -> Split:
        split = Split(rows=raw)
        rest = reject_oversized(split, raw, self._max)
        tombstones = rest.filter(pc.is_null(rest["value"]))
        values = rest.filter(pc.is_valid(rest["value"]))

        values = self._reject_invalid_utf8(split, values)
        decoded, bad = self._decode(values["value"])
        if bad:
            n = values.num_rows
            classes = pa.array(
                [_classify(bad[i]) if i in bad else None for i in range(n)], pa.string()
            )
            messages = pa.array([bad.get(i, "") for i in range(n)], pa.string())
            for error_class in sorted(set(classes.drop_null().to_pylist())):
                split.reject(
                    values,
                    pc.fill_null(pc.equal(classes, error_class), False),
                    error_class,
                    messages,
                )
            values = values.filter(pc.is_null(classes))
        split.rows = self._rows(values, decoded, tombstones)
        return split

    def _reject_invalid_utf8(self, split: Split, values: pa.Table) -> pa.Table:
        try:
            values["value"].cast(pa.string())
            return values
        except pa.ArrowInvalid:
            pass  # find which: only for a batch that has one
        valid = []
        for value in values["value"].to_pylist():
            try:
                value.decode("utf-8")
                valid.append(True)
            except UnicodeDecodeError:
                valid.append(False)
        bad = pc.invert(pa.array(valid))
        return split.reject(values, bad, "InvalidJson", "value is not valid UTF-8")

    def _decode(self, values: pa.ChunkedArray) -> tuple[list[pa.StructArray], dict[int, str]]:
        """Decode in order; returns the decoded chunks and {row index: error} of rejected rows."""
        chunks: list[pa.StructArray] = []
        bad: dict[int, str] = {}

        def visit(start: int, stop: int) -> None:
            if start == stop:
                return
            try:
                chunks.append(self._parse(values.slice(start, stop - start)))
            except pa.ArrowInvalid as exc:
                if stop - start == 1:
                    bad[start] = _message(exc)
                    return
                middle = (start + stop) // 2
                visit(start, middle)
                visit(middle, stop)

        visit(0, len(values))
        return chunks, bad

    def _parse(self, values: pa.ChunkedArray) -> pa.StructArray:
        """Parse values that must all fit the known fields; new fields widen `self.fields`."""
        column = read_json_objects(values, pa.struct(list(self.fields)), unexpected="infer")
        column = _normalise(column)
        for child in column.type:
            if child.name not in self.fields.names:
                self.fields = self.fields.append(child)
            elif self.fields.field(child.name).type != child.type:
                # Only widening is possible here (new nested fields): earlier chunks are
                # conformed to it with nulls.
                index = self.fields.get_field_index(child.name)
                self.fields = self.fields.set(index, child)
        return column

    def _rows(
        self, values: pa.Table, decoded: list[pa.StructArray], tombstones: pa.Table
    ) -> pa.Table:
        """Metadata columns + tombstone flag + one column per field (renamed if reserved)."""
        fields = [pa.field(_column_name(f.name), f.type) for f in self.fields]
        parts = []
        for table, struct_chunks, is_tombstone in (
            (values, decoded, False),
            (tombstones, [], True),
        ):
            columns = {name: table[name] for name in METADATA_COLUMNS}
            columns[TOMBSTONE_COLUMN] = pa.repeat(pa.scalar(is_tombstone), table.num_rows)
            by_name = _by_field(struct_chunks, self.fields, table.num_rows)
            for field, source in zip(fields, self.fields, strict=True):
                columns[field.name] = by_name[source.name]
            parts.append(pa.table(columns))
        rows = pa.concat_tables(parts)
        return rows.sort_by([("partition", "ascending"), ("offset", "ascending")])


def read_json_objects(
    values: pa.ChunkedArray | pa.Array, struct: pa.StructType, unexpected: str
) -> pa.StructArray:
    """Parse every value as one JSON object of type `struct`, in one call (ArrowInvalid if any
    does not fit). Each value is wrapped as `{"v": <value>}`, one line each, so whatever a value
    holds it is exactly one line of one document. `unexpected`: "infer" or "ignore" fields."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    lines = pc.binary_join_element_wise(b'{"v":', values, b"}\n", b"")
    offsets = pa.Array.from_buffers(
        pa.int32(), len(lines) + 1, [None, lines.buffers()[1]], offset=lines.offset
    )
    data = (
        lines.buffers()[2][offsets[0].as_py() : offsets[-1].as_py()]
        if len(lines)
        else pa.py_buffer(b"")
    )
    options = pj.ParseOptions(
        explicit_schema=pa.schema([pa.field("v", struct)]),
        unexpected_field_behavior=unexpected,
        newlines_in_values=True,
    )
    table = pj.read_json(pa.BufferReader(data), parse_options=options)
    column = table.column("v").combine_chunks() if table.num_rows else pa.array([], struct)
    if table.num_rows != len(values):
        raise pa.ArrowInvalid(f"decoded {table.num_rows} rows from {len(values)} values")
    if column.null_count:
        raise pa.ArrowInvalid("value is JSON null, not an object")
    return column


def _by_field(
    chunks: list[pa.StructArray], fields: pa.Schema, length: int
) -> dict[str, pa.ChunkedArray]:
    """Each field's values across decoded chunks; chunks decoded before a field appeared get nulls."""
    out = {}
    for field in fields:
        pieces = []
        for chunk in chunks:
            names = [f.name for f in chunk.type]
            if field.name in names:
                pieces.append(conform(chunk.field(names.index(field.name)), field.type))
            else:
                pieces.append(pa.nulls(len(chunk), field.type))
        out[field.name] = (
            pa.chunked_array(pieces, field.type)
            if pieces
            else pa.chunked_array([pa.nulls(length, field.type)], field.type)
        )
    return out


def conform(array: pa.Array, target: pa.DataType) -> pa.Array:
    """`array` as `target`, where `target` may have struct fields `array` lacks (then null)."""
    if array.type == target:
        return array
    if pa.types.is_struct(target) and pa.types.is_struct(array.type):
        names = [f.name for f in array.type]
        children = [
            conform(array.field(names.index(f.name)), f.type)
            if f.name in names
            else pa.nulls(len(array), f.type)
            for f in target
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=pc.is_null(array))
    return array.cast(target)


def _normalise(column: pa.StructArray) -> pa.StructArray:
    """Types the table can hold: timestamps in µs UTC; a field only ever null so far is left out
    at the top level and typed string when nested (its first real value decides nothing)."""
    arrays, fields = [], []
    for index, field in enumerate(column.type):
        child = column.field(index)
        if pa.types.is_null(field.type):
            continue
        target = _normal_type(field.type)
        arrays.append(child.cast(target) if target != field.type else child)
        fields.append(pa.field(field.name, target))
    if not fields:
        return pa.array([{}] * len(column), pa.struct([]))
    return pa.StructArray.from_arrays(arrays, fields=fields)


def _normal_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _normal_type(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_normal_type(t.value_type))
    return t


def _column_name(field: str) -> str:
    return f"value_{field}" if field in RESERVED else field


def _message(exc: Exception) -> str:
    text = re.sub(r" in row \d+$", "", str(exc))
    text = text.replace("Column(/v) changed from object to", "the value is not a JSON object but")
    return text.replace("Column(/v/", "field (/")


def _classify(message: str) -> str:
    """TypeConflict: valid JSON whose field does not fit the table's type; else InvalidJson."""
    if "not a JSON object" in message:
        return "InvalidJson"
    if "changed from" in message or "Failed to convert" in message or "couldn't parse" in message:
        return "TypeConflict"
    return "InvalidJson"


# -- schemas named by WAXLAKE_SCHEMA -----------------------------------------------------------

_TYPE_NAMES: Mapping[str, Callable[[], pa.DataType]] = {
    "string": pa.string,
    "str": pa.string,
    "int": pa.int64,
    "int64": pa.int64,
    "long": pa.int64,
    "int32": pa.int32,
    "integer": pa.int32,
    "float": pa.float64,
    "double": pa.float64,
    "float64": pa.float64,
    "float32": pa.float32,
    "bool": pa.bool_,
    "boolean": pa.bool_,
    "timestamp": lambda: pa.timestamp("us", tz="UTC"),
    "date": pa.date32,
}


def load_schema(spec: str) -> pa.Schema:
    """Fields given by `WAXLAKE_SCHEMA`: a .json/.yaml file {field: type} or `module:attribute`
    naming a polars schema (a `pl.Schema` or a dict of polars dtypes)."""
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            text = path.read_text()
            mapping = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"WAXLAKE_SCHEMA: cannot read {spec}: {exc}") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"WAXLAKE_SCHEMA: {spec} must map field names to types")
        return pa.schema(
            [
                pa.field(str(name), _type_from_name(str(name), value))
                for name, value in mapping.items()
            ]
        )
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
        return pl.DataFrame(schema=dict(target)).to_arrow().schema
    except Exception as exc:
        raise ConfigError(
            f"WAXLAKE_SCHEMA: {spec!r} is neither a .json/.yaml schema file nor module:attribute "
            f"naming a polars schema ({exc})"
        ) from None


def _type_from_name(field: str, value: Any) -> pa.DataType:
    if isinstance(value, str) and value.lower() in _TYPE_NAMES:
        return _TYPE_NAMES[value.lower()]()
    if isinstance(value, list) and len(value) == 1:
        return pa.list_(_type_from_name(field, value[0]))
    if isinstance(value, dict):
        return pa.struct([pa.field(str(k), _type_from_name(str(k), v)) for k, v in value.items()])
    raise ConfigError(
        f"WAXLAKE_SCHEMA: field {field!r} has unknown type {value!r}; use one of "
        f"{', '.join(sorted(_TYPE_NAMES))}, [type] for a list or {{name: type}} for an object"
    )


def decoded_fields(table_schema: pa.Schema) -> pa.Schema:
    """The JSON fields of an existing decoded table (its columns after the metadata)."""
    fields = [f for f in table_schema if f.name not in RESERVED]
    return pa.schema(
        [
            pa.field(
                f.name.removeprefix("value_")
                if f.name.removeprefix("value_") in RESERVED
                else f.name,
                _small(f.type),
            )
            for f in fields
        ]
    )


def _small(t: pa.DataType) -> pa.DataType:
    """Plain Arrow types the JSON reader accepts (Delta may hand out large/view variants)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(_small(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _small(f.type)) for f in t])
    return t
