"""The registry flow's decoder: rows of a batch grouped by writer schema, each group decoded at
once, the table's columns widened by schemas that add fields, and every record that cannot be a
row sent to the dead letters with the reason (bad framing, unknown or unsupported schema,
undecodable payload, a schema that conflicts with the table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import concat, one_array, take
from connectors.decoding.base import MAX_DEPTH, conform, nesting_depth, storable_fields
from connectors.decoding.base import RESERVED as BASE_RESERVED
from connectors.decoding.naming import Naming
from connectors.decoding.registry.avro_schema import UnsupportedSchema
from connectors.decoding.registry.formats import Format, format_for
from connectors.decoding.registry.framing import Group, payloads, read_framing
from connectors.decoding.registry.schemas import SchemaSource, UnknownSchema
from connectors.decoding.registry.widening import Conflict, widen
from connectors.delta.dead_letters import Split

log = logging.getLogger(__name__)

SCHEMA_ID_COLUMN = "schema_id"
KEY_PREFIX = "key_"
VALUE_HEADER = "__value_schema_id"
KEY_HEADER = "__key_schema_id"
RESERVED = {*BASE_RESERVED, SCHEMA_ID_COLUMN}
NAMING = Naming(frozenset(RESERVED), (KEY_PREFIX,))
"""A value field named like those, or starting `key_` (the decoded keys' prefix): `value_<name>`."""


def bisect(
    count: int, decode: Callable[[int, int], pa.StructArray]
) -> tuple[list[tuple[int, int, pa.StructArray]], dict[int, str]]:
    """Decode rows [0, count) at once; where that fails, halves, to pin down the bad rows in
    O(k log n) decodes. Returns the decoded (start, stop, struct) slices in order and
    {row: error}.

    A loop, not a recursive closure: the closure's reference cycle kept every poll's payloads
    and decoded arrays alive until a full garbage collection (RSS grew by the records read)."""
    good: list[tuple[int, int, pa.StructArray]] = []
    bad: dict[int, str] = {}
    pending = [(0, count)] if count else []
    while pending:
        start, stop = pending.pop()
        try:
            good.append((start, stop, decode(start, stop)))
        except ValueError as exc:
            if stop - start == 1:
                bad[start] = str(exc)
                continue
            middle = (start + stop) // 2
            pending += [(middle, stop), (start, middle)]  # the first half next: rows in order
    return good, bad


class ColumnDecoder:
    """Decodes one binary column (value or key) of the rows; its fields only ever widen."""

    def __init__(self, source: SchemaSource, column: str, header: str, fields: pa.Schema) -> None:
        self._source = source
        self._column = column
        self._header = header
        self.fields = fields
        self._formats: dict[tuple[str, int | str], Format] = {}
        self._origin: dict[str, str] = {}  # field -> the schema that brought it, this run

    def decode(self, rows: pa.Table, split: Split) -> tuple[pa.Table, pa.StructArray, pa.Array]:
        """Rows that decoded (null values pass as null structs), their decoded struct, and
        the schema id of each; rows that did not go to `split`'s dead letters."""
        values = one_array(rows[self._column])
        headers = one_array(rows["headers"])
        present = np.asarray(values.is_valid())
        framed, framed_headers = values, headers
        if values.null_count:
            framed, framed_headers = values.filter(present), headers.filter(present)
        framing = read_framing(framed, framed_headers, self._header, self._column)
        where = np.nonzero(present)[0]
        kept: list[pa.Table] = [rows.filter(pc.invert(values.is_valid()))]
        chunks: list[pa.StructArray] = []
        ids: list[pa.Array] = [pa.nulls(kept[0].num_rows, pa.int32())]
        problems = {int(where[i]): f"{self._column}: {m}" for i, m in framing.problems.items()}
        self._reject(split, rows, list(problems), "BadFraming", problems)
        for group in framing.groups:
            group_rows = where[group.rows]
            for table, struct, schema_id in self._decode_group(
                rows, framing.values, group, group_rows, split
            ):
                kept.append(table)
                chunks.append(struct)
                ids.append(pa.repeat(pa.scalar(schema_id, pa.int32()), table.num_rows))
        target = pa.struct(list(self.fields))
        decoded = [pa.nulls(kept[0].num_rows, target)] + [conform(c, target) for c in chunks]
        return (
            pa.concat_tables(kept),
            concat(decoded, target),
            concat(ids, pa.int32()),
        )

    def _decode_group(
        self,
        rows: pa.Table,
        values: pa.Array,
        group: Group,
        group_rows: np.ndarray,
        split: Split,
    ) -> list[tuple[pa.Table, pa.StructArray, int | None]]:
        ref = f"schema {group.kind} {group.ref}"
        try:
            fmt, schema_id = self._format(group)
        except UnknownSchema as exc:
            self._reject(split, rows, group_rows, "UnknownSchema", f"{self._what()}: {exc}")
            return []
        except UnsupportedSchema as exc:
            self._reject(split, rows, group_rows, "UnsupportedSchema", f"{self._what()}: {exc}")
            return []
        raw = payloads(values, group.rows, group.prefix)  # `values`: the framing's (non-null)
        try:
            parts = fmt.parts(raw)
        except ValueError as exc:
            self._reject(split, rows, group_rows, "InvalidPayload", f"{self._what()}: {exc}")
            return []
        out = []
        for part, local, part_payloads in parts:
            part_rows = group_rows[local]
            try:
                self._evolve(self._columns(fmt, part), ref)
            except Conflict as exc:
                self._reject(split, rows, part_rows, "SchemaConflict", f"{self._what()}: {exc}")
                continue
            except UnsupportedSchema as exc:
                self._reject(split, rows, part_rows, "UnsupportedSchema", f"{self._what()}: {exc}")
                continue
            except ValueError as exc:  # the payloads name no message of their schema
                self._reject(split, rows, part_rows, "InvalidPayload", f"{self._what()}: {exc}")
                continue
            good, bad = bisect(
                len(part_payloads),
                lambda a, b, p=part, d=part_payloads: fmt.decode(p, d.slice(a, b - a)),  # type: ignore[misc]
            )
            if bad:
                messages = {
                    int(part_rows[i]): f"{self._what()} ({ref}): {m}" for i, m in bad.items()
                }
                self._reject(split, rows, part_rows[list(bad)], "InvalidPayload", messages)
            for start, stop, struct in good:
                out.append((take(rows, part_rows[start:stop]), struct, schema_id))
        return out

    def _format(self, group: Group) -> tuple[Format, int | None]:
        key = (group.kind, group.ref)
        schema = (
            self._source.by_id(int(group.ref))
            if group.kind == "id"
            else self._source.by_guid(str(group.ref))
        )
        if key not in self._formats:
            try:
                self._formats[key] = format_for(schema)
            except UnsupportedSchema:
                raise
            except Exception as exc:  # a schema the mapping trips on must not stop the job
                raise UnsupportedSchema(
                    f"schema {schema.ref} cannot be mapped to columns: {type(exc).__name__}: {exc}"
                ) from exc
        return self._formats[key], schema.schema_id

    @staticmethod
    def _columns(fmt: Format, part: Hashable) -> pa.StructType:
        """The fields a part's values add to the table: what Parquet stores, not too deep."""
        fields = storable_fields(fmt.arrow_type(part))
        if nesting_depth(fields) > MAX_DEPTH:
            raise UnsupportedSchema(
                f"the schema nests deeper than {MAX_DEPTH} levels, more than a table can hold"
            )
        return fields

    def _evolve(self, decoded: pa.StructType, ref: str) -> None:
        """Widen the fields by `decoded` (new fields, nested or not), or raise Conflict."""
        fields = self.fields
        for field in decoded:
            if field.name not in fields.names:
                fields = fields.append(field)
                self._origin[field.name] = ref
                continue
            current = fields.field(field.name)
            origin = self._origin.get(field.name, "the existing table")
            merged = widen(current.type, field.type, f"field {field.name!r}", ref, origin)
            fields = fields.set(fields.get_field_index(field.name), pa.field(field.name, merged))
        self.fields = fields

    def _what(self) -> str:
        return self._column

    @staticmethod
    def _reject(
        split: Split,
        rows: pa.Table,
        indexes: np.ndarray | list[int],
        error_class: str,
        message: str | dict[int, str],
    ) -> None:
        """Dead-letter `rows[indexes]`; they are dropped from the rows by index later."""
        indexes = np.asarray(indexes, dtype=np.int64)
        if not len(indexes):
            return
        mask = np.zeros(rows.num_rows, bool)
        mask[indexes] = True
        if isinstance(message, dict):
            texts = pa.array([message.get(int(i), "") for i in range(rows.num_rows)], pa.string())
            split.reject(rows, pa.array(mask), error_class, texts)
        else:
            split.reject(rows, pa.array(mask), error_class, message)
