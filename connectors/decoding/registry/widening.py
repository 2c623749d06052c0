"""Additive schema evolution: which new writer schemas a table's columns can take.

A schema that adds fields (at any depth), drops some (they read as null) or narrows a number
(int into long, float into double) fits; one that changes a type conflicts, and its records go
to the dead letters naming both schemas.
"""

from __future__ import annotations

import pyarrow as pa


class Conflict(Exception):
    """A writer schema whose types do not fit the table's columns."""


def _name(t: pa.DataType) -> str:
    return str(t).replace("large_", "")


def widen(old: pa.DataType, new: pa.DataType, where: str, ref: str, origin: str) -> pa.DataType:
    """The type a column of type `old` becomes to also hold `new`; Conflict if there is none."""
    if old == new or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        fields = {f.name: f for f in old}
        for field in new:
            at = f"{where}.{field.name}"
            if field.name in fields:
                merged = widen(fields[field.name].type, field.type, at, ref, origin)
                fields[field.name] = pa.field(field.name, merged)
            else:
                fields[field.name] = field
        return pa.struct(list(fields.values()))
    if pa.types.is_list(old) and pa.types.is_list(new):
        return pa.list_(widen(old.value_type, new.value_type, f"{where}[]", ref, origin))
    if pa.types.is_map(old) and pa.types.is_map(new):
        key = widen(old.key_type, new.key_type, f"{where} keys", ref, origin)
        return pa.map_(key, widen(old.item_type, new.item_type, f"{where}{{}}", ref, origin))
    if _narrower(new, old):
        return old
    raise Conflict(
        f"{ref} does not fit the table: {where} is {_name(new)} in it but {_name(old)} in the "
        f"table (from {origin}); evolve the schema compatibly, or land it in another table"
    )


def _narrower(new: pa.DataType, old: pa.DataType) -> bool:
    if pa.types.is_signed_integer(new) and pa.types.is_signed_integer(old):
        return bool(new.bit_width <= old.bit_width)
    if pa.types.is_floating(new) and pa.types.is_floating(old):
        return bool(new.bit_width <= old.bit_width)
    return bool(pa.types.is_string(new) and pa.types.is_large_string(old)) or bool(
        pa.types.is_binary(new) and pa.types.is_large_binary(old)
    )
