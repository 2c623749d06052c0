"""Avro logical types, checked against the types the Avro spec allows them on.

The spec says a reader must ignore an invalid logical type (a `timestamp-millis` on an `int`, a
`decimal` on a `string` or with its scale above its precision) and read the underlying type.
Left in, such a schema stopped the job on every restart (Arrow cannot cast an int32 to a
timestamp), or landed values cast into nonsense (a `long` `time-millis` read as 0), and fastavro
and arrow-rs refuse some outright. So they are stripped from the writer schema before any
decoder or the type mapping sees it. A logical type waxlake does not know is left as it is.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

_ON: dict[str, tuple[str, ...]] = {  # the types each logical type may annotate
    "decimal": ("bytes", "fixed"),
    "big-decimal": ("bytes",),
    "uuid": ("string", "fixed"),
    "date": ("int",),
    "time-millis": ("int",),
    "time-micros": ("long",),
    "timestamp-millis": ("long",),
    "timestamp-micros": ("long",),
    "timestamp-nanos": ("long",),
    "local-timestamp-millis": ("long",),
    "local-timestamp-micros": ("long",),
    "local-timestamp-nanos": ("long",),
    "duration": ("fixed",),
}
_FIXED_SIZE = {"uuid": 16, "duration": 12}
_LOGICAL_KEYS = ("logicalType", "precision", "scale")


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_logical(schema: dict[str, Any]) -> bool:
    """Whether `schema`'s logical type (it has one) may annotate its type, with valid
    parameters: a decimal's precision from 1 (and no more digits than a fixed of its size
    holds) and a scale from 0 to the precision."""
    logical, kind = schema.get("logicalType"), schema.get("type")
    if logical not in _ON:
        return True  # unknown: read as its type anyway
    if not isinstance(kind, str) or kind not in _ON[logical]:
        return False
    size = schema.get("size")
    if kind == "fixed" and logical in _FIXED_SIZE and size != _FIXED_SIZE[logical]:
        return False
    if logical != "decimal":
        return True
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    if not (_whole(precision) and _whole(scale) and 0 <= scale <= precision and precision >= 1):
        return False
    if kind == "fixed":
        digits = (8 * size - 1) * math.log10(2) if _whole(size) and size > 0 else 0
        return precision <= math.floor(digits)  # what a signed integer of `size` bytes holds
    return True


def without_invalid_logical(schema: Any) -> Any:
    """`schema` with every invalid logical type (and its parameters) removed; the encoding is
    the underlying type's either way."""
    if isinstance(schema, list):
        return [without_invalid_logical(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "logicalType" in out and not valid_logical(out):
        for key in _LOGICAL_KEYS:
            out.pop(key, None)
    if "fields" in out and isinstance(out["fields"], list):
        out["fields"] = [
            {**f, "type": without_invalid_logical(f.get("type"))} if isinstance(f, dict) else f
            for f in out["fields"]
        ]
    for key in ("items", "values"):
        if key in out:
            out[key] = without_invalid_logical(out[key])
    if isinstance(out.get("type"), dict | list):
        out["type"] = without_invalid_logical(out["type"])
    return out
