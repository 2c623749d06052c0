"""SIGKILL `python -m bytewax.run` at random moments while records flow, restart, and compare.

Each kill lands after the incarnation has committed at least once and while a producer keeps
writing, so it hits a job in the middle of reading, buffering and committing. The final bounded
run then drains everything, and the tables are compared with what the broker acknowledged.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.jobs import diff, job_env, kill_at_random, landed_keys, read_table, run_job
from tests.producing import BackgroundProducer

KILLS = 4


def mixed_json(topic: str, seq: int) -> bytes | None:
    """Good JSON objects mixed with every kind of bad record and tombstones."""
    if seq % 13 == 5:
        return None  # tombstone: a row flagged is_tombstone
    if seq % 11 == 3:
        return b"{not json"
    if seq % 7 == 2:
        return b'{"n": "not a number"}'  # n is an integer column
    if seq % 17 == 0:
        return b'{"n": 1, "pad": "' + b"x" * 300 + b'"}'  # over WAXLAKE_MAX_RECORD_BYTES
    return f'{{"n": {seq}, "topic_seq": "{topic}:{seq}"}}'.encode()


def mixed_raw(topic: str, seq: int) -> bytes | None:
    return b"x" * 300 if seq % 9 == 4 else f"{topic}:{seq}".encode()


@pytest.mark.parametrize(
    ("flow", "guarantee"),
    [
        ("kafka_to_delta", "exactly-once"),
        ("kafka_to_delta", "at-least-once"),
        ("kafka_to_delta", "at-most-once"),
        ("json_to_delta", "exactly-once"),
    ],
)
def test_sigkill_and_restart(flow, guarantee, kafka_bootstrap, topic_factory, tmp_path):
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topics = {topic_factory(3): 3, topic_factory(2): 2}
    names = list(topics)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    # Small buffers: many commits per epoch, so kills land between and inside commits.
    env = job_env(kafka_bootstrap, names, root, guarantee, max_batch_rows=700, max_record_bytes=200)
    module = f"flows.{flow}:flow"
    value_for = mixed_json if flow == "json_to_delta" else mixed_raw

    background = BackgroundProducer(
        kafka_bootstrap, topics, rate=3_000, value_for=value_for
    ).start()
    try:
        kill_at_random(env, recovery, log, root, names, rng, KILLS, flow=module)
    finally:
        produced = background.stop()
    final = run_job(env, recovery, flow=module)
    assert final.returncode == 0, final.stderr[-3000:]

    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    assert len(produced) > 0
    for topic in names:
        # Each record is a row of the table or of the dead-letter table.
        found = diff(produced, topic, landed_keys(root, topic))
        lost, duplicated, unknown = found.lost, found.duplicated, found.unknown
        assert not unknown, f"{context}: rows that were never produced: {sorted(unknown)[:5]}"
        if guarantee == "exactly-once":
            assert not lost, f"{context}: {sum(lost.values())} records lost"
            assert not duplicated, f"{context}: {sum(duplicated.values())} duplicates"
        elif guarantee == "at-least-once":
            assert not lost, f"{context}: {sum(lost.values())} records lost"
        else:
            assert not duplicated, f"{context}: {sum(duplicated.values())} duplicates"
        dead = read_table(root / "_dead_letters" / topic)
        assert dead.height > 0, "the mix has bad records: some must be dead letters"
        by_key = {(r.partition, r.offset): r for r in produced if r.topic == topic}
        for partition, offset, value in dead.select("partition", "offset", "value").iter_rows():
            assert by_key[(partition, offset)].value == value  # dead letters keep the raw record
        table = read_table(root / topic)
        if flow == "kafka_to_delta":
            for partition, offset, value in table.select(
                "partition", "offset", "value"
            ).iter_rows():
                assert by_key[(partition, offset)].value == value
        else:
            good = table.filter(~table["is_tombstone"])
            for partition, offset, seq in good.select("partition", "offset", "n").iter_rows():
                assert json.loads(by_key[(partition, offset)].value or b"null")["n"] == seq
            assert (
                table.filter(table["is_tombstone"])["n"].null_count() == table["is_tombstone"].sum()
            )
