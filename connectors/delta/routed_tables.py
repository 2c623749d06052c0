"""Every table of a routed topic exists, with markers, before any record is read.

A partition resumes after the lowest marker of its topic's tables, and a table without one counts
as having landed nothing of the partition (`connectors.kafka.starts`). So a table must not be
missing merely because no row has gone to it yet: then a crash after another table's commit would
resume past records still on their way to it, and they would be lost. Hence, at start:

- a first run creates every table of the topic (Kafka coordinates only; the first rows add their
  columns), without markers: the partitions are read from their origin;
- a table new to the mapping of a topic whose tables all have markers is created with the lowest
  of them: the records before went to the other tables (or the dead letters) and stay there,
  so it takes the topic's records from there on.

A writer that cannot create its table without rows (a current-state table keyed by fields whose
types are not known yet) leaves it to the first rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa
from deltalake import DeltaTable

from connectors.delta import markers as offsets
from connectors.delta.markers import Mark
from connectors.delta.table_writer import CommitResult

log = logging.getLogger(__name__)

Creator = Callable[[str, str], Callable[[pa.Table, Mapping[int, Mark]], CommitResult]]
"""(table name, topic) -> the table writer's `write_exactly_once`."""


def prepare_routed_tables(
    per_topic: Mapping[str, Sequence[str]],
    partitions: Mapping[str, Sequence[int]],
    open_table: Callable[[str], DeltaTable | None],
    writer_of: Creator,
) -> None:
    """Create the missing tables of each topic that lands in several (module doc)."""
    for topic, names in per_topic.items():
        if len(names) < 2:
            continue
        opened = {name: open_table(name) for name in names}
        missing = [name for name, table in opened.items() if table is None]
        if not missing:
            continue
        existing = [table for table in opened.values() if table is not None]
        marks = _lowest_marks(topic, existing, partitions.get(topic, [])) if existing else {}
        for name in missing:
            result = writer_of(name, topic)(pa.table({}), marks)
            if result.version is None:
                continue
            where = ", ".join(f"{p}:{m.last_offset + 1}" for p, m in sorted(marks.items()))
            log.info(
                "table %s of topic %s created before its first rows%s",
                name,
                topic,
                f", taking records from offsets {where} on" if where else "",
            )


def _lowest_marks(
    topic: str, tables: Sequence[DeltaTable], partitions: Sequence[int]
) -> dict[int, Mark]:
    """Per partition that every table has a marker for: the lowest, with its fingerprint."""
    lowest: dict[int, Mark] = {}
    for partition in partitions:
        found = []
        for table in tables:
            marker = offsets.table_markers(table, topic, [partition]).get(partition)
            if marker is None:
                break
            fingerprint = offsets.table_fingerprint(table, topic, partition)
            probe, stamp = fingerprint if fingerprint is not None else (-1, -1)
            found.append(Mark(marker, stamp, probe))
        else:
            if found:
                lowest[partition] = min(found, key=lambda mark: mark.last_offset)
    return lowest
