"""waxlake's Bytewax sink: one partition per table (`connectors.delta.sink_partition`), so each
table has exactly one committer in the cluster; tables of routed topics are prepared first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bytewax.outputs import FixedPartitionedSink

from connectors.batch import KafkaBatch
from connectors.config import ConfigError, Guarantee, Settings, check_table_name
from connectors.delta import markers as offsets
from connectors.delta.routed_tables import prepare_routed_tables
from connectors.delta.shared_clients import SharedClients
from connectors.delta.sink_partition import TableSinkPartition
from connectors.delta.writers import WriterFactory, table_writer
from connectors.flow_settings import warn_unread
from connectors.kafka.client import list_partitions
from connectors.ops import metrics


class DeltaSink(FixedPartitionedSink[KafkaBatch, str | None]):
    """One sink partition per table, so each table has exactly one committer in the cluster.

    `tables`: per topic, the tables its batches may land in (default: one per topic, named like
    it); pass the source the same mapping. Items are `(table name, KafkaBatch)`: key the stream with
    `op.key_on("by_table", batches, connectors.destination)`. `make_writer`: how a table is
    written (default: appends; `connectors.state_tables` for current-state tables).
    """

    def __init__(
        self,
        settings: Settings,
        tables: Mapping[str, Sequence[str]] | None = None,
        make_writer: WriterFactory | None = None,
    ) -> None:
        self._settings = settings
        self._make_writer = make_writer
        self._shared = SharedClients(settings)
        per_topic = {t: list((tables or {}).get(t, [t])) for t in settings.topics}
        for topic, names in (tables or {}).items():
            for name in names:
                check_table_name(name, f"DeltaSink(tables=...) for topic {topic}")
        self._tables = sorted({n for names in per_topic.values() for n in names})
        self._group_owners = {names[0] for names in per_topic.values() if names}
        routed = [t for t, ns in per_topic.items() if len(ns) > 1]
        if routed and settings.guarantee is not Guarantee.EXACTLY_ONCE:
            raise ConfigError(
                f"WAXLAKE_GUARANTEE={settings.guarantee.value}: topic(s) {', '.join(routed)} "
                "land in several tables, whose group offsets would move each other; routing "
                "needs exactly-once (each table keeps its own markers)"
            )
        self._made_now: set[str] = set()  # tables this start created (empty) before reading
        if routed:
            self._made_now = prepare_routed_tables(
                {t: per_topic[t] for t in routed},
                list_partitions(settings, admin=self._shared.admin()),
                lambda name: offsets.open_table(settings.table_uri(name), settings.storage_options),
                lambda name, topic: (
                    table_writer(
                        settings, make_writer, settings.table_uri(name), topic
                    ).write_exactly_once
                ),
            )
        warn_unread(settings)
        metrics.declare_topics(sorted(settings.topics))

    def list_parts(self) -> list[str]:
        return self._tables

    def part_fn(self, item_key: str) -> int:
        # A distinct index per table: no two tables share a committer, and none is left idle.
        try:
            return self._tables.index(item_key)
        except ValueError:
            raise ConfigError(
                f"a step sent rows to table {item_key!r}, which is not one of the sink's tables "
                f"({', '.join(self._tables)}); name it in DeltaSink(tables=...)"
            ) from None

    def build_part(
        self, step_id: str, for_part: str, resume_state: str | None
    ) -> TableSinkPartition:
        return TableSinkPartition(
            self._settings,
            for_part,
            lambda name: name in self._group_owners,
            self._make_writer,
            self._shared,
            resume_state,
            made_now=for_part in self._made_now,
        )
