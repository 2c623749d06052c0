"""The column types Arrow's JSON reader cannot read directly, read as types it can, then built.

The reader reads no date from a string (only days since 1970 from a number) and no map at all.
So a date is read as a string and cast (a string that is not a date fails the value), and a map
(an object of any keys) is rewritten, per value, as a list of {"key", "value"} entries, read as
a list of structs and then made the map. Values of types that need neither keep the one-call path.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from connectors.columns import one_array

_KEY, _VALUE = "key", "value"


def readable(t: pa.DataType, stamps_as_text: bool = False) -> pa.DataType:
    """The type the JSON reader reads for a column of type `t` (`stamps_as_text`: timestamps
    as strings too, for `restore` to parse those the reader cannot)."""
    if pa.types.is_date(t) or (stamps_as_text and pa.types.is_timestamp(t)):
        return pa.string()
    if pa.types.is_map(t):
        item = readable(t.item_type, stamps_as_text)
        return pa.list_(pa.struct([pa.field(_KEY, pa.string()), pa.field(_VALUE, item)]))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(readable(f.type, stamps_as_text)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(readable(t.value_type, stamps_as_text))
    return t


def has_map(t: pa.DataType) -> bool:
    """Whether values of type `t` must be rewritten before the reader sees them."""
    if pa.types.is_map(t):
        return True
    if pa.types.is_struct(t):
        return any(has_map(f.type) for f in t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return has_map(t.value_type)
    return False


def with_entries(values: list[bytes | None], t: pa.DataType) -> list[bytes | None]:
    """Each JSON value with its maps (as typed by `t`) rewritten as lists of entries. A value
    that is not JSON, or not of the shape `t` says, is left for the reader to reject."""
    out: list[bytes | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        try:
            parsed = json.loads(value, strict=False)
        except ValueError:
            out.append(value)
            continue
        out.append(json.dumps(_entries(parsed, t)).encode())
    return out


def _entries(value: Any, t: pa.DataType) -> Any:
    if pa.types.is_map(t) and isinstance(value, dict):
        return [{_KEY: k, _VALUE: _entries(v, t.item_type)} for k, v in value.items()]
    if pa.types.is_struct(t) and isinstance(value, dict):
        kinds = {f.name: f.type for f in t}
        return {k: _entries(v, kinds[k]) if k in kinds else v for k, v in value.items()}
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and isinstance(value, list):
        return [_entries(v, t.value_type) for v in value]
    return value


def restore(array: pa.Array, t: pa.DataType, where: str = "") -> pa.Array:
    """`array`, read as `readable(t)`, as type `t`; children `t` lacks (inferred) kept as read.
    ArrowInvalid, naming the field (`where` is its path), if a string is not a date."""
    if array.type == t:
        return array
    if pa.types.is_date(t):
        try:
            return array.cast(t)
        except pa.ArrowInvalid as exc:
            what = f"field {where!r}" if where else "the value"
            raise pa.ArrowInvalid(f"{what} does not fit its date column: {exc}") from None
    if pa.types.is_timestamp(t) and pa.types.is_string(array.type):
        return _timestamps(array, t, where)
    mask = array.is_null() if array.null_count else None
    if pa.types.is_map(t):
        entries = array.values
        items = restore(entries.field(_VALUE), t.item_type, f"{where}{{}}")
        keys = entries.field(_KEY)
        return pa.MapArray.from_arrays(array.offsets, keys, items, type=t, mask=mask)
    if pa.types.is_struct(t):
        kinds = {f.name: f.type for f in t}
        children = [
            restore(array.field(i), kinds[f.name], f"{where}.{f.name}".lstrip("."))
            if f.name in kinds
            else array.field(i)
            for i, f in enumerate(array.type)
        ]
        names = [f.name for f in array.type]
        return pa.StructArray.from_arrays(children, names=names, mask=mask)
    if pa.types.is_list(t):
        values = restore(array.values, t.value_type, f"{where}[]")
        return pa.ListArray.from_arrays(array.offsets, values, pa.list_(values.type), mask=mask)
    return array.cast(t)


_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _timestamps(strings: pa.Array, t: pa.TimestampType, where: str) -> pa.Array:
    """Timestamps from their strings, the digits of a second finer than `t` cut (.NET writes
    seven, Java's `Instant` up to nine), then read by the JSON reader as it reads timestamps."""
    digits = _DIGITS[t.unit]
    finer = rf"(:\d\d\.\d{{{digits}}})\d+" if digits else r"(:\d\d)\.\d+"
    cut = pc.replace_substring_regex(strings, finer, r"\1")
    quoted = pc.fill_null(pc.binary_join_element_wise('"', cut, '"', ""), "null")
    try:
        return read_wrapped(quoted.cast(pa.binary()), t)
    except pa.ArrowInvalid as exc:
        what = f"field {where!r}" if where else "the value"
        raise pa.ArrowInvalid(f"{what} does not fit its timestamp column: {exc}") from None


def read_wrapped(values: pa.Array, kind: pa.DataType, unexpected: str = "infer") -> pa.Array:
    """Each of `values` (JSON texts) read as a value of type `kind`, in one call of Arrow's JSON
    reader: each is wrapped as `{"v": <value>}`, one line each, so whatever a value holds it is
    exactly one line of one document (ArrowInvalid if one does not fit)."""
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
        explicit_schema=pa.schema([pa.field("v", kind)]),
        unexpected_field_behavior=unexpected,
        newlines_in_values=True,
    )
    table = pj.read_json(pa.BufferReader(data), parse_options=options)
    if table.num_rows != len(values):
        raise pa.ArrowInvalid(f"decoded {table.num_rows} rows from {len(values)} values")
    return one_array(table.column("v")) if table.num_rows else pa.array([], kind)
