"""SIGKILL the current-state job at random moments while keys keep changing (with deletes).

After a final run, the table must be exactly the state obtained by replaying the topic in order:
the same live keys, each with its last value, no deleted key, no key twice.
"""

from __future__ import annotations

import json
import os
import random

from tests.jobs import job_env, kill_at_random, run_job
from tests.producing import BackgroundProducer
from tests.test_upsert_flow import FLOW, replay, state

KEYS = 300


def key_for(seq: int) -> bytes:
    return f"key-{seq * 7919 % KEYS}".encode()


def partition_for(seq: int, partitions: int) -> int:
    return (seq * 7919 % KEYS) % partitions  # a key always in the same partition


def value_for(_topic: str, seq: int) -> bytes | None:
    return None if seq % 10 == 3 else json.dumps({"n": seq, "pad": "x" * (seq % 50)}).encode()


def test_sigkill_and_restart_keeps_the_state_exact(kafka_bootstrap, topic_factory, tmp_path):
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topic = topic_factory(3)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    env = job_env(kafka_bootstrap, [topic], root, max_batch_rows=400, key_buckets=8)
    background = BackgroundProducer(
        kafka_bootstrap,
        {topic: 3},
        rate=2_000,
        value_for=value_for,
        key_for=key_for,
        partition_for=partition_for,
    ).start()
    try:
        kill_at_random(env, recovery, log, root, [topic], rng, 4, flow=FLOW)
    finally:
        produced = background.stop()
    final = run_job(env, recovery, flow=FLOW)
    assert final.returncode == 0, final.stderr[-3000:]

    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    expected = replay(produced)
    got = state(root, topic)
    assert set(got) == set(expected), f"{context}: live keys differ"
    wrong = [
        k
        for k, record in expected.items()
        if (got[k]["partition"], got[k]["offset"], got[k]["n"])
        != (record.partition, record.offset, json.loads(record.value or b"null")["n"])
    ]
    assert not wrong, f"{context}: {len(wrong)} keys hold a stale change"
