"""What a table's sink partition holds between commits: rows, dead letters and coverage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from connectors.batch import KafkaBatch
from connectors.delta.dead_letters import DEAD_LETTER_SCHEMA
from connectors.delta.markers import Mark, last_record
from connectors.errors import WaxlakeError


class RowsMismatchError(WaxlakeError):
    """The batches of one flush do not fit one table: a column with two types."""


@dataclass
class Flush:
    """One commit's worth: the rows, the dead letters, and how far each partition is covered."""

    rows: pa.Table
    dead: pa.Table
    marks: dict[int, Mark]
    firsts: dict[int, int]  # per partition, the first offset covered
    records: int  # records read, landed or not (for progress and byte counts)
    bytes: int

    def next_offsets(self) -> dict[int, int]:
        return {p: m.last_offset + 1 for p, m in self.marks.items()}


@dataclass
class TableBuffer:
    rows: list[pa.Table] = field(default_factory=list)
    dead: list[pa.Table] = field(default_factory=list)
    marks: dict[int, Mark] = field(default_factory=dict)
    firsts: dict[int, int] = field(default_factory=dict)
    row_count: int = 0
    bytes: int = 0
    records: int = 0
    since: float = 0.0  # monotonic time of the oldest buffered batch

    def add(self, batch: KafkaBatch) -> None:
        if not self.marks:
            self.since = time.monotonic()
        if batch.rows.num_rows:
            self.rows.append(batch.rows)
            self.row_count += batch.rows.num_rows
            self.bytes += batch.rows.nbytes
        if batch.dead is not None and batch.dead.num_rows:
            self.dead.append(batch.dead)
        self.records += batch.raw.num_rows
        probe = last_record(batch.raw, batch.partition)
        mark = Mark(batch.last_offset, probe.timestamp_ms, probe.probe_offset)
        self.firsts.setdefault(batch.partition, batch.first_offset)
        held = self.marks.get(batch.partition)
        self.marks[batch.partition] = mark if held is None else held.merge(mark)

    def __bool__(self) -> bool:
        return bool(self.marks)

    def take(self, table: str) -> Flush:
        rows = _concat(table, self.rows) if self.rows else pa.table({})
        dead = (
            pa.concat_tables(self.dead).sort_by(
                [("partition", "ascending"), ("offset", "ascending")]
            )
            if self.dead
            else DEAD_LETTER_SCHEMA.empty_table()
        )
        flush = Flush(rows, dead, self.marks, self.firsts, self.records, self.bytes)
        self.rows, self.dead, self.marks, self.firsts = [], [], {}, {}
        self.row_count = self.bytes = self.records = 0
        return flush


def _concat(table: str, batches: list[pa.Table]) -> pa.Table:
    """One table of the flush's rows (nulls and narrower types widen, as delta-rs would)."""
    try:
        return pa.concat_tables(batches, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        types: dict[str, set[str]] = {}
        for batch in batches:
            for field in batch.schema:
                types.setdefault(field.name, set()).add(str(field.type))
        clash = next(((n, sorted(t)) for n, t in types.items() if len(t) > 1), None)
        what = (
            f"column {clash[0]} is {' in some rows and '.join(clash[1])} in others"
            if clash
            else str(exc)
        )
        raise RowsMismatchError(
            f"table {table}: {what}, so the rows cannot be committed together; a step must give "
            "a column one type (cast it), then restart the job"
        ) from exc
