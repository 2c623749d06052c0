"""`waxlake move-marker`: the operator's way to move one partition's marker on purpose.

Integrity rule: a marker never moves back over rows the table (or its dead letters) holds, since
those offsets would then land twice; delete such rows first, deliberately. Moving forward skips
offsets, so the skipped range is recorded as a gap (`_data_loss/`), like any other loss.
`--adopt-topic-id` stamps the table with the topic ID the broker has now, after the operator has
dealt with the rows of the old topic. Run it while the job is stopped.

At-least-once and at-most-once resume from the consumer group's offsets and the recovery store,
not from the table's markers: under them (`WAXLAKE_GUARANTEE`) the command also moves the group's
offset, and refuses while a recovery store at the root would win over it. A move made as for
exactly-once makes such a job refuse to start rather than go on from its old position.
"""

from __future__ import annotations

import argparse

import pyarrow as pa
from confluent_kafka import KafkaException
from deltalake import DeltaTable, write_deltalake

from connectors.config import ConfigError, Guarantee, Settings
from connectors.delta import markers as offsets
from connectors.delta.dead_letters import dead_letter_uri
from connectors.delta.gaps import Gap, GapLog
from connectors.delta.table_identity import group_metadata
from connectors.kafka import topic_ids
from connectors.kafka.client import list_partitions, make_admin, make_consumer
from connectors.kafka.group_offsets import commit_group_offsets
from connectors.ops.command import CommandError, command_settings
from connectors.ops.recovery_backup import stores_at_root


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    move = commands.add_parser(
        "move-marker",
        help="set where one partition resumes (never back over rows the table holds)",
    )
    move.add_argument("--topic", required=True)
    move.add_argument(
        "--table", help="the table whose marker moves, for a routed topic (default: --topic)"
    )
    move.add_argument("--partition", type=int, required=True)
    move.add_argument("--next-offset", type=int, required=True, help="the next offset to land")
    move.add_argument("--reason", default="", help="recorded with a skipped range")
    move.add_argument("--root", help="table root (default: $WAXLAKE_TABLE_ROOT)")
    move.add_argument(
        "--bootstrap-servers",
        help="default: $KAFKA_BOOTSTRAP_SERVERS (the partition is checked there)",
    )
    move.add_argument(
        "--adopt-topic-id",
        action="store_true",
        help="stamp the table with the topic ID the broker reports now",
    )


def _highest_row(settings: Settings, uri: str, partition: int) -> int | None:
    return offsets.highest_landed(uri, settings.storage_options, [partition]).get(partition)


def run(args: argparse.Namespace) -> int:
    settings = command_settings(table_root=args.root, bootstrap_servers=args.bootstrap_servers)
    topic, partition, target = args.topic, args.partition, args.next_offset
    uri = settings.table_uri(args.table or topic)
    if target < 0 or partition < 0:
        raise CommandError("--next-offset and --partition must be 0 or more")
    table = offsets.open_table(uri, settings.storage_options)
    if table is None:
        raise CommandError(f"no Delta table for topic {topic} at {uri}")
    held = topic_ids.table_topic(table, topic)
    if held != topic:
        raise CommandError(f"{uri} holds records of topic {held}, not {topic}", code=2)
    by_group = settings.guarantee is not Guarantee.EXACTLY_ONCE
    if by_group and (stores := stores_at_root(settings)):
        raise CommandError(
            f"WAXLAKE_GUARANTEE={settings.guarantee.value} resumes from the recovery store "
            f"before the consumer group, and {stores[0]} holds an older position: delete "
            f"{settings.table_root}/_recovery first (the group's offsets take over), then "
            "run this again"
        )
    _check_partition(settings, topic, partition)
    adopted = _topic_id(settings, topic) if args.adopt_topic_id else None
    if adopted is not None:
        _check_gap_log(settings, topic, adopted)
    landed = -1
    for where in (uri, dead_letter_uri(settings.table_root, topic)):
        highest = _highest_row(settings, where, partition)
        landed = max(landed, -1 if highest is None else highest)
        if highest is not None and highest >= target:
            raise CommandError(
                f"{where} holds rows of partition {partition} up to offset {highest}: resuming "
                f"at offset {target} would land those offsets twice. Delete the rows first "
                f'(DeltaTable("{where}").delete("partition = {partition} AND offset >= '
                f'{target}")), or choose --next-offset {highest + 1} or more',
                code=1,
            )
    marker = offsets.table_markers(table, topic, [partition]).get(partition)
    skipped_from = max(landed, -1 if marker is None else marker) + 1
    if by_group:  # Kafka first: a failure here leaves the table as it was
        _commit_group(settings, topic, partition, target, str(table.metadata().id))
    if target > skipped_from:
        reason = "skipped on purpose with waxlake move-marker" + (
            f": {args.reason}" if args.reason else ""
        )
        gap = Gap(topic, partition, skipped_from, target - 1, reason)
        GapLog(settings.table_root, topic, settings.storage_options).record(gap, "operator")
    if args.adopt_topic_id:
        _adopt(table, topic, adopted)
    _set_marker(table, topic, partition, target - 1, by_group)
    print(
        f"{uri}: partition {partition} resumes at offset {target} "
        f"(marker {marker if marker is not None else 'none'} -> {target - 1})"
    )
    return 0


def _check_partition(settings: Settings, topic: str, partition: int) -> None:
    """The topic has the partition on the broker (a typo would record a gap of a partition
    that does not exist); the broker must answer."""
    try:
        found = list_partitions(settings.model_copy(update={"topics": [topic]}))[topic]
    except ConfigError as exc:
        raise CommandError(f"cannot check {topic}[{partition}] on the broker: {exc}") from None
    if partition not in found:
        raise CommandError(
            f"topic {topic} has partitions {found[0]}..{found[-1]}, not {partition}", code=1
        )


def _topic_id(settings: Settings, topic: str) -> str | None:
    """The topic's ID now, for `--adopt-topic-id`; an unanswered request is an error, not
    "no ID" (the table would keep the old topic's, and the job refuse to start again)."""
    try:
        ids = topic_ids.broker_topic_ids(make_admin(settings), [topic], strict=True)
    except KafkaException as exc:
        raise CommandError(
            f"--adopt-topic-id: the broker at {settings.bootstrap_servers} did not tell the ID "
            f"of {topic} ({exc.args[0].str()}); nothing was changed"
        ) from None
    return ids.get(topic)


def _check_gap_log(settings: Settings, topic: str, adopted: str) -> None:
    """The old topic's origins and gaps must not be taken for the new topic's."""
    if (stale := topic_ids.stale_gap_log(settings, topic, adopted)) is not None:
        uri, stored = stale
        raise CommandError(
            f"{uri} records where the job began reading topic ID {stored} and what Kafka lost of "
            f"it, not of the topic's ID now, {adopted}: move {uri} away first (it describes the "
            "old topic), then run this again",
            code=2,
        )


def _commit_group(
    settings: Settings, topic: str, partition: int, target: int, table_id: str
) -> None:
    """The offset carries the table's ID, as the job's commits do (a start then still knows
    which table the group's position belongs to)."""
    consumer = make_consumer(settings, what=f"move-marker {topic}[{partition}]")
    try:
        commit_group_offsets(consumer, topic, {partition: target}, group_metadata(table_id))
    except KafkaException as exc:
        raise CommandError(
            f"could not move the offset of group {settings.group_id} ({exc.args[0].str()}); "
            "nothing was changed: run this again when Kafka answers"
        ) from None
    finally:
        consumer.close()
    print(f"group {settings.group_id}: {topic}[{partition}] resumes at offset {target}")


def _adopt(table: DeltaTable, topic: str, current: str | None) -> None:
    if current is None:
        print(f"the broker reports no topic ID for {topic}: nothing to adopt")
        return
    table.alter.set_table_properties(
        {topic_ids.PROPERTY_PREFIX + topic: current}, raise_if_not_exists=False
    )
    print(f"{table.table_uri}: now filled from topic ID {current}")


def _set_marker(table: DeltaTable, topic: str, partition: int, last: int, by_group: bool) -> None:
    """An empty commit whose only content is the marker (its record's timestamp unknown)."""
    commit = offsets.marker_commit(
        topic, {partition: offsets.Mark(last)}, moved=True, group_moved=by_group
    )
    empty = pa.schema(table.schema().to_arrow()).empty_table()
    write_deltalake(table, empty, mode="append", commit_properties=commit)


def check_moves_reached_the_group(settings: Settings, partitions: dict[str, list[int]]) -> None:
    """At start-up, without exactly-once: no marker was moved as for exactly-once only (the job
    would go on from the group's old offset, silently skipping or re-reading what the move
    meant)."""
    if settings.guarantee is Guarantee.EXACTLY_ONCE:
        return
    for topic, numbers in partitions.items():
        table = offsets.open_table(settings.table_uri(topic), settings.storage_options)
        if table is None:
            continue
        for partition in numbers:
            moved = offsets.move_missed_the_group(table, topic, partition)
            if moved is not None:
                raise ConfigError(
                    f"topic {topic} partition {partition}: waxlake move-marker set its marker "
                    f"to resume at offset {moved + 1} as for exactly-once, but this job runs "
                    f"{settings.guarantee.value}, which resumes from consumer group "
                    f"{settings.group_id} and the recovery store: run waxlake move-marker again "
                    f"with WAXLAKE_GUARANTEE={settings.guarantee.value} and this job's "
                    "WAXLAKE_GROUP_ID (it moves the group's offset too)"
                )
