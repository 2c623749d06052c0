"""What type a JSON field gets, and whether a parsed value fits its column.

New top-level fields take the type most records give them (ints and floats together: double;
strings that are all ISO date-times: UTC timestamps); nested values are left to Arrow to infer,
then normalised to what a Delta table holds. The fit check is strict (no casts) and cheap, so
that Arrow's reader, which has the last word, rarely fails a batch.
"""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa
import pyarrow.compute as pc

from connectors.decoding.base import storable

_MAJORITY = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _is_timestamp(text: str) -> bool:
    """ISO 8601 date-time, as Arrow's JSON reader infers a timestamp from a string."""
    if len(text) < 19 or text[10] not in "T ":
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    """An ISO 8601 date (YYYY-MM-DD), the one form a date column reads from JSON."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def with_majority_types(fields: pa.Schema, parsed: list[object]) -> pa.Schema:
    """`fields` plus the top-level scalar fields they lack, typed as most records have them
    (ints and floats together: double). Nested values are left for Arrow to infer."""
    seen: dict[str, dict[type, int]] = {}
    stamps: dict[str, bool] = {}  # field -> every string of it is a date-time
    for record in parsed:
        if isinstance(record, dict):
            for name, value in record.items():
                if name not in fields.names and type(value) in _MAJORITY:
                    counts = seen.setdefault(name, {})
                    counts[type(value)] = counts.get(type(value), 0) + 1
                    if isinstance(value, str):
                        stamps[name] = stamps.get(name, True) and _is_timestamp(value)
    for name, counts in seen.items():
        kind = max(counts, key=lambda t: counts[t])
        if kind in (int, float) and int in counts and float in counts:
            kind = float
        arrow = _TIMESTAMP if kind is str and stamps.get(name) else _MAJORITY[kind]
        fields = fields.append(pa.field(name, arrow))
    return fields


def with_date_times(column: pa.StructArray, known: pa.Schema) -> pa.StructArray:
    """`column` with its new top-level string fields that hold only ISO date-times as UTC
    timestamps. Arrow's reader infers a timestamp only without fractions of a second, so the
    type would depend on whether a field's first values had one (the majority rule above, the
    one for all new fields, says timestamp either way)."""
    children, fields, changed = [], [], False
    for index, field in enumerate(column.type):
        child = column.field(index)
        if field.name not in known.names and pa.types.is_string(field.type):
            stamps = _as_timestamps(child)
            if stamps is not None:
                child, field = stamps, pa.field(field.name, _TIMESTAMP, field.nullable)
                changed = True
        children.append(child)
        fields.append(field)
    if not changed:
        return column
    return pa.StructArray.from_arrays(children, fields=fields, mask=pc.is_null(column))


def _as_timestamps(strings: pa.Array) -> pa.Array | None:
    """ISO date-times as UTC timestamps (no zone: UTC), or None if any is not one or they mix
    zoned and zoneless values (which no one cast reads)."""
    present = [text for text in strings.to_pylist() if text is not None]
    if not present or not all(_is_timestamp(text) for text in present):
        return None
    for target in (_TIMESTAMP, pa.timestamp("us")):
        try:
            return pc.cast(strings, target).cast(_TIMESTAMP)
        except pa.ArrowInvalid:
            continue
    return None


def record_errors(parsed: list[object], fields: pa.Schema) -> dict[int, str]:
    """{index: why} of the values that are not one JSON object, or whose known fields do not
    fit their columns. Arrow has the last word: what passes here is still parsed, and bisected
    if it fails."""
    broken = {}
    for index, record in enumerate(parsed):
        if isinstance(record, ValueError):
            broken[index] = f"JSON parse error: {record}"
            continue
        if not isinstance(record, dict):
            broken[index] = f"the value is not a JSON object but {type(record).__name__}"
            continue
        for field in fields:
            problem = _misfit(record.get(field.name), field.type)
            if problem:
                broken[index] = f"field {field.name!r} does not fit its column: {problem}"
                break
    return broken


def _misfit(value: object, kind: pa.DataType) -> str | None:
    """Why a JSON value cannot be a value of `kind` (None: it can, or Arrow must judge)."""
    if value is None:
        return None
    if pa.types.is_integer(kind):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif pa.types.is_floating(kind):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif pa.types.is_boolean(kind):
        ok = isinstance(value, bool)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        ok = isinstance(value, str)
    elif pa.types.is_date(kind):
        ok = isinstance(value, str) and _is_date(value)
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if not isinstance(value, list):
            return f"{kind} expected, got {type(value).__name__}"
        return next((p for v in value if (p := _misfit(v, kind.value_type))), None)
    elif pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return f"{kind} expected, got {type(value).__name__}"
        return next((p for f in kind if (p := _misfit(value.get(f.name), f.type))), None)
    else:
        return None
    return None if ok else f"{kind} expected, got {type(value).__name__} {value!r:.40}"


def normalise(column: pa.StructArray) -> pa.StructArray:
    """Types the table can hold: timestamps in µs UTC; a field only ever null so far is left out
    at the top level and typed string when nested (its first real value decides nothing); an
    object without fields so far is left out at any depth (`storable`)."""
    arrays, fields = [], []
    for index, field in enumerate(column.type):
        child = column.field(index)
        target = None if pa.types.is_null(field.type) else storable(_normal_type(field.type))
        if target is None:
            continue
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
