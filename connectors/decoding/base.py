"""What every decoder shares: the protocol, the Kafka metadata columns, and conforming arrays."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from connectors.decoding.naming import Naming
from connectors.delta.dead_letters import Split
from connectors.kafka.records import SCHEMA

METADATA_COLUMNS = ["topic", "partition", "offset", "timestamp", "key", "headers"]
TOMBSTONE_COLUMN = "is_tombstone"
RESERVED = {*SCHEMA.names, TOMBSTONE_COLUMN}
VALUE_NAMING = Naming(frozenset(RESERVED))
"""How the decoded flows name a value's fields: `value_<name>` for the names above."""


class Decoder(Protocol):
    """Turns a raw batch (record schema) into table rows and dead letters."""

    evolves_schema: bool

    def split(self, raw: pa.Table) -> Split: ...


DecoderFactory = Callable[[str], Decoder]
"""Builds the decoder of one table (by table name); each table's decoder lives on one worker."""


def by_field(
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


def storable(t: pa.DataType) -> pa.DataType | None:
    """`t` without what Parquet cannot store: a struct without fields (an empty JSON object,
    Protobuf's `Empty`, an Avro record of no fields) is left out of its parent, and so is a list
    or map of them; None if nothing is left. `conform` (or a cast) then drops their values."""
    if pa.types.is_struct(t):
        kept = [(f, storable(f.type)) for f in t]
        fields = [pa.field(f.name, s, f.nullable) for f, s in kept if s is not None]
        return pa.struct(fields) if fields else None
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = storable(t.value_type)
        return None if inner is None else pa.list_(t.value_field.with_type(inner))
    if pa.types.is_map(t):
        item = storable(t.item_type)
        return None if item is None else pa.map_(t.key_type, t.item_field.with_type(item))
    return t


def storable_fields(t: pa.StructType) -> pa.StructType:
    """A value's fields as columns: those `storable` keeps (maybe none)."""
    return storable(t) or pa.struct([])


MAX_DEPTH = 32
"""Levels of structs, lists and maps a value may nest (its own record or object is the first):
far beyond real data, and within what Arrow passes to delta-rs (its C data interface refuses a
schema nested about 64 levels deep, and a map takes two). Deeper values are dead letters."""


def nesting_depth(t: pa.DataType) -> int:
    """Levels of `t` above its scalars (a struct of scalars: 1), counted without recursion."""
    depth, level = 0, [t]
    while level:
        nested = [c for c in level if c.num_fields]
        depth += bool(nested)
        level = [child.field(i).type for child in nested for i in range(child.num_fields)]
    return depth
