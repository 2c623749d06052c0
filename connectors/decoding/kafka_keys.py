"""Key fields taken from the Kafka key, for deletes whose value holds none (a tombstone).

Debezium and Kafka Connect's JSON converter write the row's key as a JSON object in the Kafka
key (with or without the converter's `schema`/`payload` wrapper); a tombstone carries only that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import any_null, one_array


def key_document(key: bytes | None) -> dict[str, Any] | None:
    """The JSON object of a Kafka key (unwrapped from `payload`), or None if it is not one."""
    if key is None:
        return None
    try:
        document = json.loads(key)
    except (ValueError, UnicodeDecodeError):
        return None
    wrapped = isinstance(document, dict) and "schema" in document
    if wrapped and isinstance(document.get("payload"), dict):
        document = document["payload"]
    return document if isinstance(document, dict) else None


def fill_from_kafka_key(rows: pa.Table, columns: Sequence[str], where: pa.Array) -> pa.Table:
    """`rows` with the null key `columns` of the rows `where` holds filled from their Kafka key
    (a value that does not fit the column's type stays null)."""
    fill = pc.and_(pc.fill_null(where, False), any_null(rows, columns))
    if not pc.any(fill).as_py():
        return rows
    documents = [key_document(k) for k in rows["key"].filter(fill).to_pylist()]
    for column in columns:
        current = one_array(rows[column])
        values = [d.get(column) if d else None for d in documents]
        target = None if pa.types.is_null(current.type) else current.type
        found = _as_column(values, target)
        if found is None:
            continue
        filled = pc.replace_with_mask(current.cast(found.type), fill, found)
        rows = rows.set_column(rows.schema.get_field_index(column), column, filled)
    return rows


_UNFIT = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _as_column(values: list[Any], target: pa.DataType | None) -> pa.Array | None:
    """`values` as an array of `target` (None: the type they have), each value that does not
    fit null: one bad key must not cost the others theirs. None if no value fits."""
    try:
        array = pa.array(values)
        if target is not None:
            return array.cast(target)
        if not pa.types.is_nested(array.type):  # a key field holds scalars
            return array
    except _UNFIT:
        pass  # find which: only for a batch that has one
    fitted: list[pa.Array] = []
    for value in values:
        try:
            one = pa.array([value])
            if target is None and pa.types.is_nested(one.type):
                raise pa.ArrowInvalid("not a scalar")
            fitted.append(one if target is None else one.cast(target))
        except _UNFIT:
            fitted.append(pa.nulls(1))
        if target is None and not pa.types.is_null(fitted[-1].type):
            target = fitted[-1].type
    if target is None:
        return None
    return pa.concat_arrays([a.cast(target) if a.type != target else a for a in fitted])
