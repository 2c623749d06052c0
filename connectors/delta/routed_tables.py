"""Every table of a routed topic exists, with markers, before any record is read.

A partition resumes after the lowest marker of its topic's tables, and a table without one counts
as having landed nothing of the partition (`connectors.kafka.starts`). So a table must not be
missing merely because no row has gone to it yet: then a crash after another table's commit would
resume past records still on their way to it, and they would be lost. Hence, at every start:

- a first run creates every table of the topic (Kafka coordinates only; the first rows add their
  columns), without markers: the partitions are read from their origin;
- each table records the routed set it belongs to (table property `waxlake.routes.<topic>`), so a
  table of that set that is gone later is told apart from one new to the routes: a gone table is
  refused (its share of the records is marked done by the others and would never come back);
- a table new to the routes starts where the topic's other tables all are: the records before
  went to them (or the dead letters) and stay there. Only where they all agree: after a crash
  they may stand at different offsets, and a new table would then either take again records one
  of them holds or skip records still to come, so the start is refused with the way out.

A writer that cannot create its table without rows (a current-state table keyed by fields whose
types are not known yet) leaves it to the first rows: such a table reads from the origin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa
from deltalake import DeltaTable

from connectors.config import ConfigError
from connectors.delta import markers as offsets
from connectors.delta.markers import Mark
from connectors.delta.table_writer import CommitResult

log = logging.getLogger(__name__)

Creator = Callable[[str, str], Callable[[pa.Table, Mapping[int, Mark]], CommitResult]]
"""(table name, topic) -> the table writer's `write_exactly_once`."""

ROUTES_PROPERTY = "waxlake.routes."
"""+ topic: the tables of the topic (comma-separated) when this table was last started with it."""


def prepare_routed_tables(
    per_topic: Mapping[str, Sequence[str]],
    partitions: Mapping[str, Sequence[int]],
    open_table: Callable[[str], DeltaTable | None],
    writer_of: Creator,
) -> set[str]:
    """Create the missing tables of each topic that lands in several (module doc); returns
    the names of those created."""
    made: set[str] = set()
    for topic, names in per_topic.items():
        if len(names) < 2:
            continue
        existing = {n: t for n in names if (t := open_table(n)) is not None}
        missing = [n for n in names if n not in existing]
        _refuse_gone(topic, names, existing, missing)
        marks = _agreed_marks(topic, existing, missing, partitions.get(topic, []))
        for name in missing:
            if writer_of(name, topic)(pa.table({}), marks).version is None:
                continue
            where = ", ".join(f"{p}:{m.last_offset + 1}" for p, m in sorted(marks.items()))
            log.info(
                "table %s of topic %s created before its first rows%s",
                name,
                topic,
                f", taking records from offsets {where} on" if where else "",
            )
        created = {n: t for n in missing if (t := open_table(n)) is not None}
        _record_routes(topic, {**existing, **created})
        made.update(created)
    return made


def _recorded(table: DeltaTable, topic: str) -> set[str]:
    value = table.metadata().configuration.get(ROUTES_PROPERTY + topic) or ""
    return {name for name in value.split(",") if name}


def _refuse_gone(
    topic: str, names: Sequence[str], existing: Mapping[str, DeltaTable], missing: list[str]
) -> None:
    recorded = set().union(*(_recorded(t, topic) for t in existing.values()))
    gone = [name for name in missing if name in recorded]
    if gone:
        raise ConfigError(
            f"table(s) {', '.join(gone)} of topic {topic} are gone, but the topic's other tables "
            f"({', '.join(sorted(existing))}) were landed beside them and mark their records as "
            "done, so they would not come back: restore them, or rebuild the topic's tables "
            f"together (delete {', '.join(names)}, _dead_letters/{topic}, _data_loss/{topic} and "
            "the recovery store)"
        )


def _agreed_marks(
    topic: str, existing: Mapping[str, DeltaTable], missing: list[str], partitions: Sequence[int]
) -> dict[int, Mark]:
    """The markers a table new to the routes starts from: those all the others agree on."""
    if not missing or not existing:
        return {}
    agreed: dict[int, Mark] = {}
    apart = []
    for partition in partitions:
        found = {
            name: offsets.table_markers(table, topic, [partition]).get(partition)
            for name, table in existing.items()
        }
        if len(set(found.values())) > 1:
            at = ", ".join(f"{n} {'-' if m is None else m}" for n, m in sorted(found.items()))
            apart.append(f"partition {partition}: {at}")
            continue
        marker = next(iter(found.values()))
        if marker is not None:
            table = next(iter(existing.values()))
            fingerprint = offsets.table_fingerprint(table, topic, partition)
            probe, stamp = fingerprint if fingerprint is not None else (-1, -1)
            agreed[partition] = Mark(marker, stamp, probe)
    if apart:
        raise ConfigError(
            f"topic {topic}: {', '.join(missing)} is new to the routes, but the topic's tables "
            f"stand at different offsets ({'; '.join(apart)}), as a crash leaves them: a new "
            "table would take records one of them already holds, or skip records still to come. "
            "Run the job once more with the routes as they were and stop it with SIGTERM (its "
            "tables then agree), then add the table"
        )
    return agreed


def _record_routes(topic: str, present: Mapping[str, DeltaTable]) -> None:
    value = ",".join(sorted(present))
    for table in present.values():
        if table.metadata().configuration.get(ROUTES_PROPERTY + topic) != value:
            table.alter.set_table_properties(
                {ROUTES_PROPERTY + topic: value}, raise_if_not_exists=False
            )
