"""Where a partition resumes when its positions are gone or moved on purpose, and what is lost
then: never more than Kafka lost, never a silent skip, under every guarantee.

Under at-least-once and at-most-once the positions are the consumer group's offsets and the
recovery store; the table's rows still say what has landed."""

from __future__ import annotations

import shutil
import uuid

import pytest
from deltalake import DeltaTable

from tests.broker_ops import delete_records, recreate_topic
from tests.jobs import job_env, run_job
from tests.producing import produce, simple_items
from tests.test_data_loss import gaps, last_line, move_marker, offsets_in

OTHER_GUARANTEES = ["at-least-once", "at-most-once"]


@pytest.mark.parametrize("guarantee", OTHER_GUARANTEES)
def test_lost_positions_resume_after_the_rows_not_at_the_origin(
    guarantee, log_broker, topic_factory, tmp_path
):
    """0..999 landed; 1000..1499 are deleted unread; the group offsets and the recovery store
    are gone. The rows say 0..999 landed: only 1000..1499 are lost."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, guarantee)
    produce(log_broker, simple_items(topic, 1, 1000))
    assert run_job(env, root / "_recovery").returncode == 0
    produce(log_broker, simple_items(topic, 1, 1000))
    delete_records(log_broker, topic, {0: 1500})
    shutil.rmtree(root / "_recovery")
    env["WAXLAKE_GROUP_ID"] = f"waxlake-test-{uuid.uuid4().hex[:12]}"  # no group offsets

    refused = run_job(env, root / "_recovery")
    assert refused.returncode != 0
    assert "partition 0: offsets 1000-1499 (500 records)" in last_line(refused.stderr)

    landed = run_job({**env, "WAXLAKE_ON_DATA_LOSS": "continue"}, root / "_recovery")
    assert landed.returncode == 0, landed.stderr[-3000:]
    assert gaps(root, topic) == [(0, 1000, 1499)]
    assert offsets_in(root, topic) == [*range(1000), *range(1500, 2000)]


def test_a_gap_recorded_with_continue_does_not_stop_the_job_again(
    log_broker, topic_factory, tmp_path
):
    """Retention emptied the log past the marker; `continue` recorded the gap, and nothing
    followed it to move the marker. A later run with the default `fail` has nothing new to
    refuse: the loss was accepted."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root)
    produce(log_broker, simple_items(topic, 1, 500))
    assert run_job(env, root / "_recovery").returncode == 0
    produce(log_broker, simple_items(topic, 1, 500))
    delete_records(log_broker, topic, {0: 1000})
    accepted = run_job({**env, "WAXLAKE_ON_DATA_LOSS": "continue"}, root / "_recovery")
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert gaps(root, topic) == [(0, 500, 999)]
    shutil.rmtree(root / "_recovery")

    again = run_job(env, root / "_recovery")

    assert again.returncode == 0, again.stderr[-3000:]
    assert "already recorded" in again.stderr
    produce(log_broker, simple_items(topic, 1, 10))
    assert run_job(env, root / "_recovery").returncode == 0
    assert offsets_in(root, topic) == [*range(500), *range(1000, 1010)]


@pytest.mark.parametrize("guarantee", OTHER_GUARANTEES)
def test_move_marker_moves_the_group_offsets_of_the_other_guarantees(
    guarantee, log_broker, topic_factory, tmp_path
):
    """README's way out after a recreated topic, under a guarantee that resumes from the group
    offsets: the move must reach them, or the job must refuse; never a silent skip."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, guarantee)
    produce(log_broker, simple_items(topic, 1, 500))
    assert run_job(env, root / "_recovery").returncode == 0
    recreate_topic(log_broker, topic, 1)
    produced = produce(log_broker, simple_items(topic, 1, 800))
    DeltaTable(str(root / topic)).delete("partition = 0 AND offset >= 0")
    if (root / "_data_loss" / topic).exists():  # the old topic's origins (README's first step)
        shutil.move(root / "_data_loss" / topic, tmp_path / "old-data-loss")

    # Moved as for exactly-once (the job's guarantee not in the environment): the job refuses.
    eo_env = {**env, "WAXLAKE_GUARANTEE": "exactly-once"}
    as_for_eo = move_marker(eo_env, root, topic, "--next-offset", "0", "--adopt-topic-id")
    assert as_for_eo.returncode == 0, as_for_eo.stderr
    refused = run_job(env, root / "_recovery")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "waxlake move-marker" in last_line(refused.stderr)
    assert f"WAXLAKE_GUARANTEE={guarantee}" in last_line(refused.stderr)

    kept_store = move_marker(env, root, topic, "--next-offset", "0", "--adopt-topic-id")
    assert kept_store.returncode == 2 and "_recovery" in kept_store.stderr
    shutil.rmtree(root / "_recovery")
    moved = move_marker(env, root, topic, "--next-offset", "0", "--adopt-topic-id")
    assert moved.returncode == 0, moved.stderr

    landed = run_job(env, root / "_recovery")
    assert landed.returncode == 0, landed.stderr[-3000:]
    assert offsets_in(root, topic) == list(range(800))
    assert len(produced) == 800 and gaps(root, topic) == []

    # Forward, on a table without exactly-once markers: only offsets past its rows are skipped.
    shutil.rmtree(root / "_recovery")
    ahead = move_marker(env, root, topic, "--next-offset", "900", "--reason", "skip")
    assert ahead.returncode == 0, ahead.stderr
    assert gaps(root, topic) == [(0, 800, 899)]


def test_move_marker_changes_nothing_for_a_partition_or_broker_it_cannot_check(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A partition the topic lacks got a marker and a gap; with Kafka unreachable the gap was
    recorded, then the group commit failed with a traceback: offsets landed and 'lost' both."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, "at-least-once")
    produce(kafka_bootstrap, simple_items(topic, 1, 10))
    assert run_job(env, None).returncode == 0

    bogus = move_marker(env, root, topic, "--partition", "99", "--next-offset", "500")  # last wins
    dead_broker = move_marker(
        {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, root, topic, "--next-offset", "500"
    )

    assert bogus.returncode == 1
    assert f"topic {topic} has partitions 0..0, not 99" in last_line(bogus.stderr)
    assert dead_broker.returncode == 2
    assert f"cannot check {topic}[0] on the broker" in last_line(dead_broker.stderr)
    assert gaps(root, topic) == []
    assert DeltaTable(str(root / topic)).transaction_version(f"waxlake:{topic}:0:moved") is None
