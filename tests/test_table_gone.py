"""A table deleted or replaced while its recovery store is kept must not skip records silently.

The store resumes each partition after what the old table held, so a new table at the same place
would never get those records. Each table's sink partition keeps the Delta table ID it committed
to in the store; at start a table that is gone or has another ID is refused (or, with
`WAXLAKE_ON_DATA_LOSS=continue`, accepted with a warning). Under at-least-once and at-most-once
the consumer group's offsets are a position too: they carry the table ID in their metadata.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from deltalake import DeltaTable, write_deltalake

from connectors.kafka.records import SCHEMA
from tests.jobs import job_env, read_table, run_job
from tests.producing import produce, simple_items
from tests.test_data_loss import last_line, move_marker
from tests.test_routing import ROUTED, events

OTHER_GUARANTEES = ["at-least-once", "at-most-once"]


def group_metadata_of(bootstrap: str, group: str, topic: str) -> str:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return committed.metadata or ""
    finally:
        consumer.close()


def offsets(root, topic: str) -> list[int]:
    return sorted(read_table(root / topic)["offset"].to_list())


def landed_once(
    bootstrap: str, topic_factory, tmp_path: Path, guarantee: str = "exactly-once"
) -> tuple[str, Path, dict[str, str]]:
    """A topic whose 100 records one run landed: (topic, table root, the job's env)."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(bootstrap, [topic], root, guarantee)
    produce(bootstrap, simple_items(topic, 1, 100))
    assert run_job(env, root / "_recovery").returncode == 0
    return topic, root, env


def test_a_deleted_table_with_its_recovery_store_kept_is_refused(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic, root, env = landed_once(kafka_bootstrap, topic_factory, tmp_path)
    recovery = root / "_recovery"
    shutil.rmtree(root / topic)
    produce(kafka_bootstrap, simple_items(topic, 1, 50))

    refused = run_job(env, recovery)

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert line.startswith(f"waxlake: error: table {root / topic} is gone"), line
    assert "WAXLAKE_ON_DATA_LOSS=continue" in line and "recovery store" in line, line
    assert not (root / topic).exists()

    # The way out the message names first: rebuild the table from the topic, store deleted too.
    shutil.rmtree(recovery)
    rebuilt = run_job(env, recovery)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert offsets(root, topic) == list(range(150))


def test_a_replaced_table_is_refused_and_continue_accepts_it(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic, root, env = landed_once(kafka_bootstrap, topic_factory, tmp_path)
    recovery = root / "_recovery"
    old_id = str(DeltaTable(str(root / topic)).metadata().id)
    shutil.rmtree(root / topic)
    write_deltalake(str(root / topic), pa.Table.from_pylist([], SCHEMA), partition_by="partition")
    produce(kafka_bootstrap, simple_items(topic, 1, 50))

    refused = run_job(env, recovery)
    accepted = run_job({**env, "WAXLAKE_ON_DATA_LOSS": "continue"}, recovery)
    again = run_job(env, recovery)

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert f"table {root / topic} was replaced" in line and old_id in line, line
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "WARNING" in accepted.stderr and "was replaced" in accepted.stderr
    assert offsets(root, topic) == list(range(100, 150))
    assert again.returncode == 0, again.stderr[-3000:]  # the store now holds the new table's ID


@pytest.mark.parametrize("guarantee", OTHER_GUARANTEES)
def test_a_deleted_table_under_the_groups_offsets_is_refused(
    guarantee, kafka_bootstrap, topic_factory, tmp_path
):
    """The table and the recovery store are deleted, the group is kept: its offsets would
    resume after the records the old table held."""
    topic, root, env = landed_once(kafka_bootstrap, topic_factory, tmp_path, guarantee)
    if not group_metadata_of(kafka_bootstrap, env["WAXLAKE_GROUP_ID"], topic):
        pytest.skip("the broker drops offset commit metadata (Tansu): README says what is left")
    shutil.rmtree(root)
    produce(kafka_bootstrap, simple_items(topic, 1, 50))

    refused = run_job(env, root / "_recovery")
    accepted = run_job({**env, "WAXLAKE_ON_DATA_LOSS": "continue"}, root / "_recovery")

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert f"table {root / topic} is gone" in line, line
    assert f"consumer group {env['WAXLAKE_GROUP_ID']}" in line, line
    assert "new WAXLAKE_GROUP_ID" in line, line
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert offsets(root, topic) == list(range(100, 150))


def test_a_group_offset_moved_by_move_marker_still_names_its_table(
    kafka_bootstrap, topic_factory, tmp_path
):
    """An operator's move keeps the group's offsets tied to the table: deleting the table after
    it is refused like after any run."""
    topic, root, env = landed_once(kafka_bootstrap, topic_factory, tmp_path, "at-least-once")
    before = group_metadata_of(kafka_bootstrap, env["WAXLAKE_GROUP_ID"], topic)
    if not before:
        pytest.skip("the broker drops offset commit metadata (Tansu): README says what is left")
    shutil.rmtree(root / "_recovery")
    moved = move_marker(env, root, topic, "--next-offset", "120", "--reason", "skip")
    assert moved.returncode == 0, moved.stderr[-3000:]

    assert group_metadata_of(kafka_bootstrap, env["WAXLAKE_GROUP_ID"], topic) == before
    shutil.rmtree(root)
    refused = run_job(env, root / "_recovery")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"table {root / topic} is gone" in last_line(refused.stderr)


def test_the_deleted_tables_of_a_routed_topic_are_named_as_gone(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A routed topic's tables are made (empty) before any record is read, so at the refusal
    a table stands at each place: the message must still say that the landed one is gone."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(kafka_bootstrap, events(topic, "click", range(20)))
    assert run_job(env, recovery, flow=ROUTED).returncode == 0
    for table in ("clicks", "views", "other_events"):
        shutil.rmtree(root / table)

    refused = run_job(env, recovery, flow=ROUTED)

    assert refused.returncode == 1, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert f"table {root / 'clicks'} is gone" in line, line
    assert "made an empty one at its place" in line, line
