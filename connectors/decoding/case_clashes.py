"""Delta column names ignore case: a field that differs from an earlier one only by case (`OK`
beside `ok`; `geo.Lat` beside `geo.lat`, at any depth) cannot be stored.

`CaseCheck.reject` runs after every decoder: the records holding a value for such a later
field go to the dead letters as `FieldNameConflict`, and the field is dropped from the rows.
Decoders keep every column of their table in their rows (nested fields too), so the earlier
field is the table's whenever the table has it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array
from connectors.delta.dead_letters import Split, reject_decoded

Path = tuple[str, ...]
"""Column, then struct field names; "[]" steps into a list's items, "{}" into a map's values."""


def case_clashes(names: Iterable[str]) -> dict[str, str]:
    """{name: the earlier name it equals ignoring case}, for each later such name."""
    first: dict[str, str] = {}
    clashes = {}
    for name in names:
        earlier = first.setdefault(name.lower(), name)
        if earlier != name:
            clashes[name] = earlier
    return clashes


class CaseCheck:
    """One per table. The fields to drop depend on the rows' schema only, which stays the same
    from batch to batch: they are found again only when it changes (comparing two schemas
    takes well under a microsecond; walking a wide nested one took about 0.1 ms a batch)."""

    def __init__(self) -> None:
        self._schema: pa.Schema | None = None
        self._plan: tuple[pa.DataType, list[tuple[Path, str]]] = (pa.struct([]), [])

    def reject(self, split: Split, raw: pa.Table) -> None:
        rows = split.rows
        if self._schema is None or not rows.schema.equals(self._schema):
            self._schema, self._plan = rows.schema, _pruned(pa.struct(list(rows.schema)))
        pruned, found = self._plan
        if not found:
            return
        for path, earlier in found:
            held = _holds(one_array(rows[path[0]]), path[1:])
            field = ".".join(path).replace(".[]", "[]").replace(".{}", "{}")
            rows = reject_decoded(
                split,
                raw,
                rows,
                pa.array(held),
                "FieldNameConflict",
                f"field {field!r} differs from {earlier!r} beside it only by case, and Delta "
                "column names ignore case; rename one of them where the records are produced",
            )
        kept = pa.schema(list(pruned))
        split.rows = rows.select(kept.names).cast(kept)


def _pruned(t: pa.DataType) -> tuple[pa.DataType, list[tuple[Path, str]]]:
    """`t` without its later case-clashing struct fields, and where those were (each with the
    earlier name)."""
    if pa.types.is_struct(t):
        clashes = case_clashes(f.name for f in t)
        fields: list[pa.Field] = []
        found: list[tuple[Path, str]] = []
        for f in t:
            if f.name in clashes:
                found.append(((f.name,), clashes[f.name]))
                continue
            inner, deeper = _pruned(f.type)
            fields.append(f.with_type(inner))
            found += [((f.name, *p), e) for p, e in deeper]
        return pa.struct(fields), found
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner, deeper = _pruned(t.value_type)
        make = pa.list_ if pa.types.is_list(t) else pa.large_list
        return make(t.value_field.with_type(inner)), [(("[]", *p), e) for p, e in deeper]
    if pa.types.is_map(t):
        inner, deeper = _pruned(t.item_type)
        return pa.map_(t.key_field, t.item_field.with_type(inner)), [
            (("{}", *p), e) for p, e in deeper
        ]
    return t, []


def _holds(array: pa.Array, path: Path) -> np.ndarray:
    """Per element of `array`: whether it holds a value at `path` (in any list item)."""
    valid: np.ndarray = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), bool)
    if not path:
        return valid
    step, rest = path[0], path[1:]
    if step not in ("[]", "{}"):
        assert isinstance(array, pa.StructArray)
        held: np.ndarray = valid & _holds(array.field(step), rest)
        return held
    if step == "{}":
        assert isinstance(array, pa.MapArray)
        array = pa.ListArray.from_arrays(array.offsets, array.items)
    inner = _holds(pc.list_flatten(array), rest)
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    out = np.zeros(len(array), bool)
    np.logical_or.at(out, parents[inner], True)
    return valid & out
