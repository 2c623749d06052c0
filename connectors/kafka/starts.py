"""Where each partition of a worker starts reading, worked out for all of them at once.

Per partition this is cheap (a table marker, a group offset), but a round trip to the broker or a
Delta commit per partition is not: a first run over 1,000 partitions spent minutes recording
origins one commit each. So a worker's partitions are started together: group offsets in one
request, log starts and ends in one ListOffsets request per broker, and the origins of a topic's
new partitions in one commit (`GapLog.origins`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors import guarantees
from connectors.config import Guarantee, Settings
from connectors.delta import markers as offsets
from connectors.delta.dead_letters import dead_letter_uri
from connectors.delta.gaps import GapLog
from connectors.delta.table_identity import check_identity, table_of_group_metadata
from connectors.kafka import group_offsets, topic_ids
from connectors.kafka.client import list_partitions, make_admin, watermarks

log = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass(frozen=True)
class StartPosition:
    """Where a partition's reader starts: `next_offset`. `landed` (offset, Kafka timestamp): the
    last record that landed in the table, read again to check it is still that record."""

    next_offset: int
    landed: tuple[int, int] | None = None
    marker: int | None = None  # everything up to it has landed (exactly-once)


class StartResolver:
    """Start positions of one worker's partitions. Under exactly-once a partition resumes from
    its Bytewax resume state (consistent with every table and every stateful step), else after
    the lowest of its tables' markers; with no position at all, at its recorded origin."""

    def __init__(self, settings: Settings, tables: Mapping[str, Sequence[str]]) -> None:
        self._settings = settings
        self._tables = tables
        self._opened: dict[str, DeltaTable | None] = {}
        self._admin: AdminClient | None = None
        self._listed: dict[str, list[int]] | None = None

    def resolve(
        self, consumer: Consumer, resume: Mapping[Key, int | None]
    ) -> dict[Key, StartPosition]:
        """The start of every partition in `resume` (partition -> its Bytewax resume state)."""
        guarantee = self._settings.guarantee
        group: dict[Key, int] = {}
        if guarantee is not Guarantee.EXACTLY_ONCE:
            committed = group_offsets.group_offsets(consumer, list(resume))
            self._check_group_tables({key[0]: meta for key, (_, meta) in committed.items()})
            group = {key: offset for key, (offset, _) in committed.items()}
        starts: dict[Key, StartPosition] = {}
        without: dict[str, list[int]] = {}
        for key, state in resume.items():
            marker, landed, moved = None, None, False
            if guarantee is Guarantee.EXACTLY_ONCE:
                marker, landed, moved = self._lowest_marker(*key)
            if moved and marker is not None and state != marker + 1:
                log.info(
                    "%s[%d] resumes at offset %d, where waxlake move-marker put it (not at the "
                    "recovery store's %s)",
                    *key,
                    marker + 1,
                    state,
                )
                state = None  # the operator's marker wins over the store's older position
            start = guarantees.start_offset(
                guarantee, table_marker=marker, resume_state=state, group_offset=group.get(key)
            )
            if start is None:
                without.setdefault(key[0], []).append(key[1])
            else:
                starts[key] = StartPosition(start, landed, marker)
        for topic, partitions in without.items():
            if guarantee is not Guarantee.EXACTLY_ONCE:  # no group offset: the rows still tell
                after = self._after_rows(topic, partitions)
                starts.update({(topic, p): StartPosition(o) for p, o in after.items()})
                partitions = [p for p in partitions if p not in after]
            if partitions:  # no position at all: decided once, durably
                origins = self._origins(topic, partitions)
                starts.update({(topic, p): StartPosition(o) for p, o in origins.items()})
        return starts

    def _check_group_tables(self, metadata: Mapping[str, str]) -> None:
        """The group's offsets resume after what its table held: that table must still be
        there (`connectors.delta.table_identity`). The topic's first table owns them."""
        for topic, meta in sorted(metadata.items()):
            recorded = table_of_group_metadata(meta)
            uri = self._settings.table_uri(self._tables[topic][0])
            check_identity(self._settings, uri, recorded, by_group=True)

    def _origins(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Recorded origins; at the topic's first start those of all its partitions."""
        settings = self._settings
        if self._listed is None:  # one metadata request for every topic's origins
            self._listed = list_partitions(settings, admin=self._admin_client())
        listed = self._listed[topic]
        gaps = GapLog(
            settings.table_root, topic, settings.storage_options, topic_ids.KNOWN.get(topic)
        )
        return gaps.origins(
            partitions,
            functools.partial(self._policy, topic),
            listed,
            functools.partial(self._has_markers, topic, [*listed, *partitions]),
        )

    def _has_markers(self, topic: str, partitions: list[int]) -> bool:
        """Some table of the topic has landed some partition: the topic was read before."""
        for name in self._tables[topic]:
            table = self._table(name)
            if table is not None and offsets.table_markers(table, topic, partitions):
                return True
        return False

    def watermarks(self, keys: Sequence[Key]) -> dict[Key, tuple[int, int]]:
        """(log start, end) of each partition, in one request per broker."""
        return watermarks(self._settings, self._admin_client(), keys)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = make_admin(self._settings)
        return self._admin

    def close(self) -> None:
        self._admin = None  # its threads end when it is collected
        self._opened.clear()
        self._listed = None

    def _policy(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """`auto.offset.reset` for partitions with no position: their log start or end."""
        latest = self._settings.initial_offset() == "latest"
        found = self.watermarks([(topic, p) for p in partitions])
        return {p: found[(topic, p)][1 if latest else 0] for p in partitions}

    def _after_rows(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """After the highest offset landed (rows or dead letters) of each partition that has
        one: where at-least-once and at-most-once resume when the group has no offset (it
        expired, or was deleted) and the recovery store is gone, instead of at the origin, which
        would count the landed offsets as lost (or land them again)."""
        highest: dict[int, int] = {}
        settings = self._settings
        uris = [settings.table_uri(name) for name in self._tables[topic]]
        for uri in [*uris, dead_letter_uri(settings.table_root, topic)]:
            found = offsets.highest_landed(uri, settings.storage_options, partitions)
            for partition, offset in found.items():
                highest[partition] = max(offset, highest.get(partition, -1))
        for partition, offset in sorted(highest.items()):
            log.info(
                "%s[%d]: no group offset and no resume state; resuming after the highest offset "
                "landed, %d",
                topic,
                partition,
                offset,
            )
        return {partition: offset + 1 for partition, offset in highest.items()}

    def _lowest_marker(
        self, topic: str, partition: int
    ) -> tuple[int | None, tuple[int, int] | None, bool]:
        """The lowest marker of the topic's tables, its last record read, and whether `waxlake
        move-marker` set it. A table without one (or without the table) has landed nothing of
        the partition, so neither has the topic: no marker (a routed topic's tables all exist
        from the start, `routed_tables`, so this is not a table that merely had no rows yet)."""
        found = []
        for name in self._tables[topic]:
            table = self._table(name)
            if table is None:
                return None, None, False
            marker = offsets.table_markers(table, topic, [partition]).get(partition)
            if marker is None:
                return None, None, False
            fingerprint = offsets.table_fingerprint(table, topic, partition)
            moved = offsets.was_moved(table, topic, partition, marker)
            found.append((marker, fingerprint, moved))
        return min(found, key=lambda found: found[0])

    def _table(self, name: str) -> DeltaTable | None:
        """A table, opened once (every partition of it needs its markers)."""
        if name not in self._opened:
            settings = self._settings
            self._opened[name] = offsets.open_table(
                settings.table_uri(name), settings.storage_options
            )
        return self._opened[name]
