"""Records that cannot be rows of their table go to `<root>/_dead_letters/<topic>`, with the reason.

A dead letter keeps the record whole (Kafka coordinates, raw key, value and headers) so it can be
fixed and produced again. The dead-letter table has its own `txn` markers and is committed
before the main table, so after any crash each offset is in exactly one of the two (see sink.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from connectors.delta.markers import table_markers
from connectors.kafka.records import SCHEMA

log = logging.getLogger(__name__)

DEAD_LETTER_DIR = "_dead_letters"

DEAD_LETTER_SCHEMA = pa.schema(
    [
        *SCHEMA,
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
        pa.field("dead_lettered_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def dead_letter_uri(table_root: str, topic: str) -> str:
    return f"{table_root}/{DEAD_LETTER_DIR}/{topic}"


def dead_letter_marker_key(topic: str, table: str) -> str:
    """Whose markers a dead-letter commit moves: the topic's own table keeps the topic's; each
    routed table keeps its own (one set for all would drop one table's letters as the other's)."""
    return topic if table == topic else f"{topic}@{table}"


@dataclass
class Split:
    """A raw batch split into rows for the table and dead letters."""

    rows: pa.Table
    dead: list[pa.Table] = field(default_factory=list)

    def reject(
        self,
        raw: pa.Table,
        mask: pa.Array,
        error_class: str,
        message: str | pa.Array | Callable[[pa.Table], pa.Array],
    ) -> pa.Table:
        """Move the rows of `raw` where `mask` is true to the dead letters; return the others.

        `message`: one for all, one per row of `raw`, or a function of the rejected rows (so
        the reasons are only built when there is something to reject). Nothing rejected: no copy.
        """
        if not pc.any(mask).as_py():
            return raw
        bad = raw.filter(mask)
        if callable(message):
            message = message(bad)
        elif not isinstance(message, str):
            message = pc.filter(message, mask)
        self.dead.append(dead_letters(bad, error_class, message))
        return raw.filter(pc.invert(mask))

    def dead_table(self) -> pa.Table:
        if not self.dead:
            return DEAD_LETTER_SCHEMA.empty_table()
        return pa.concat_tables(self.dead).sort_by(
            [("partition", "ascending"), ("offset", "ascending")]
        )


def dead_letters(raw: pa.Table, error_class: str, message: pa.Array | str) -> pa.Table:
    """Dead-letter rows for `raw` (record schema), one reason for all or one per row."""
    n = raw.num_rows
    messages = (
        pa.array([message] * n, pa.string())
        if isinstance(message, str)
        else pa.array(message, pa.string())
    )
    now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    return pa.Table.from_arrays(
        [
            *raw.select(SCHEMA.names).cast(SCHEMA).columns,
            pa.repeat(pa.scalar(error_class, pa.string()), n),
            messages,
            pa.repeat(now, n),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _size(raw: pa.Table) -> pa.Array:
    return pc.add(
        pc.fill_null(pc.binary_length(raw["key"]), 0),
        pc.fill_null(pc.binary_length(raw["value"]), 0),
    )


def _longest(column: pa.ChunkedArray) -> int:
    return pc.max(pc.binary_length(column)).as_py() or 0


def reject_decoded(
    split: Split, raw: pa.Table, rows: pa.Table, mask: pa.Array, error_class: str, message: str
) -> pa.Table:
    """Dead-letter decoded `rows` where `mask` (as their raw records: decoding dropped the
    value); return the others."""
    mask = pc.fill_null(mask, True)
    if not pc.any(mask).as_py():
        return rows
    bad = rows.filter(mask).select(["partition", "offset"])
    # Join the coordinates only: a list column (headers) cannot be a join's payload.
    where = raw.select(["partition", "offset"]).append_column(
        "__row", pa.array(range(raw.num_rows), pa.int64())
    )
    matched = where.join(bad, keys=["partition", "offset"], join_type="inner").sort_by("__row")
    split.dead.append(dead_letters(raw.take(matched["__row"]), error_class, message))
    return rows.filter(pc.invert(mask))


def reject_oversized(split: Split, raw: pa.Table, max_bytes: int) -> pa.Table:
    """Dead-letter the records whose key plus value exceed `max_bytes`; return the others."""

    def reasons(bad: pa.Table) -> pa.Array:
        return pc.binary_join_element_wise(
            "key and value are ",
            pc.cast(_size(bad), pa.string()),
            f" bytes, over WAXLAKE_MAX_RECORD_BYTES={max_bytes}",
            "",
        )

    if _longest(raw["key"]) + _longest(raw["value"]) <= max_bytes:
        return raw  # the common case, in two passes over the offsets
    too_large = pc.fill_null(pc.greater(_size(raw), max_bytes), False)
    return split.reject(raw, too_large, "RecordTooLarge", reasons)


def without_dead_letters(
    marker_keys: Sequence[str], dead_table: DeltaTable | None, rows: pa.Table
) -> pa.Table:
    """Drop rows whose offsets the dead-letter table already holds.

    Only possible after a crash between the two commits of a flush: the replay may batch records
    differently, and a JSON field's inferred type with them, so a record that went to the dead
    letters could now decode. It stays a dead letter: each offset lands in one table only.
    """
    if rows.num_rows == 0 or dead_table is None:
        return rows
    grouped = rows.group_by("partition").aggregate([("offset", "min")])
    lowest = dict(
        zip(grouped["partition"].to_pylist(), grouped["offset_min"].to_pylist(), strict=True)
    )
    dead_marks: dict[int, int] = {}
    for key in marker_keys:  # this writer's, and the topic's (letters made before a route)
        for partition, mark in table_markers(dead_table, key, lowest).items():
            dead_marks[partition] = max(mark, dead_marks.get(partition, -1))
    suspects = {p: m for p, m in dead_marks.items() if lowest[p] <= m}
    if not suspects:
        return rows
    dataset = dead_table.to_pyarrow_dataset()
    for partition, mark in suspects.items():
        held = dataset.to_table(
            columns=["offset"],
            filter=(pc.field("partition") == partition)
            & (pc.field("offset") >= lowest[partition])
            & (pc.field("offset") <= mark),
        )["offset"]
        if len(held):
            clash = pc.and_(pc.equal(rows["partition"], partition), pc.is_in(rows["offset"], held))
            count = pc.sum(clash).as_py() or 0
            if count:
                log.warning(
                    "%s: %d record(s) already dead letters from before a restart stay there",
                    marker_keys[0],
                    count,
                )
                rows = rows.filter(pc.invert(clash))
    return rows


def reasons(dead: pa.Table) -> str:
    """`ErrorClass xN` per class, for the dead-letter warning."""
    counts = dead.group_by("error_class").aggregate([("offset", "count")])
    pairs = zip(counts["error_class"].to_pylist(), counts["offset_count"].to_pylist(), strict=True)
    return ", ".join(f"{name} x{count}" for name, count in sorted(pairs))
