"""The rule every step keeps (connectors/batch.py): rows may be dropped or reordered, never
invented, duplicated or moved to another partition. Checked on batches as the source makes them,
read offsets with gaps (compaction, transaction markers) included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.batch import KafkaBatch, StepRuleError, check_rule
from connectors.steps import route
from tests.jobs import raw_records

GAPPY = [10, 11, 13, 14, 15, 18, 19]  # offsets 12, 16 and 17 were never records


def batch(read: list[int], offsets: list[int], partition: int = 0) -> KafkaBatch:
    def rows(at: list[int], part: int) -> pa.Table:
        return pa.table(
            {
                "topic": ["t"] * len(at),
                "partition": pa.array([part] * len(at), pa.int32()),
                "offset": pa.array(at, pa.int64()),
            }
        )

    return KafkaBatch("t", 0, read[0], read[-1], rows(offsets, partition), rows(read, 0))


@pytest.mark.parametrize(
    "offsets",
    [
        list(range(100, 200)),
        list(range(100, 200, 3)),
        [150],
        [],
        [199, 100, 150],  # reordered
    ],
)
def test_dropping_or_reordering_rows_keeps_the_rule(offsets):
    check_rule(batch(list(range(100, 200)), offsets), "s")


@pytest.mark.parametrize("offsets", [GAPPY, [11, 14, 19], [19, 10]])
def test_rows_of_a_read_with_gaps_keep_the_rule(offsets):
    check_rule(batch(GAPPY, offsets), "s")


@pytest.mark.parametrize(
    ("read", "offsets", "message"),
    [
        (GAPPY, [11, 12, 13], "offset 12 is not a record the source read"),
        (GAPPY, [16], "offset 16 is not a record the source read"),
        (list(range(100, 200)), [150, 200], "offset 200 is not a record the source read"),
        (list(range(100, 200)), [99, 100], "offset 99 is not a record the source read"),
        (list(range(100, 200)), [120, 120], "an offset appears twice"),
        (GAPPY, [13, 14, 13], "an offset appears twice"),
    ],
)
def test_invented_or_duplicated_rows_break_the_rule(read, offsets, message):
    with pytest.raises(StepRuleError, match=message):
        check_rule(batch(read, offsets), "s")


def test_rows_of_another_partition_break_the_rule():
    with pytest.raises(StepRuleError, match="rows of another topic or partition"):
        check_rule(batch(list(range(10)), [1, 2], partition=1), "s")


def typed_batch(kinds: pa.Array) -> KafkaBatch:
    """A batch as the JSON decoder makes it: raw records, and rows with a `type` column."""
    raw = raw_records([b"{}"] * len(kinds))
    rows = raw.select(["topic", "partition", "offset"]).append_column("type", kinds)
    return KafkaBatch("t", 0, 0, len(kinds) - 1, rows, raw)


@pytest.mark.parametrize(
    "kinds",
    [pa.array([1, 2, None]), pa.array([{"x": 1}, None, {"x": 2}])],
    ids=["numbers", "objects"],
)
def test_routing_by_a_column_of_another_type_routes_nothing_and_loses_nothing(kinds):
    """A `type` column that is not a string (the topic's first events decided it) names no
    table: with a default every row goes there, without one they are Unrouted dead letters; it
    stopped the job before, on every restart (Arrow: type doesn't match the values set)."""
    split = route("type", {"click": "clicks"}, default="others")
    clicks, others = split(typed_batch(kinds))
    assert (clicks.rows.num_rows, others.rows.num_rows) == (0, 3)

    (clicks,) = route("type", {"click": "clicks"})(typed_batch(kinds))
    assert clicks.rows.num_rows == 0
    assert clicks.dead is not None and clicks.dead["offset"].to_pylist() == [0, 1, 2]
    assert set(clicks.dead["error_class"].to_pylist()) == {"Unrouted"}


def test_routing_rows_that_have_no_such_column_yet_routes_them_as_nulls():
    """The JSON decoder adds a column once some record has the field: a first poll of events
    without `type` has none. Those rows name no table (it stopped the job, every restart)."""
    rows = typed_batch(pa.array(["click", None, None]))
    without = rows.with_rows(rows.rows.drop_columns(["type"]))
    clicks, others = route("type", {"click": "clicks"}, default="others")(without)
    assert (clicks.rows.num_rows, others.rows.num_rows) == (0, 3)
    (clicks,) = route("type", {"click": "clicks"})(without)
    assert clicks.dead is not None and clicks.dead["offset"].to_pylist() == [0, 1, 2]
