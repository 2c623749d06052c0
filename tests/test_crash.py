"""SIGKILL `python -m bytewax.run` at random moments while records flow, restart, and compare.

Each kill lands after the incarnation has committed at least once and while a producer keeps
writing, so it hits a job in the middle of reading, buffering and committing. The final bounded
run then drains everything, and the tables are compared with what the broker acknowledged.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from tests.jobs import BackgroundProducer, job_env, read_table, run_job, start_job

KILLS = 4


def versions(root: Path, topics: list[str]) -> dict[str, int]:
    out = {}
    for topic in topics:
        uri = str(root / topic)
        if DeltaTable.is_deltatable(uri):
            out[topic] = DeltaTable(uri).version()
    return out


def wait_for_a_commit(
    root: Path, topics: list[str], before: dict[str, int], proc, log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"job exited early with {proc.returncode}:\n{log.read_text()[-3000:]}")
        now = versions(root, topics)
        if any(now.get(t, -1) > before.get(t, -1) for t in topics):
            return
        time.sleep(0.05)
    pytest.fail(f"job made no commit within 60 s:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once", "at-most-once"])
def test_sigkill_and_restart(guarantee, kafka_bootstrap, topic_factory, tmp_path):
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topics = {topic_factory(3): 3, topic_factory(2): 2}
    names = list(topics)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    # Small buffers: many commits per epoch, so kills land between and inside commits.
    env = job_env(kafka_bootstrap, names, root, guarantee, max_batch_rows=700)

    background = BackgroundProducer(kafka_bootstrap, topics, rate=3_000).start()
    try:
        for _ in range(KILLS):
            before = versions(root, names)
            proc = start_job(env, recovery, log)
            wait_for_a_commit(root, names, before, proc, log)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        produced = background.stop()
    final = run_job(env, recovery)
    assert final.returncode == 0, final.stderr[-3000:]

    context = f"seed={seed} (rerun with WAXLAKE_CRASH_SEED={seed})"
    assert len(produced) > 0
    for topic in names:
        want = Counter((r.partition, r.offset) for r in produced if r.topic == topic)
        table = read_table(root / topic)
        got = Counter(table.select("partition", "offset").iter_rows())
        lost = want - got
        duplicated = {k: n - 1 for k, n in got.items() if n > 1}
        unknown = set(got) - set(want)
        assert not unknown, f"{context}: rows that were never produced: {sorted(unknown)[:5]}"
        if guarantee == "exactly-once":
            assert not lost, f"{context}: {sum(lost.values())} records lost"
            assert not duplicated, f"{context}: {sum(duplicated.values())} duplicates"
        elif guarantee == "at-least-once":
            assert not lost, f"{context}: {sum(lost.values())} records lost"
        else:
            assert not duplicated, f"{context}: {sum(duplicated.values())} duplicates"
        # Content, not only keys: each row's value is the one produced at its offset.
        values = {(r.partition, r.offset): r.value for r in produced if r.topic == topic}
        for partition, offset, value in table.select("partition", "offset", "value").iter_rows():
            assert values[(partition, offset)] == value
