"""The writers of one sink partition: its table's and its topic's dead letters'."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import pyarrow as pa

from connectors.config import Settings
from connectors.delta.dead_letters import (
    DEAD_LETTER_SCHEMA,
    dead_letter_marker_key,
    dead_letter_uri,
)
from connectors.delta.markers import Mark
from connectors.delta.table_writer import CommitResult, DeltaTableWriter
from connectors.kafka import topic_ids


class TableWriter(Protocol):
    """Commits rows to one table: `DeltaTableWriter` (append), `StateTableWriter` (MERGE)."""

    uri: str

    def write_exactly_once(
        self, batch: pa.Table, marks: Mapping[int, Mark] | None = None
    ) -> CommitResult: ...

    def append(self, batch: pa.Table) -> CommitResult: ...


WriterFactory = Callable[[str, str], TableWriter]
"""Builds the writer of one table from its URI and topic (default: append tables)."""


def table_writer(
    settings: Settings, make_writer: WriterFactory | None, uri: str, topic: str
) -> TableWriter:
    if make_writer is not None:
        return make_writer(uri, topic)
    return DeltaTableWriter(
        uri,
        topic,
        settings.storage_options,
        settings.commit_retries,
        schema=None,
        maintenance=settings.maintenance(),
        topic_id=topic_ids.KNOWN.get(topic),
    )


def dead_letter_writer(settings: Settings, topic: str, table: str) -> DeltaTableWriter:
    return DeltaTableWriter(
        dead_letter_uri(settings.table_root, topic),
        topic,
        settings.storage_options,
        settings.commit_retries,
        schema=DEAD_LETTER_SCHEMA,
        maintenance=settings.maintenance(),
        marker_key=dead_letter_marker_key(topic, table),
    )
