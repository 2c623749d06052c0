"""Decoding JSON values into typed columns, a batch at a time.

The path is vectorised: every value of a batch is wrapped as `{"v": <value>}` (so each value
is exactly one line of one JSON document, whatever it contains) and the batch is parsed in one
call by Arrow's JSON reader against the table's schema. Types are strict: a value that does not
fit its column (`2.5` for an integer, `5` for a string) fails instead of being cast. Only when a
batch fails is it bisected, so the cost of finding k bad records among n is O(k log n) parses.
New fields are inferred and added to the table (additive schema evolution).
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array, same_type
from connectors.config import ConfigError, Settings
from connectors.decoding.base import (
    MAX_DEPTH,
    METADATA_COLUMNS,
    TOMBSTONE_COLUMN,
    VALUE_NAMING,
    DecoderFactory,
    by_field,
    nesting_depth,
)
from connectors.decoding.json_shapes import (
    has_map,
    read_wrapped,
    readable,
    restore,
    with_entries,
)
from connectors.decoding.json_types import (
    normalise,
    record_errors,
    with_date_times,
    with_majority_types,
)
from connectors.decoding.naming import Naming
from connectors.decoding.schemas import (
    check_decoded,
    decoded_fields,
    existing_schema,
    load_schema,
)
from connectors.delta.dead_letters import Split, reject_oversized
from connectors.flow_settings import reads

TOO_DEEP = f"the value is nested deeper than {MAX_DEPTH} levels"


class JsonDecoder:
    """The decoded flow: Kafka metadata columns, `is_tombstone`, then one column per JSON field."""

    evolves_schema = True

    def __init__(
        self,
        max_record_bytes: int,
        fields: pa.Schema | None = None,
        naming: Naming = VALUE_NAMING,
    ) -> None:
        self._max = max_record_bytes
        self.fields = fields if fields is not None else pa.schema([])
        self._naming = naming

    def split(self, raw: pa.Table) -> Split:
        split = Split(rows=raw)
        rest = reject_oversized(split, raw, self._max)
        tombstones = rest.filter(pc.is_null(rest["value"]))
        values = rest.filter(pc.is_valid(rest["value"]))

        values = self._reject_invalid_utf8(split, values)
        decoded, bad = self._decode(values["value"])
        if bad:
            n = values.num_rows
            classes = pa.array(
                [_classify(bad[i]) if i in bad else None for i in range(n)], pa.string()
            )
            messages = pa.array([bad.get(i, "") for i in range(n)], pa.string())
            for error_class in sorted(set(classes.drop_null().to_pylist())):
                split.reject(
                    values,
                    pc.fill_null(pc.equal(classes, error_class), False),
                    error_class,
                    messages,
                )
            values = values.filter(pc.is_null(classes))
        split.rows = self._rows(values, decoded, tombstones)
        return split

    def _reject_invalid_utf8(self, split: Split, values: pa.Table) -> pa.Table:
        try:
            values["value"].cast(pa.string())
            return values
        except pa.ArrowInvalid:
            pass  # find which: only for a batch that has one
        valid = []
        for value in values["value"].to_pylist():
            try:
                value.decode("utf-8")
                valid.append(True)
            except UnicodeDecodeError:
                valid.append(False)
        bad = pc.invert(pa.array(valid))
        return split.reject(values, bad, "InvalidJson", "value is not valid UTF-8")

    def _decode(self, values: pa.ChunkedArray) -> tuple[list[pa.StructArray], dict[int, str]]:
        """Decode in order; returns the decoded chunks and {row index: error} of rejected rows.

        A batch that fails is checked record by record (JSON syntax, and the known fields'
        types: cheap, mostly in C), so that many bad records cost one pass instead of a
        bisection each; what Arrow still rejects is bisected, down to single records."""
        chunks: list[pa.StructArray] = []
        bad: dict[int, str] = {}

        # A loop over a stack, not a recursive closure: the closure's reference cycle kept
        # every batch's values and decoded arrays alive until a full garbage collection.
        pending: list[tuple[list[int], pa.Schema | None]] = [(list(range(len(values))), None)]
        while pending:
            rows, checked = pending.pop()
            if not rows:
                continue
            try:
                chunks.append(self._parse(values.take(pa.array(rows, pa.int64()))))
                continue
            except pa.ArrowInvalid as exc:
                if len(rows) == 1:
                    bad[rows[0]] = _message(exc)
                    continue
            if checked != self.fields:  # not checked yet with the fields known now
                part = values.take(pa.array(rows, pa.int64()))
                parsed = _parse_each(part)
                # Fields seen here for the first time take the type most records give them,
                # not the type of whichever record Arrow happens to parse first.
                self.fields = with_majority_types(self.fields, parsed)
                checked = self.fields
                broken = {rows[i]: why for i, why in record_errors(parsed, checked).items()}
                if broken:
                    bad.update(broken)
                    pending.append(([r for r in rows if r not in broken], checked))
                    continue
            middle = len(rows) // 2  # the first half next: chunks stay in row order
            pending += [(rows[middle:], checked), (rows[:middle], checked)]
        return chunks, bad

    def _parse(self, values: pa.ChunkedArray) -> pa.StructArray:
        """Parse values that must all fit the known fields; new fields widen `self.fields`."""
        column = read_json_objects(values, pa.struct(list(self.fields)), unexpected="infer")
        if nesting_depth(column.type) > MAX_DEPTH:
            raise pa.ArrowInvalid(TOO_DEEP)
        column = with_date_times(normalise(column), self.fields)
        for child in column.type:
            if child.name not in self.fields.names:
                self.fields = self.fields.append(child)
            elif self.fields.field(child.name).type != child.type:
                # Only widening is possible here (new nested fields): earlier chunks are
                # conformed to it with nulls.
                index = self.fields.get_field_index(child.name)
                self.fields = self.fields.set(index, child)
        return column

    def _rows(
        self, values: pa.Table, decoded: list[pa.StructArray], tombstones: pa.Table
    ) -> pa.Table:
        """Metadata columns + tombstone flag + one column per field (named by `naming`)."""
        fields = [pa.field(self._naming.column(f.name), f.type) for f in self.fields]
        parts = []
        for table, struct_chunks, is_tombstone in (
            (values, decoded, False),
            (tombstones, [], True),
        ):
            columns = {name: table[name] for name in METADATA_COLUMNS}
            columns[TOMBSTONE_COLUMN] = pa.repeat(pa.scalar(is_tombstone), table.num_rows)
            by_name = by_field(struct_chunks, self.fields, table.num_rows)
            for field, source in zip(fields, self.fields, strict=True):
                columns[field.name] = by_name[source.name]
            parts.append(pa.table(columns))
        rows = pa.concat_tables(parts)
        return rows.sort_by([("partition", "ascending"), ("offset", "ascending")])


def _parse_each(values: pa.ChunkedArray) -> list[object]:
    """Each value parsed by Python's parser (lenient on control characters, as Arrow's is), or
    the error (a ValueError) where it is not JSON."""
    parsed: list[object] = []
    for value in values.to_pylist():
        try:
            parsed.append(json.loads(value, strict=False))
        except ValueError as exc:  # without its traceback, whose frames would hold `parsed`
            parsed.append(exc.with_traceback(None))
        except RecursionError:
            parsed.append(ValueError(TOO_DEEP))
    return parsed


def read_json_objects(
    values: pa.ChunkedArray | pa.Array,
    struct: pa.StructType,
    unexpected: str,
    stamps_as_text: bool = False,
) -> pa.StructArray:
    """Parse every value as one JSON object of type `struct`, in one call (ArrowInvalid if any
    does not fit; `json_shapes.read_wrapped`). `unexpected`: "infer" or "ignore" fields. Dates
    and maps are read as types the reader reads, then built (`json_shapes`); so are timestamps
    with `stamps_as_text` (finer than the column's unit, which the reader refuses)."""
    values = one_array(values)
    target, struct = struct, readable(struct, stamps_as_text)
    if has_map(target):
        values = pa.array(with_entries(values.to_pylist(), target), pa.binary())
    column = read_wrapped(values, struct, unexpected)
    if column.null_count:
        raise pa.ArrowInvalid("value is JSON null, not an object")
    return restore(column, target)


def _message(exc: Exception) -> str:
    text = re.sub(r" in row \d+$", "", str(exc))
    text = text.replace("Column(/v) changed from object to", "the value is not a JSON object but")
    return text.replace("Column(/v/", "field (/")


def _classify(message: str) -> str:
    """TypeConflict: valid JSON whose field does not fit the table's type; else InvalidJson."""
    if "not a JSON object" in message:
        return "InvalidJson"
    if any(
        sign in message
        for sign in ("changed from", "Failed to convert", "couldn't parse", "does not fit")
    ):
        return "TypeConflict"
    return "InvalidJson"


def json_values(settings: Settings) -> DecoderFactory:
    """JSON decoders, one per table. Checks the given schema (WAXLAKE_SCHEMA) and existing tables
    first; each decoder starts from both."""
    reads("schema_spec")
    given = load_schema(settings.schema_spec) if settings.schema_spec else pa.schema([])
    starts: dict[str, pa.Schema] = {}
    for topic in settings.topics:
        uri = settings.table_uri(topic)
        schema = existing_schema(settings, topic)
        if schema is None:
            starts[topic] = given
            continue
        check_decoded(topic, uri, schema, "the decoded flow")
        fields = decoded_fields(schema)
        for field in given:
            if field.name in fields.names and not same_type(
                fields.field(field.name).type, field.type
            ):
                raise ConfigError(
                    f"WAXLAKE_SCHEMA: field {field.name!r} is {field.type} but the existing table "
                    f"at {uri} has it as {fields.field(field.name).type}; fix the schema or "
                    "point WAXLAKE_TABLE_ROOT elsewhere"
                )
        starts[topic] = pa.schema([*fields, *(f for f in given if f.name not in fields.names)])
    return lambda name: JsonDecoder(settings.max_record_bytes, starts.get(name, given))
