"""Kafka losing records on its side: deleted before they landed, a recreated topic, reused offsets.

Every test runs against a broker with a real log (`log_broker`: DeleteRecords, topic deletion).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors.delta.markers import app_id
from connectors.kafka.topic_ids import broker_topic_ids
from tests.broker_ops import delete_records, recreate_topic
from tests.jobs import job_env, kill_if_running, read_table, run_job, start_job, wait_while_running
from tests.producing import produce, simple_items
from tests.test_operations import scrape

WAXLAKE = str(Path(sys.executable).parent / "waxlake")
GUARANTEES = ["exactly-once", "at-least-once", "at-most-once"]


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def offsets_in(root: Path, topic: str) -> list[int]:
    return sorted(read_table(root / topic)["offset"].to_list())


def gaps(root: Path, topic: str) -> list[tuple[int, int, int]]:
    uri = root / "_data_loss" / topic
    if not (uri / "_delta_log").exists():
        return []
    df = read_table(uri).sort("partition", "first_offset")
    return list(df.select("partition", "first_offset", "last_offset").iter_rows())


def land_then_lose(bootstrap: str, topic: str, root: Path, env: dict[str, str]) -> None:
    """Offsets 0..999 land; then 1000..1999 are produced and 1000..1499 deleted unread."""
    produce(bootstrap, simple_items(topic, 1, 1000))
    first = run_job(env, root / "_recovery")
    assert first.returncode == 0, first.stderr[-3000:]
    assert offsets_in(root, topic) == list(range(1000))
    produce(bootstrap, simple_items(topic, 1, 1000))
    delete_records(bootstrap, topic, {0: 1500})


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_deleted_before_landing_stops_the_job_by_default(
    guarantee, log_broker, topic_factory, tmp_path
):
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, guarantee)
    land_then_lose(log_broker, topic, root, env)

    result = run_job(env, root / "_recovery")

    assert result.returncode != 0
    line = last_line(result.stderr)
    assert line.startswith("waxlake: error: "), result.stderr[-3000:]
    assert f"topic {topic} partition 0: offsets 1000-1499 (500 records)" in line
    assert "WAXLAKE_ON_DATA_LOSS=continue" in line
    assert offsets_in(root, topic) == list(range(1000)), "nothing past the gap is written"
    assert gaps(root, topic) == []


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_continue_lands_the_rest_and_records_the_gap_once(
    guarantee, log_broker, topic_factory, tmp_path
):
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, guarantee, on_data_loss="continue")
    land_then_lose(log_broker, topic, root, env)

    result = run_job(env, root / "_recovery")

    assert result.returncode == 0, result.stderr[-3000:]
    assert offsets_in(root, topic) == [*range(1000), *range(1500, 2000)]
    assert gaps(root, topic) == [(0, 1000, 1499)]
    assert re.search(
        rf"WARNING .*topic {topic} partition 0: offsets 1000-1499 \(500 records\) were deleted",
        result.stderr,
    )
    gap = read_table(root / "_data_loss" / topic).row(0, named=True)
    assert gap["records"] == 500 and gap["guarantee"] == guarantee
    assert "log starts at 1500" in gap["reason"]

    # Seen again (the recovery store is gone, so the position is found again): recorded once.
    again = run_job(env, tmp_path / "other-recovery")
    assert again.returncode == 0, again.stderr[-3000:]
    assert gaps(root, topic) == [(0, 1000, 1499)]

    status = subprocess.run(
        [WAXLAKE, "status", "--root", str(root), "--topics", topic, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)["tables"][0]
    assert doc["lost_records"] == 500
    assert [(g["partition"], g["first_offset"], g["last_offset"]) for g in doc["gaps"]] == [
        (0, 1000, 1499)
    ]
    text = subprocess.run(
        [WAXLAKE, "status", "--root", str(root), "--topics", topic],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "lost 500 records in 1 gap" in text and "0: 1000-1499 (500 records)" in text


def test_at_least_once_counts_no_landed_row_as_lost(log_broker, topic_factory, tmp_path):
    """At-least-once's crash window: rows landed, the group offset not moved yet. The offsets
    lost after that are counted from the last row that landed, not from the group's offset."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, "at-least-once", on_data_loss="continue")
    produce(log_broker, simple_items(topic, 1, 1200))
    first = run_job(env, root / "_recovery")
    assert first.returncode == 0, first.stderr[-3000:]
    consumer = Consumer({"bootstrap.servers": log_broker, "group.id": env["WAXLAKE_GROUP_ID"]})
    (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    behind = TopicPartition(topic, 0, 1000, metadata=committed.metadata)
    consumer.commit(offsets=[behind], asynchronous=False)
    consumer.close()
    produce(log_broker, simple_items(topic, 1, 800))
    delete_records(log_broker, topic, {0: 1500})

    result = run_job(env, tmp_path / "other-recovery")

    assert result.returncode == 0, result.stderr[-3000:]
    assert gaps(root, topic) == [(0, 1200, 1499)]
    assert sorted(set(offsets_in(root, topic))) == [*range(1200), *range(1500, 2000)]


FETCH_WAIT_MS = 50
"""A fetch in flight when the job stops is answered by the broker as soon as records come in;
its response would carry them into the job before what the test does to the log. Fetches that
wait at most this long on the broker have expired, empty, well before the test acts."""


@contextmanager
def stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """The job stopped (SIGSTOP), with no fetch in flight, while the block changes the log."""
    proc.send_signal(signal.SIGSTOP)
    time.sleep(10 * FETCH_WAIT_MS / 1000)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def wait_for_marker(root: Path, topic: str, offset: int, proc: subprocess.Popen[bytes], log: Path):
    uri = str(root / topic)

    def landed() -> bool:
        if not DeltaTable.is_deltatable(uri):
            return False
        marker = DeltaTable(uri).transaction_version(app_id(topic, 0))
        return marker is not None and marker >= offset

    wait_while_running(proc, log, landed, f"offset {offset} landed")


def wait_for_row(root: Path, topic: str, offset: int, proc: subprocess.Popen[bytes], log: Path):
    """Like `wait_for_marker`, for every guarantee: the row at `offset` is in the table."""
    uri = str(root / topic)

    def landed() -> bool:
        return DeltaTable.is_deltatable(uri) and offset in offsets_in(root, topic)

    wait_while_running(proc, log, landed, f"offset {offset} landed")


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("setting", ["fail", "continue"])
def test_deleted_while_running(setting, guarantee, log_broker, topic_factory, tmp_path):
    """The job is paused (SIGSTOP) while records are produced and deleted unread."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    log = tmp_path / "job.log"
    env = job_env(
        log_broker,
        [topic],
        root,
        guarantee,
        on_data_loss=setting,
        kafka_config=json.dumps({"fetch.wait.max.ms": FETCH_WAIT_MS}),
    )
    env["BYTEWAX_DATAFLOW_API_ENABLED"] = "1"  # /metrics
    produce(log_broker, simple_items(topic, 1, 500))
    proc = start_job(env, root / "_recovery", log)
    try:
        wait_for_row(root, topic, 499, proc, log)
        with stopped(proc):
            produce(log_broker, simple_items(topic, 1, 1000))
            delete_records(log_broker, topic, {0: 1000})
        if setting == "fail":
            assert proc.wait(timeout=60) != 0
            line = last_line(log.read_text())
            match = re.search(rf"topic {topic} partition 0: offsets (\d+)-999 ", line)
            assert line.startswith("waxlake: error: ") and match, log.read_text()[-3000:]
            first_lost = int(match.group(1))
            assert offsets_in(root, topic) == list(range(first_lost))
        else:
            wait_for_row(root, topic, 1499, proc, log)
            samples = scrape()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
            [(_, first_lost, last_lost)] = gaps(root, topic)
            assert last_lost == 999
            lost = samples[("waxlake_records_lost_total", (("partition", "0"), ("topic", topic)))]
            assert lost == 1000 - first_lost
            assert offsets_in(root, topic) == [*range(first_lost), *range(1000, 1500)]
    finally:
        kill_if_running(proc)


@pytest.mark.parametrize("new_records", [699, 800])
def test_recreated_topic_is_refused(new_records, log_broker, topic_factory, tmp_path):
    """700 records land; the topic is deleted and recreated with fewer or more records than that.

    With fewer, the table's next offset is beyond the end; with more, the offsets fit but the
    record at the table's marker is another one (or the broker's topic ID differs)."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, on_data_loss="continue")
    produce(log_broker, simple_items(topic, 1, 700))
    assert run_job(env, root / "_recovery").returncode == 0
    recreate_topic(log_broker, topic, 1)
    produce(log_broker, simple_items(topic, 1, new_records))

    result = run_job(env, root / "_recovery")

    assert result.returncode != 0
    line = last_line(result.stderr)
    assert line.startswith("waxlake: error: "), result.stderr[-3000:]
    assert f"topic {topic}" in line and "recreated" in line
    assert "new WAXLAKE_TABLE_ROOT" in line
    if "topic ID" not in line:  # a broker without topic IDs: named by offsets
        assert "partition 0" in line and "699" in line
    table = read_table(root / topic)
    assert table.height == 700 and table["value"].to_list() == [
        f"{topic}:{i}:".encode() + b"x" * 34 for i in range(700)
    ]


@pytest.mark.parametrize("new_records", [10, 400])
def test_recreated_while_running_stops_and_lands_nothing(
    new_records, log_broker, topic_factory, tmp_path
):
    """10: the new log ends before the job's position. 400: it has grown past it, so no offset
    is out of range and only the topic ID tells its records from the old topic's."""
    topic = topic_factory(1, bootstrap=log_broker)
    admin = AdminClient({"bootstrap.servers": log_broker})
    if new_records > 300 and broker_topic_ids(admin, [topic])[topic] is None:
        pytest.skip("the broker reports no topic IDs: README documents what is left without")
    root = tmp_path / "lake"
    log = tmp_path / "job.log"
    env = job_env(
        log_broker, [topic], root, kafka_config=json.dumps({"fetch.wait.max.ms": FETCH_WAIT_MS})
    )
    produce(log_broker, simple_items(topic, 1, 300))
    proc = start_job(env, root / "_recovery", log)
    try:
        wait_for_marker(root, topic, 299, proc, log)
        with stopped(proc):
            recreate_topic(log_broker, topic, 1)
            produce(log_broker, simple_items(topic, 1, new_records))
        assert proc.wait(timeout=90) != 0
    finally:
        kill_if_running(proc)
    line = last_line(log.read_text())
    assert line.startswith("waxlake: error: "), log.read_text()[-3000:]
    assert f"topic {topic}" in line and ("recreated" in line or "reused" in line), line
    assert pl.read_delta(str(root / topic)).height == 300


def move_marker(env: dict[str, str], root: Path, topic: str, *args: str):
    return subprocess.run(
        [WAXLAKE, "move-marker", "--root", str(root), "--topic", topic, "--partition", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_move_marker_refuses_to_go_back_over_rows_and_records_a_skip(
    log_broker, topic_factory, tmp_path
):
    """The way out after a recreated topic, step by step, as README describes it."""
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root)
    produce(log_broker, simple_items(topic, 1, 700))
    assert run_job(env, root / "_recovery").returncode == 0
    recreate_topic(log_broker, topic, 1)
    produced = produce(log_broker, simple_items(topic, 1, 800))
    assert run_job(env, root / "_recovery").returncode != 0

    back = move_marker(env, root, topic, "--next-offset", "0")
    assert back.returncode == 1
    assert "holds rows of partition 0 up to offset 699" in back.stderr
    assert 'delete("partition = 0 AND offset >= 0")' in back.stderr

    DeltaTable(str(root / topic)).delete("partition = 0 AND offset >= 0")
    old_topic = move_marker(env, root, topic, "--next-offset", "0", "--adopt-topic-id")
    if old_topic.returncode != 0:  # (a broker without topic IDs stamps nothing to refuse)
        assert old_topic.returncode == 2, old_topic.stderr
        assert f"move {root}/_data_loss/{topic} away first" in old_topic.stderr
        shutil.move(root / "_data_loss" / topic, tmp_path / "old-data-loss")
    moved = move_marker(env, root, topic, "--next-offset", "0", "--adopt-topic-id")
    assert moved.returncode == 0, moved.stderr
    assert gaps(root, topic) == []  # moving back skips nothing
    # The recovery store still holds the old topic's position (700): the moved marker wins.
    landed = run_job(env, root / "_recovery")
    assert landed.returncode == 0, landed.stderr[-3000:]
    table = read_table(root / topic).sort("offset")
    assert table["value"].to_list() == [r.value for r in produced]
    assert "resumes at offset 0, where waxlake move-marker put it" in landed.stderr

    ahead = move_marker(env, root, topic, "--next-offset", "900", "--reason", "bad batch")
    assert ahead.returncode == 0, ahead.stderr
    [gap] = read_table(root / "_data_loss" / topic).to_dicts()
    assert (gap["first_offset"], gap["last_offset"]) == (800, 899)
    assert gap["reason"].endswith("waxlake move-marker: bad batch")


def test_move_marker_moves_a_routed_table_and_records_the_skip_once(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A routed topic lands in tables named otherwise (`flows.events_by_type`): `--table` says
    which one moves; skipping the same offsets in each of them is one gap of the topic."""
    topic = topic_factory(1)
    kinds = [b"click", b"view", b"buy"]
    produce(kafka_bootstrap, [(topic, 0, None, b'{"type": "%s"}' % k, ()) for k in kinds])
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    assert run_job(env, None, flow="flows.events_by_type:flow").returncode == 0

    wrong = move_marker(env, root, "other-topic", "--table", "clicks", "--next-offset", "9")
    assert wrong.returncode == 2 and f"holds records of topic {topic}" in wrong.stderr
    for table in ("clicks", "views", "other_events"):
        moved = move_marker(env, root, topic, "--table", table, "--next-offset", "10")
        assert moved.returncode == 0, moved.stderr
        marker = DeltaTable(str(root / table)).transaction_version(app_id(topic, 0))
        assert marker == 9
    [gap] = read_table(root / "_data_loss" / topic).to_dicts()
    assert (gap["first_offset"], gap["last_offset"]) == (3, 9)
