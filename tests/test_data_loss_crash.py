"""SIGKILL the job at random moments around Kafka-side losses, with WAXLAKE_ON_DATA_LOSS=continue.

While a producer keeps writing, the job is paused, everything it has not read yet is deleted from
Kafka, and the job is resumed and killed at a random moment: before, while or after it records
the gap. After a final run every produced offset is in exactly one place: the table (or its dead
letters), or one recorded gap; and every offset in a gap really was deleted.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from tests.broker_ops import delete_records, watermarks
from tests.jobs import (
    job_env,
    landed_keys,
    read_table,
    run_job,
    start_job,
    versions,
    wait_until_version_grows,
)
from tests.producing import BackgroundProducer

ROUNDS = 3


def recorded_gaps(root: Path, topic: str) -> list[tuple[int, int, int]]:
    uri = root / "_data_loss" / topic
    if not (uri / "_delta_log").exists():
        return []
    return list(read_table(uri).select("partition", "first_offset", "last_offset").iter_rows())


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    return {p: watermarks(bootstrap, topic, p)[1] for p in (0, 1)}


def test_sigkill_around_gaps(log_broker, topic_factory, tmp_path):
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    topic = topic_factory(2, bootstrap=log_broker)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    env = job_env(log_broker, [topic], root, on_data_loss="continue", max_batch_rows=300)

    background = BackgroundProducer(log_broker, {topic: 2}, rate=2_000).start()
    try:
        for _ in range(ROUNDS):
            before = versions(root, [topic])
            proc = start_job(env, recovery, log)
            wait_until_version_grows(lambda: versions(root, [topic]), before, proc, log)
            proc.send_signal(signal.SIGSTOP)
            paused_at = ends(log_broker, topic)
            while any(ends(log_broker, topic)[p] < paused_at[p] + 300 for p in (0, 1)):
                time.sleep(0.05)  # records the paused job cannot have read
            delete_records(log_broker, topic, ends(log_broker, topic))
            proc.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        produced = background.stop()
    final = run_job(env, recovery)
    assert final.returncode == 0, final.stderr[-3000:]

    want = {(r.partition, r.offset) for r in produced}
    landed = landed_keys(root, topic)
    duplicated = {k: n for k, n in landed.items() if n > 1}
    assert not duplicated, f"{context}: {len(duplicated)} offsets landed twice"
    gaps = recorded_gaps(root, topic)
    assert gaps, f"{context}: the test deleted records, so gaps must be recorded"
    lost: dict[tuple[int, int], int] = {}
    for partition, first, last in gaps:
        for offset in range(first, last + 1):
            lost[(partition, offset)] = lost.get((partition, offset), 0) + 1
    assert all(n == 1 for n in lost.values()), f"{context}: an offset is in two gaps"
    assert not set(lost) & set(landed), f"{context}: offsets both landed and recorded lost"
    starts = {p: watermarks(log_broker, topic, p)[0] for p in (0, 1)}
    assert all(o < starts[p] for p, o in lost), f"{context}: a gap covers records still in Kafka"
    missing = want - set(landed) - set(lost)
    assert not missing, f"{context}: {len(missing)} records neither landed nor recorded lost"
    assert set(landed) <= want and set(lost) <= want
