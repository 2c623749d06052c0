"""Arrow column helpers: types compared as Delta stores them, and joins without the copies
pyarrow would make.

`ChunkedArray.combine_chunks()` and `pa.concat_arrays()` copy every buffer even when there is
only one piece; on the decoding path that was several copies of each poll's values (a tenth of
the registry flow's CPU at 1 KB records).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Rows = TypeVar("Rows", pa.Table, pa.Array)


def one_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one array: its only chunk as is, else the chunks combined."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def concat(arrays: Sequence[pa.Array], type: pa.DataType) -> pa.Array:
    """`pa.concat_arrays`, without the copy when all rows are in one of them."""
    rows = [a for a in arrays if len(a)]
    if len(rows) == 1:
        return rows[0]
    return pa.concat_arrays(list(arrays)) if arrays else pa.array([], type)


def only_value(column: pa.ChunkedArray | pa.Array) -> Any:
    """The value every row of `column` holds (one pass), or None: no rows, nulls, several."""
    if not len(column) or column.null_count:
        return None
    low, high = pc.min_max(column).values()
    return low.as_py() if low == high else None


def take(data: Rows, indexes: np.ndarray) -> Rows:
    """`data.take(indexes)` (increasing indexes), without the copy when they are every row in
    order (one schema for a whole poll: the usual case)."""
    count = len(data)
    if len(indexes) == count and (count == 0 or (indexes[0] == 0 and indexes[-1] == count - 1)):
        return data
    return data.take(pa.array(indexes))


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal as Delta stores them (timestamps in µs, no large/view distinction)."""

    def norm(t: pa.DataType) -> str:
        text = str(t)
        for old, new in (
            ("large_", ""),
            ("_view", ""),
            ("string_view", "string"),
            ("element", "item"),
        ):
            text = text.replace(old, new)
        return text.replace("timestamp[ms", "timestamp[us")

    return norm(a) == norm(b)


def any_null(rows: pa.Table, columns: Sequence[str]) -> pa.Array:
    """Per row: whether any of `columns` is null (a key with a part missing)."""
    missing = pc.is_null(one_array(rows[columns[0]]))
    for column in columns[1:]:
        missing = pc.or_(missing, pc.is_null(one_array(rows[column])))
    return missing
