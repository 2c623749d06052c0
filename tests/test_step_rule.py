"""The rule every step keeps (connectors/batch.py): rows may be dropped or reordered, never
invented, duplicated or moved to another partition. Checked on batches as the source makes them,
read offsets with gaps (compaction, transaction markers) included."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.batch import KafkaBatch, StepRuleError, check_rule

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
