"""Kafka Connect's logical types in Debezium's JSON values, applied to the row's columns.

With `schemas.enable` the JSON converter wraps each value as {schema, payload}; the schema names
each field's logical type, which the payload encodes as a plain JSON value: a date as an integer
of days, a timestamp as an integer of milli-, micro- or nanoseconds, a decimal as the base64 of
its unscaled two's-complement bytes. Read as plain JSON they would land as integers and strings;
here they become dates, UTC timestamps (µs: nanoseconds are truncated) and decimals. Times of day
have no Delta type and stay integers; so does a decimal wider than Delta's 38 digits.

A column the table already holds with another type (made before this existed, or from values
without the wrapper) keeps that type: an upgrade never turns good changes into dead letters.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from connectors.columns import same_type

DATES = {"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"}
TIMESTAMP_UNITS = {
    "io.debezium.time.Timestamp": "ms",
    "org.apache.kafka.connect.data.Timestamp": "ms",
    "io.debezium.time.MicroTimestamp": "us",
    "io.debezium.time.NanoTimestamp": "ns",
}
DECIMAL = "org.apache.kafka.connect.data.Decimal"
UTC = pa.timestamp("us", tz="UTC")
ROW_IMAGES = ("before", "after")


@dataclass(frozen=True)
class Logical:
    """One field's logical type, as the wrapper's schema names it."""

    name: str
    scale: int = 0
    precision: int = 38

    @property
    def wire(self) -> pa.DataType:
        """How the JSON converter writes it."""
        return pa.string() if self.name == DECIMAL else pa.int64()

    @property
    def target(self) -> pa.DataType | None:
        """The column type it lands as (None: kept as written)."""
        if self.name in DATES:
            return pa.date32()
        if self.name in TIMESTAMP_UNITS:
            return UTC
        return pa.decimal128(self.precision, self.scale) if self.precision <= 38 else None


def row_types(schemas: Iterable[object]) -> dict[str, Logical]:
    """The logical types of the row's fields (`before`/`after`) in the wrappers' schemas (as
    parsed from JSON)."""
    out: dict[str, Logical] = {}
    for schema in schemas:
        parts = schema.get("fields") if isinstance(schema, dict) else None
        if not isinstance(parts, list):
            continue
        for part in parts:
            if isinstance(part, dict) and part.get("field") in ROW_IMAGES:
                for field in part.get("fields") or []:
                    logical = _logical(field) if isinstance(field, dict) else None
                    if logical is not None and isinstance(field.get("field"), str):
                        out[field["field"]] = logical
    return out


def _logical(field: dict[str, object]) -> Logical | None:
    name = field.get("name")
    if name in DATES or name in TIMESTAMP_UNITS:
        return Logical(str(name))
    if name != DECIMAL:
        return None
    params = field.get("parameters")
    params = params if isinstance(params, dict) else {}
    try:
        scale, precision = (
            int(params.get("scale", 0)),
            int(params.get("connect.decimal.precision", 38)),
        )
    except (TypeError, ValueError):
        return None
    return Logical(DECIMAL, scale, precision) if 0 <= scale <= precision else None


def wire_fields(fields: pa.Schema, logical: Mapping[str, Logical]) -> pa.Schema:
    """The JSON decoder's known envelope with the logical fields as the converter writes them,
    so that values still parse where the table already holds them as dates or timestamps."""
    out = []
    for field in fields:
        if field.name in ROW_IMAGES and pa.types.is_struct(field.type):
            children = [
                c.with_type(logical[c.name].wire)
                if c.name in logical and holds_target(c.type, logical[c.name])
                else c
                for c in field.type
            ]
            field = field.with_type(pa.struct(children))
        out.append(field)
    return pa.schema(out)


def holds_target(held: pa.DataType | None, logical: Logical) -> bool:
    """Whether a column of type `held` (None: no such column yet) takes the logical type, its
    type compared as Delta stores it."""
    target = logical.target
    return target is not None and (held is None or same_type(held, target))


def convert(values: pa.Array, logical: Logical) -> tuple[pa.Array, list[int]]:
    """`values` as the logical type's column, and the rows whose value does not convert."""
    target = logical.target
    assert target is not None
    if values.type == target or pa.types.is_null(values.type):
        return values.cast(target), []
    try:
        return _vector(values, logical, target), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, binascii.Error):
        pass
    converted, bad = [], []
    for i in range(len(values)):
        try:
            converted.append(_vector(values.slice(i, 1), logical, target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, binascii.Error):
            converted.append(pa.nulls(1, target))
            bad.append(i)
    return pa.concat_arrays(converted), bad


def _vector(values: pa.Array, logical: Logical, target: pa.DataType) -> pa.Array:
    if logical.name in DATES:
        return values.cast(pa.int32()).cast(target)
    if logical.name in TIMESTAMP_UNITS:
        unit = TIMESTAMP_UNITS[logical.name]
        stamps = values.cast(pa.int64()).cast(pa.timestamp(unit, tz="UTC"))
        return stamps.cast(target, safe=unit != "ns")
    digits = [
        None
        if v is None
        else int.from_bytes(base64.b64decode(v, validate=True), "big", signed=True)
        for v in values.cast(pa.string()).to_pylist()
    ]
    return pa.array(
        [None if n is None else Decimal(f"{n}e-{logical.scale}") for n in digits], target
    )
