"""Origins (where a partition with no position first started) are recorded a topic at a time.

One commit per partition made the first start of a job over 1,000 partitions take minutes; one
commit for all of a topic's partitions must keep the rule of connectors.delta.gaps: each origin
is recorded once, before reading, and a second instance recording at the same time uses the
first one's.
"""

from __future__ import annotations

from deltalake import DeltaTable

from connectors.delta.gaps import Gap, GapLog
from connectors.kafka.topic_ids import stored_topic_id


def recorder(offset: int, calls: list[list[int]]):
    def resolve(partitions: list[int]) -> dict[int, int]:
        calls.append(list(partitions))
        return {p: offset + p for p in partitions}

    return resolve


def test_a_topic_s_origins_are_one_commit_and_kept(tmp_path):
    gaps = GapLog(str(tmp_path), "orders", {})
    calls: list[list[int]] = []

    # A worker's partitions 0..9 of a topic of 12: the first start records all 12.
    assert gaps.origins(range(10), recorder(100, calls), listed=range(12)) == {
        p: 100 + p for p in range(10)
    }
    assert calls == [list(range(12))]
    assert DeltaTable(gaps.uri).version() == 0  # created with them: one commit in all

    # Known origins are never resolved again (another worker's 10 and 11 included).
    assert gaps.origins(range(12), recorder(500, calls)) == {p: 100 + p for p in range(12)}
    assert len(calls) == 1 and DeltaTable(gaps.uri).version() == 0


def test_partitions_added_after_the_first_start_begin_at_offset_0(tmp_path):
    """auto.offset.reset only decides a topic's first start: a partition added later began at
    offset 0, and starting it anywhere else would skip its first records."""
    gaps = GapLog(str(tmp_path), "orders", {})
    calls: list[list[int]] = []
    gaps.origins(range(2), recorder(700, calls))  # e.g. `latest`: the ends of 0 and 1

    assert gaps.origins([1, 2, 3], recorder(900, calls)) == {1: 701, 2: 0, 3: 0}
    assert calls == [[0, 1]]
    assert gaps.origins([2, 3], recorder(900, calls)) == {2: 0, 3: 0}  # recorded


def test_a_topic_whose_tables_have_markers_began_before(tmp_path):
    """No origins recorded (the gap table was moved away), but the tables hold markers."""
    gaps = GapLog(str(tmp_path), "orders", {})
    calls: list[list[int]] = []

    assert gaps.origins([3], recorder(900, calls), began=lambda: True) == {3: 0}
    assert calls == []


def test_the_table_is_stamped_with_the_topic_id(tmp_path):
    gaps = GapLog(str(tmp_path), "orders", {}, topic_id="QX1b5bRHS6u3JgWZc2lqHA")
    gaps.origins([0], recorder(0, []))
    assert stored_topic_id(DeltaTable(gaps.uri), "orders") == "QX1b5bRHS6u3JgWZc2lqHA"


def test_a_second_instance_that_recorded_first_wins(tmp_path):
    """Instance B records while A is between reading the table and committing: A's commit
    conflicts, A re-reads and takes B's origins (A had started nothing yet)."""
    a = GapLog(str(tmp_path), "orders", {})
    b = GapLog(str(tmp_path), "orders", {})
    a.record(Gap("orders", 9, 0, 0, "a gap"), "exactly-once")  # the table, without origins

    def a_resolves(partitions: list[int]) -> dict[int, int]:
        if partitions == [1, 2, 3]:
            b.origins([2, 3], recorder(200, []), listed=[1, 2, 3])  # B, meanwhile
        return {p: 100 + p for p in partitions}

    assert a.origins([1, 2, 3], a_resolves) == {1: 201, 2: 202, 3: 203}
    assert b.origins([1, 2, 3], recorder(900, [])) == {1: 201, 2: 202, 3: 203}


def test_two_instances_creating_the_table(tmp_path):
    a = GapLog(str(tmp_path), "orders", {})
    b = GapLog(str(tmp_path), "orders", {})

    def a_resolves(partitions: list[int]) -> dict[int, int]:
        if 0 in partitions:
            b.origins([0, 1], recorder(50, []))  # B creates the table first
        return {p: 10 + p for p in partitions}

    assert a.origins([0, 1], a_resolves) == {0: 50, 1: 51}
