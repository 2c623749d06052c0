"""Many partitions share one consumer per worker: few clients and threads, every record once.

With one librdkafka consumer per partition a job over 40 partitions ran 40 clients (about four
threads each); the readers of a worker now share one. Tiny polls make the shared consumer's
buffers fill, gate and pause, which must neither lose nor repeat a record.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from tests.jobs import job_env, landed_keys, run_job, start_job
from tests.producing import produce, simple_items

TOPICS = 4
PARTITIONS = 10


def make_topics(
    bootstrap: str, topic_factory, records: int
) -> tuple[list[str], list[tuple[str, int, int]]]:
    """TOPICS topics of PARTITIONS partitions, `records` records in each partition."""
    topics = [topic_factory(PARTITIONS) for _ in range(TOPICS)]
    produced = []
    for topic in topics:
        for r in produce(bootstrap, simple_items(topic, PARTITIONS, records * PARTITIONS)):
            produced.append((r.topic, r.partition, r.offset))
    return topics, sorted(produced)


def landed(root: Path, topics: list[str]) -> list[tuple[str, int, int]]:
    out = []
    for topic in topics:
        for (partition, offset), count in landed_keys(root, topic).items():
            out.extend([(topic, partition, offset)] * count)
    return out


def librdkafka_clients(pid: int) -> tuple[int, int]:
    """(librdkafka clients, threads) of a process: each client has one `rdk:main` thread."""
    names = [p.read_text().strip() for p in Path(f"/proc/{pid}/task").glob("*/comm")]
    return sum(1 for n in names if n == "rdk:main"), len(names)


def test_partitions_of_a_worker_share_one_consumer(kafka_bootstrap, topic_factory, tmp_path):
    topics, produced = make_topics(kafka_bootstrap, topic_factory, records=5)
    root = tmp_path / "lake"
    log = tmp_path / "job.log"
    env = job_env(kafka_bootstrap, topics, root)
    proc = start_job(env, root / "_recovery", log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(landed_safe(root, topics)) < len(produced):
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert sorted(landed(root, topics)) == produced, log.read_text()[-3000:]
        clients, threads = librdkafka_clients(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    reading = set(re.findall(r"reading (\S+\[\d+\]) from offset", log.read_text()))
    assert len(reading) == TOPICS * PARTITIONS
    # One consumer for the 40 source partitions and one for the group offsets of the 4 tables
    # (and the start-up checks' admin client, if still alive); a consumer per partition and one
    # per table made 40 + 4 (and some 200 threads).
    assert clients <= 3, f"{clients} librdkafka clients for 40 partitions of 4 topics"
    assert threads < 50, f"{threads} threads for 40 partitions of 4 topics"


def landed_safe(root: Path, topics: list[str]) -> list[tuple[str, int, int]]:
    try:
        return landed(root, topics)
    except Exception:  # a table being created
        return []


def test_bounded_run_over_many_partitions_lands_every_record_once(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Polls of 7 records over 40 partitions with 60 records each: the buffers of the shared
    consumer are over their limits all the time (gated polls, paused partitions)."""
    topics, produced = make_topics(kafka_bootstrap, topic_factory, records=60)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, topics, root, max_poll_records=7, max_batch_rows=100)

    first = run_job(env, root / "_recovery")
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(landed(root, topics)) == produced

    again = run_job(env, tmp_path / "fresh-recovery")  # resumes from the markers alone
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(landed(root, topics)) == produced
