"""Kafka topic IDs (KIP-516), stamped on each table, so a recreated topic is never taken for the
one the table was filled from: a new topic of the same name restarts its offsets at 0, and its
records would be dropped as "already there" or mixed with the old ones under the same keys.

The ID is kept as the table property `waxlake.topicId.<topic>` (table properties survive
checkpoints and log cleanup). Brokers that report no IDs (all-zero UUIDs) are logged once; for
them the offset checks of `connectors.kafka.data_loss` are what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors.config import Settings
from connectors.delta import markers as offsets
from connectors.delta.gaps import gap_uri
from connectors.errors import OffsetsReusedError

log = logging.getLogger(__name__)

PROPERTY_PREFIX = offsets.TOPIC_ID_PROPERTY
_NO_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero UUID, base64: the broker has no topic IDs

KNOWN: dict[str, str | None] = {}
"""Topic -> ID as the broker reported it at start-up (None: no ID), for the table writers."""


def broker_topic_ids(
    admin: AdminClient, topics: list[str], strict: bool = False
) -> dict[str, str | None]:
    """Each topic's ID from the broker; None where it reports none (or cannot describe, unless
    `strict`: then a broker that does not answer raises KafkaException)."""
    try:
        futures = admin.describe_topics(TopicCollection(topics), request_timeout=15)
        described = {topic: future.result() for topic, future in futures.items()}
    except (KafkaException, NotImplementedError, TypeError) as exc:
        if strict and isinstance(exc, KafkaException):
            raise
        log.info("could not describe topics for their IDs (%s); topic IDs are not checked", exc)
        return dict.fromkeys(topics)
    ids: dict[str, str | None] = {}
    for topic, description in described.items():
        text = str(description.topic_id) if description.topic_id is not None else _NO_ID
        # Kafka's own tools show IDs in URL-safe base64; librdkafka prints the standard one.
        ids[topic] = None if text == _NO_ID else text.replace("+", "-").replace("/", "_")
    return ids


def stored_topic_id(table: DeltaTable, topic: str) -> str | None:
    return table.metadata().configuration.get(PROPERTY_PREFIX + topic)


def table_topic(table: DeltaTable, name: str) -> str:
    """The Kafka topic a table holds (a routed table's name is not its topic's): the one its
    topic ID is stamped for, else the one its first row names, else `name`."""
    stamped = [
        key.removeprefix(PROPERTY_PREFIX)
        for key in table.metadata().configuration
        if key.startswith(PROPERTY_PREFIX)
    ]
    if len(stamped) == 1:
        return stamped[0]
    first = table.to_pyarrow_dataset().head(1, columns=["topic"])["topic"].to_pylist()
    return str(first[0]) if first and first[0] else name


def recreated_message(topic: str, uri: str, stored: str, current: str) -> str:
    return (
        f"topic {topic} was deleted and recreated: the table {uri} was filled from topic ID "
        f"{stored}, but the broker's topic {topic} has ID {current}; its offsets start again, so "
        "(topic, partition, offset) would name two records. Land the new topic into a new "
        "WAXLAKE_TABLE_ROOT (or move the old table away); see README 'When Kafka loses records'"
    )


def check_topic_ids(settings: Settings, admin: AdminClient) -> None:
    """At start-up: every existing table must come from the topic the broker has now."""
    KNOWN.update(broker_topic_ids(admin, settings.topics))
    if all(KNOWN.get(t) is None for t in settings.topics):
        log.info(
            "the broker reports no topic IDs (KIP-516): a deleted and recreated topic is "
            "detected only by its offsets and record timestamps"
        )
    for topic in settings.topics:
        current = KNOWN.get(topic)
        table = offsets.open_table(settings.table_uri(topic), settings.storage_options)
        stored = None if table is None else stored_topic_id(table, topic)
        if current is not None and stored is not None and stored != current:
            raise OffsetsReusedError(
                recreated_message(topic, settings.table_uri(topic), stored, current)
            )
        if current is not None:
            check_gap_log(settings, topic, current)


def stale_gap_log(settings: Settings, topic: str, current: str) -> tuple[str, str] | None:
    """(its URI, its topic ID) when `<root>/_data_loss/<topic>` describes another topic ID than
    `current`; a log from before the stamp (or from a broker without IDs) is stamped now."""
    uri = gap_uri(settings.table_root, topic)
    table = offsets.open_table(uri, settings.storage_options)
    if table is None:
        return None
    stored = stored_topic_id(table, topic)
    if stored is None:
        stamp(table, topic, current)
        return None
    return None if stored == current else (uri, stored)


def check_gap_log(settings: Settings, topic: str, current: str) -> None:
    """The origins and gaps of the gap log must be of the topic the broker has: an old topic's
    origin would skip the new topic's first offsets."""
    if (stale := stale_gap_log(settings, topic, current)) is not None:
        uri, stored = stale
        raise OffsetsReusedError(
            f"topic {topic} was deleted and recreated: {uri} records where the job began reading "
            f"topic ID {stored} and what Kafka lost of it, but the broker's topic {topic} has ID "
            f"{current}, whose offsets start again; records of the old topic that had not landed "
            "are gone with it. To land the new topic from its start, land it into a new "
            f"WAXLAKE_TABLE_ROOT, or move {uri} away (it describes the old topic) together with "
            "the topic's tables and dead letters (they hold the old topic's offsets); see README "
            "'When Kafka loses records'"
        )


def check_unchanged(admin: Callable[[], AdminClient], topic: str) -> None:
    """Before each commit: the topic still has the ID it had at start-up. A topic recreated
    while the job runs can grow past the job's position before the job reads again; then no
    offset is out of range, and its records would land as if they were the old topic's.
    `admin` gives the client to ask (made only where the broker has topic IDs)."""
    known = KNOWN.get(topic)
    if known is None:
        return
    client = admin()
    current = broker_topic_ids(client, [topic]).get(topic)
    client.poll(0)  # serve its queued log lines (make_admin): the queue must not grow
    if current is not None and current != known:
        raise OffsetsReusedError(
            f"topic {topic} was deleted and recreated while the job ran: it was read as topic "
            f"ID {known}, but the broker's topic {topic} now has ID {current}, so the records "
            "read since the last commit may be the new topic's; none of them was written (those "
            "of the old topic are gone with it). Land the new topic into a new "
            "WAXLAKE_TABLE_ROOT (or move the old table away); see README 'When Kafka loses "
            "records'"
        )


def stamp(table: DeltaTable, topic: str, topic_id: str) -> None:
    """Record `topic_id` on `table` if it has none; refuse a table from another topic ID."""
    stored = stored_topic_id(table, topic)
    if stored == topic_id:
        return
    if stored is not None:
        raise OffsetsReusedError(recreated_message(topic, table.table_uri, stored, topic_id))
    table.alter.set_table_properties({PROPERTY_PREFIX + topic: topic_id}, raise_if_not_exists=False)
    log.info("%s: stamped with the ID of topic %s (%s)", table.table_uri, topic, topic_id)
