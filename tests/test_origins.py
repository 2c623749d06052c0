"""Origins (where a partition with no position first started) are recorded a topic at a time.

One commit per partition made the first start of a job over 1,000 partitions take minutes; one
commit for all of a topic's partitions must keep the rule of connectors.delta.gaps: each origin
is recorded once, before reading, and a second instance recording at the same time uses the
first one's.
"""

from __future__ import annotations

from deltalake import DeltaTable

from connectors.delta.gaps import GapLog


def recorder(offset: int, calls: list[list[int]]):
    def resolve(partitions: list[int]) -> dict[int, int]:
        calls.append(list(partitions))
        return {p: offset + p for p in partitions}

    return resolve


def test_a_topic_s_origins_are_one_commit_and_kept(tmp_path):
    gaps = GapLog(str(tmp_path), "orders", {})
    calls: list[list[int]] = []

    assert gaps.origins(range(10), recorder(100, calls)) == {p: 100 + p for p in range(10)}
    assert calls == [list(range(10))]
    assert DeltaTable(gaps.uri).version() == 0  # created with them: one commit in all

    # Known origins are never resolved again; new partitions are added in one more commit.
    again = gaps.origins(range(12), recorder(500, calls))
    assert again == {**{p: 100 + p for p in range(10)}, 10: 510, 11: 511}
    assert calls[1:] == [[10, 11]]
    assert DeltaTable(gaps.uri).version() == 1
    assert gaps.origins(range(12), recorder(900, calls)) == again
    assert len(calls) == 2


def test_a_second_instance_that_recorded_first_wins(tmp_path):
    """Instance B records while A is between reading the table and committing: A's commit
    conflicts, A re-reads and takes B's origins (A had started nothing yet)."""
    a = GapLog(str(tmp_path), "orders", {})
    b = GapLog(str(tmp_path), "orders", {})
    a.origins([0], recorder(0, []))  # the table exists, so both commit against a snapshot

    def a_resolves(partitions: list[int]) -> dict[int, int]:
        if partitions == [1, 2, 3]:
            b.origins([2, 3], recorder(200, []))  # B, meanwhile
        return {p: 100 + p for p in partitions}

    assert a.origins([1, 2, 3], a_resolves) == {1: 101, 2: 202, 3: 203}
    assert b.origins([1, 2, 3], recorder(900, [])) == {1: 101, 2: 202, 3: 203}


def test_two_instances_creating_the_table(tmp_path):
    a = GapLog(str(tmp_path), "orders", {})
    b = GapLog(str(tmp_path), "orders", {})

    def a_resolves(partitions: list[int]) -> dict[int, int]:
        if 0 in partitions:
            b.origins([0, 1], recorder(50, []))  # B creates the table first
        return {p: 10 + p for p in partitions}

    assert a.origins([0, 1], a_resolves) == {0: 50, 1: 51}
