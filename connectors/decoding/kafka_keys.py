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
        try:
            found = pa.array([d.get(column) if d else None for d in documents])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue  # mixed types: no row gets this field
        target = found.type if pa.types.is_null(current.type) else current.type
        try:
            found = found.cast(target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
        filled = pc.replace_with_mask(current.cast(target), fill, found)
        rows = rows.set_column(rows.schema.get_field_index(column), column, filled)
    return rows
