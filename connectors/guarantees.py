"""The three delivery guarantees of the article, in one place: where a partition starts, and in
which order the table write and the Kafka group commit happen.

- exactly-once: write (deduplicated against the table's `txn` markers), then commit the group;
- at-least-once: write (plain append), then commit the group: a crash between may duplicate;
- at-most-once: commit the group, then write (plain append): a crash between may lose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from connectors.config import Guarantee

T = TypeVar("T")


def start_offset(
    guarantee: Guarantee,
    *,
    table_marker: int | None,
    resume_state: int | None,
    group_offset: int | None,
) -> int | None:
    """The next offset to read for one partition, or None for the earliest one.

    exactly-once: the Bytewax resume state, which is consistent with every table the partition
    feeds and with the state of every stateful step (replayed records are dropped by the tables'
    markers); without one (a first run, or a lost recovery store), after the table's marker.
    The other two: the furthest of the resume state and the group offset. Both are written only
    at points where the guarantee allows skipping what is behind them (after the write for
    at-least-once, before it for at-most-once), so taking the furthest never loses more than the
    guarantee permits and for at-most-once it is what prevents duplicates.
    """
    if guarantee is Guarantee.EXACTLY_ONCE:
        if resume_state is not None:
            return resume_state
        return None if table_marker is None else table_marker + 1
    known = [o for o in (resume_state, group_offset) if o is not None]
    return max(known) if known else None


def deliver(
    guarantee: Guarantee,
    write: Callable[[bool], T],
    commit_group: Callable[[], None],
    commit_group_after: Callable[[], None],
) -> T:
    """Write the flush (`write(exactly_once)`) and commit the group offsets in the order the
    guarantee is made of; `commit_group_after` is the commit after a write (failures only warn:
    the data is already safe)."""
    if guarantee is Guarantee.AT_MOST_ONCE:
        commit_group()  # the position moves first: a crash before the write loses the records
        return write(False)
    result = write(guarantee is Guarantee.EXACTLY_ONCE)
    commit_group_after()
    return result
