"""What travels from the Kafka source through the steps to the Delta sink: one `KafkaBatch`.

The rule a step must keep for exactly-once, stated once (README, "Write your own flow") and
checked by `check_rule` at every step made with `rows`/`frames` and again in the sink:

    a batch keeps its Kafka coordinates. Its rows keep the columns `topic` (a string),
    `partition` and `offset` (integers), none of them null, and every row is a record the source
    read, at most once. Steps may drop, change or
    add other columns and may drop rows: a dropped record still counts as handled, because the
    batch's coverage (`first_offset`..`last_offset`), not its rows, moves the partition's marker.
    Column names stay distinct as Delta compares them, ignoring case (`N` beside `n` is one
    column to Delta, and a commit of such rows would fail on every restart). Each batch reaches
    a table once (the sink checks it: a second batch of the same offsets would land below the
    marker the first moved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array, only_value
from connectors.errors import WaxlakeError
from connectors.kafka.records import SCHEMA

COORDINATES = ("topic", "partition", "offset")
COORDINATE_TYPES = {name: SCHEMA.field(name).type for name in COORDINATES}
"""The coordinates' types in every table; a step's strings and integers are cast back to them."""


class StepRuleError(WaxlakeError):
    """A step broke the rule above: the batch can no longer be landed exactly once."""


@dataclass(frozen=True)
class KafkaBatch:
    """One poll of one Kafka partition, or what steps made of it.

    `rows`: the rows for the table. `raw`: the records as read (`topic`, `partition`, `offset`,
    `timestamp`, `key`, `value`, `headers`), kept for dead letters. `dead`: records that cannot be
    rows, with the reason (dead-letter schema). `first_offset`..`last_offset`: the offsets of the
    partition this batch covers (records, transaction markers, compacted-away offsets).
    `table`: where the rows land (None: the topic's own table).
    """

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: pa.Table
    raw: pa.Table
    dead: pa.Table | None = None
    table: str | None = None

    @property
    def destination(self) -> str:
        return self.table or self.topic

    def with_rows(self, rows: pa.Table, **changes: object) -> KafkaBatch:
        """This batch with other rows: what a step returns, its coverage unchanged."""
        return replace(self, rows=rows, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"topic {self.topic} partition {self.partition} offsets {self.first_offset}-{self.last_offset}"


def destination(batch: KafkaBatch) -> str:
    """The table a batch lands in: the key for `op.key_on` before `op.output`."""
    return batch.destination


def check_rule(batch: KafkaBatch, step: str) -> None:
    """Raise StepRuleError naming `step` if the batch's rows broke the rule (module doc)."""
    rows = batch.rows
    if rows is batch.raw:
        return  # untouched
    where = f"step {step} on {batch.describe()}"
    missing = [c for c in COORDINATES if c not in rows.column_names]
    if missing:
        raise StepRuleError(
            f"{where}: the rows lost their {', '.join(missing)} column(s); a step must keep "
            "topic, partition and offset (README, 'Write your own flow')"
        )
    _check_coordinate_types(rows, where)
    folded = [name.lower() for name in rows.column_names]
    if len(set(folded)) != len(folded):
        twice = [n for n, f in zip(rows.column_names, folded, strict=True) if folded.count(f) > 1]
        raise StepRuleError(
            f"{where}: the rows have columns {', '.join(twice)}, one column to Delta (it ignores "
            "case in column names); give each column a name of its own"
        )
    if rows.num_rows == 0:
        return
    if (
        only_value(rows["partition"]) != batch.partition
        or not pc.all(pc.equal(rows["topic"], batch.topic)).as_py()
    ):
        raise StepRuleError(f"{where}: rows of another topic or partition appeared in the batch")
    if _kept_in_order(rows["offset"], batch.raw["offset"]):
        return
    offsets = rows["offset"]
    invented = pc.invert(pc.is_in(offsets, value_set=one_array(batch.raw["offset"])))
    if pc.any(invented).as_py():
        first = pc.min(pc.filter(offsets, invented)).as_py()
        raise StepRuleError(
            f"{where}: offset {first} is not a record the source read; a step may drop rows, "
            "not invent them"
        )
    if pc.count_distinct(offsets).as_py() != rows.num_rows:
        raise StepRuleError(f"{where}: an offset appears twice; a row may not be duplicated")


def _check_coordinate_types(rows: pa.Table, where: str) -> None:
    for name in COORDINATES:
        kind = rows.schema.field(name).type
        fits = (
            pa.types.is_string(kind) or pa.types.is_large_string(kind) or kind == pa.string_view()
            if name == "topic"
            else pa.types.is_integer(kind)
        )
        if not fits:
            want = "a string" if name == "topic" else "an integer"
            raise StepRuleError(
                f"{where}: column {name} became {kind}; it must stay {want} (README, 'Write your "
                "own flow')"
            )
        if rows[name].null_count:
            raise StepRuleError(f"{where}: a row has no {name} (null); a step must keep it")


def with_coordinate_types(rows: pa.Table) -> pa.Table:
    """`rows` with the coordinates in their table types (a polars step makes `topic` a large
    string; a step may widen `partition`); checked by `check_rule` first."""
    for name, kind in COORDINATE_TYPES.items():
        index = rows.schema.get_field_index(name)
        if rows.schema.field(index).type != kind:
            column = rows[name].cast(kind)  # safe cast: an out-of-range partition raises
            rows = rows.set_column(index, rows.schema.field(index).with_type(kind), column)
    return rows


def _kept_in_order(offsets: pa.ChunkedArray, read: pa.ChunkedArray) -> bool:
    """True if `offsets` are some of the `read` offsets, each once, in their order: what a step
    that only drops rows leaves. One vectorised pass; anything else gets the full check."""
    if offsets.null_count or read.null_count:
        return False
    kept = one_array(offsets).to_numpy(zero_copy_only=False)
    source = one_array(read).to_numpy(zero_copy_only=False)
    if not len(kept):
        return True
    if (np.diff(kept) <= 0).any() or kept[0] < source[0] or kept[-1] > source[-1]:
        return False
    if source[-1] - source[0] == len(source) - 1 and (np.diff(source) == 1).all():
        return True  # every offset in the range was read: no gaps to fall into
    if (np.diff(source) <= 0).any():
        return False
    return bool((source[np.searchsorted(source, kept)] == kept).all())
