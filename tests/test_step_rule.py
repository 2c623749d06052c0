"""The rule every step keeps (connectors/batch.py): rows may be dropped or reordered, never
invented, duplicated or moved to another partition. Checked on batches as the source makes them,
read offsets with gaps (compaction, transaction markers) included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.batch import KafkaBatch, StepRuleError, check_rule, with_coordinate_types
from connectors.config import ConfigError
from connectors.errors import fatal_line
from connectors.steps import StepError, frames, route, rows
from tests.jobs import raw_records

GAPPY = [10, 11, 13, 14, 15, 18, 19]  # offsets 12, 16 and 17 were never records


def batch(read: list[int], offsets: list[int], partition: int = 0) -> KafkaBatch:
    def rows(at: list[int], part: int) -> pa.Table:
        return pa.table(
            {
                "topic": pa.array(["t"] * len(at), pa.string()),
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


def retyped(column: str, array: pa.Array) -> KafkaBatch:
    made = batch(list(range(3)), [0, 1, 2])
    rows = made.rows.set_column(made.rows.schema.get_field_index(column), column, array)
    return made.with_rows(rows)


@pytest.mark.parametrize(
    ("column", "array", "message"),
    [
        ("partition", pa.array([0.0, 0.0, 0.0]), "column partition became double"),
        ("offset", pa.array([0.0, 1.0, 2.0]), "column offset became double"),
        ("offset", pa.array(["0", "1", "2"]), "column offset became string"),
        ("topic", pa.array([1, 1, 1]), "column topic became int64"),
        ("topic", pa.array(["t", None, "t"]), "a row has no topic"),
        ("offset", pa.array([0, None, 2], pa.int64()), "a row has no offset"),
    ],
)
def test_coordinates_of_another_type_or_null_break_the_rule(column, array, message):
    """They passed (0.0 == 0), and tables were made with a double partition column."""
    with pytest.raises(StepRuleError, match=message):
        check_rule(retyped(column, array), "s")


def test_coordinates_widened_or_as_large_strings_land_in_their_table_types():
    """What polars gives back (large strings) or a step widens (an int64 partition)."""
    made = retyped("partition", pa.array([0, 0, 0], pa.int64()))
    made = made.with_rows(made.rows.set_column(0, "topic", pa.array(["t"] * 3, pa.large_string())))
    check_rule(made, "s")
    rows = with_coordinate_types(made.rows)
    assert [rows.schema.field(c).type for c in ("topic", "partition", "offset")] == [
        pa.string(),
        pa.int32(),
        pa.int64(),
    ]
    assert rows["partition"].to_pylist() == [0, 0, 0]


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


@pytest.mark.parametrize(
    ("tables", "default"),
    [
        ({"click": "clicks"}, ""),  # the unmatched rows went nowhere, silently
        ({"click": ""}, None),
        ({"click": "../outside"}, None),
        ({"click": "_dead_letters"}, None),
        ({"click": "_recovery"}, "others"),
        ({"click": "clicks"}, " "),
    ],
)
def test_routing_to_a_name_that_is_no_table_is_refused(tables, default):
    with pytest.raises(ConfigError, match=r"route\('type', \.\.\.\): .* is not a table name"):
        route("type", tables, default=default)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            rows(lambda t: None, name="forgot"),
            "step forgot on topic t partition 0 offsets 0-2: it returned NoneType, not a pyarrow",
        ),
        (
            frames(lambda f: f.lazy(), name="lazy"),  # type: ignore[arg-type, return-value]
            "step lazy on topic t partition 0 offsets 0-2: it returned LazyFrame",
        ),
    ],
)
def test_a_step_that_returns_no_rows_table_names_itself(step, message):
    """Such a step ended with 'unexpected AttributeError: NoneType ... column_names'."""
    with pytest.raises(StepRuleError, match=message):
        step(batch(list(range(3)), [0, 1, 2]))


def test_a_record_batch_is_rows_too():
    made = batch(list(range(3)), [0, 1, 2])
    out = rows(lambda t: t.to_batches()[0])(made)
    assert out.rows["offset"].to_pylist() == [0, 1, 2]


def test_a_step_error_of_several_lines_ends_as_one():
    """The last stderr line must stay the one `waxlake: error:` line."""
    failing = rows(lambda t: (_ for _ in ()).throw(ValueError("first\nsecond")), name="two")
    with pytest.raises(StepError) as caught:
        failing(batch(list(range(3)), [0, 1, 2]))
    line = fatal_line(caught.value)
    assert "\n" not in line and "ValueError: first second" in line
