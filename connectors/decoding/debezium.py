"""Debezium change events (JSON, with or without the `schema`/`payload` wrapper) -> changes.

`op` `c` (create), `r` (snapshot read) and `u` (update) upsert the row in `after`; `d` deletes
the row in `before`. Debezium's tombstone (a null value after a delete, for log compaction) is
ignored: the delete already happened; so is a logical decoding message (`m`), which changes no
row. A truncate (`t`) is a `NotApplied` dead letter: emptying the table is left to the user.
The source block gives `cdc_source_ts` (source.ts_ms) and, where the connector has them,
`cdc_lsn` (PostgreSQL `lsn`, SQL Server `change_lsn`), `cdc_scn` (Oracle) and `cdc_position`
(MySQL binlog `file:pos`). The wrapper's schema types the row's dates, timestamps and decimals
(`connect_types`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array
from connectors.decoding import connect_types
from connectors.decoding.base import METADATA_COLUMNS, TOMBSTONE_COLUMN
from connectors.decoding.connect_types import Logical
from connectors.decoding.naming import Naming

Reject = Callable[[pa.Table, pa.Array, str, str], pa.Table]
"""Dead-letters the rows of a table where a mask holds; returns the others."""
OPS = {"c": False, "r": False, "u": False, "d": True}
CDC_COLUMNS = ("cdc_source_ts", "cdc_lsn", "cdc_scn", "cdc_position")
TRUNCATE = (
    "a truncate (op t) is not applied to the state table (it names no rows; the rows before "
    "it stay): delete them yourself, or rebuild the table from the topic"
)


LAYOUTS = (('{"schema":', ',"payload":'), ('{"schema": ', ', "payload": '))
"""(start, separator) of a wrapped value as Kafka Connect's JSON converter writes it (compact,
the schema first), and as Python's `json.dumps` does."""


def unwrap(raw: pa.Table) -> tuple[pa.Table, dict[str, Logical]]:
    """Values with the JSON converter's `schema`/`payload` wrapper become their payload; the
    wrappers' schemas give the row fields' logical types (`connect_types`)."""
    if raw.num_rows == 0:
        return raw, {}
    text = pl.Series("v", raw["value"].cast(pa.string(), safe=False))
    payload, schemas = _split_envelopes(text)
    values = pc.if_else(pc.is_null(payload), raw["value"], payload.cast(pa.binary()))
    logical = connect_types.row_types(schemas)
    return raw.set_column(raw.schema.get_field_index("value"), "value", values), logical


def _split_envelopes(text: pl.Series) -> tuple[pa.Array, list[object]]:
    """Each value's payload (null where it has no wrapper) and the distinct schemas, parsed.

    A JSON path match parses every value whole, twice as long as the rest of the decoding; the
    known layouts are split at their separator instead, and a value in any other layout (or
    whose schema does not parse once split) takes the JSON path."""
    payload = pl.Series("payload", [None] * len(text), pl.String)
    schemas: list[object] = []
    left = pl.Series("row", range(len(text)), pl.UInt32)
    for start, separator in LAYOUTS:
        values = text if len(left) == len(text) else text.gather(left)  # no copy at first
        done, found, parsed = _split_layout(values, start, separator)
        payload = payload.scatter(left.filter(done), found.filter(done))
        schemas += parsed
        left = left.filter(~done)
        if not len(left):
            return payload.to_arrow(), schemas
    rest = text.gather(left)
    payload = payload.scatter(left, rest.str.json_path_match("$.payload"))
    texts = rest.str.json_path_match("$.schema").drop_nulls().unique().to_list()
    schemas += [schema for schema in map(_parse, texts) if schema is not None]
    return payload.to_arrow(), schemas


def _split_layout(
    text: pl.Series, start: str, separator: str
) -> tuple[pl.Series, pl.Series, list[object]]:
    """(which values are in this layout, their payloads, the distinct schemas parsed)."""
    parts = text.str.splitn(separator, 2).struct.unnest()  # the rest whole
    schema = parts["field_0"].str.strip_prefix(start)
    done = text.str.starts_with(start) & text.str.ends_with("}")
    done = (done & parts["field_1"].str.starts_with("{")).fill_null(False)
    parsed = {t: _parse(t) for t in schema.filter(done).unique().to_list()}
    broken = [t for t, value in parsed.items() if value is None]
    if broken:
        done = done & ~schema.is_in(broken)
    kept = [value for value in parsed.values() if value is not None]
    return done, parts["field_1"].str.strip_suffix("}"), kept


def _parse(text: str) -> object | None:
    """The schema's JSON; None if the text is not JSON (a value split where it should not be)."""
    try:
        value: object = json.loads(text)
    except ValueError:
        return None
    return value


def _field(rows: pa.Table, name: str) -> pa.Array | None:
    return one_array(rows[name]) if name in rows.column_names else None


def changes(
    rows: pa.Table,
    reject: Reject,
    naming: Naming,
    logical: Mapping[str, Logical] | None = None,
    table: pa.Schema | None = None,
) -> pa.Table:
    """Decoded envelopes (columns before, after, op, source, ...) -> row changes, the row's
    fields named by `naming` (which takes at least the Kafka metadata and cdc_* columns), with
    the `logical` types of the wrapper where `table` (the state table at start) agrees."""
    tombstones = one_array(rows[TOMBSTONE_COLUMN])
    rows = rows.filter(pc.invert(tombstones))  # Debezium's own tombstones: nothing to apply
    op = _field(rows, "op")
    if op is None:
        everything = pa.repeat(pa.scalar(True), rows.num_rows)
        rows = reject(rows, everything, "NotDebezium", "no op field: not a Debezium change event")
        empty = {n: rows[n] for n in METADATA_COLUMNS}
        return pa.table({**empty, "__deleted": pa.array([], pa.bool_())})
    rows = rows.filter(pc.invert(pc.fill_null(pc.equal(op, "m"), False)))  # changes no row
    op = one_array(rows["op"])
    truncates = pc.fill_null(pc.equal(op, "t"), False)
    rows = reject(rows, truncates, "NotApplied", TRUNCATE)
    op = one_array(rows["op"])
    unknown = pc.invert(pc.fill_null(pc.is_in(op, pa.array(list(OPS))), False))
    rows = reject(rows, unknown, "NotDebezium", "op is not one of c, r, u, d")
    if logical:
        rows = _with_logical_types(rows, reject, naming, logical, table)
    deleted = pc.equal(one_array(rows["op"]), "d")
    image = _image(rows, deleted)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {n: rows[n] for n in METADATA_COLUMNS}
    columns["__deleted"] = deleted
    columns.update(_source(rows))
    if image is not None:
        for index, field in enumerate(image.type):
            columns[naming.column(field.name)] = image.field(index)
    return pa.table(columns)


def _with_logical_types(
    rows: pa.Table,
    reject: Reject,
    naming: Naming,
    logical: Mapping[str, Logical],
    table: pa.Schema | None,
) -> pa.Table:
    """`before` and `after` with their logical fields converted; a change whose value does not
    convert (not base64, more digits than its precision) is a `TypeConflict` dead letter."""
    bad: dict[str, list[int]] = {}  # reason -> rows
    for side in connect_types.ROW_IMAGES:
        struct = _field(rows, side)
        if struct is None or not pa.types.is_struct(struct.type):
            continue
        children = []
        for field, child in zip(struct.type, struct.flatten(), strict=True):
            kind = logical.get(field.name)
            held = _held_type(table, naming.column(field.name))
            if kind is not None and connect_types.holds_target(held, kind):
                child, failed = connect_types.convert(child, kind)
                if failed:
                    reason = f"field {field.name} does not hold a Kafka Connect {kind.name}"
                    bad.setdefault(reason, []).extend(failed)
            children.append(child)
        names = [f.name for f in struct.type]
        converted = pa.StructArray.from_arrays(children, names, mask=pc.is_null(struct))
        rows = rows.set_column(rows.schema.get_field_index(side), side, converted)
    if not bad:
        return rows
    rows = rows.append_column("__row", pa.array(range(rows.num_rows), pa.int64()))
    for reason, failed in bad.items():
        mask = pc.is_in(rows["__row"], pa.array(failed, pa.int64()))
        rows = reject(rows, mask, "TypeConflict", reason)
    return rows.drop_columns(["__row"])


def _held_type(table: pa.Schema | None, column: str) -> pa.DataType | None:
    if table is None or column not in table.names:
        return None
    return table.field(column).type


def _image(rows: pa.Table, deleted: pa.Array) -> pa.StructArray | None:
    """`before` for deletes, `after` for the rest, as one struct column."""
    after, before = _field(rows, "after"), _field(rows, "before")
    if after is None and before is None:
        return None
    if after is None or before is None:
        return after if after is not None else before
    if after.type != before.type:  # one side seen only as null so far: take the other's type
        typed = after if len(after.type) else before
        after, before = after.cast(typed.type), before.cast(typed.type)
    return pc.if_else(deleted, before, after)


def _source(rows: pa.Table) -> dict[str, pa.Array]:
    source = _field(rows, "source")
    out: dict[str, pa.Array] = {}
    if source is None or not pa.types.is_struct(source.type):
        return out
    names = [f.name for f in source.type]
    if "ts_ms" in names:
        ms = source.field("ts_ms").cast(pa.int64())
        out["cdc_source_ts"] = ms.cast(pa.timestamp("ms", tz="UTC")).cast(
            pa.timestamp("us", tz="UTC")
        )
    # PostgreSQL's `lsn`; SQL Server's `change_lsn` (the change's own, `commit_lsn` is its
    # transaction's); Oracle's `scn`.
    for name, column in (("lsn", "cdc_lsn"), ("change_lsn", "cdc_lsn"), ("scn", "cdc_scn")):
        if name in names and column not in out:
            out[column] = source.field(name).cast(pa.string())
    if "file" in names and "pos" in names:
        out["cdc_position"] = pc.binary_join_element_wise(
            source.field("file").cast(pa.string()), source.field("pos").cast(pa.string()), ":"
        )
    return out
