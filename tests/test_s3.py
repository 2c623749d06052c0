"""Tables on S3: `WAXLAKE_TABLE_ROOT=s3://bucket/prefix` against a real S3 endpoint (moto server).

The recovery directory stays local (Bytewax has no object-store recovery backend); the tables,
their `txn` markers and the commits' conditional PUTs go over HTTP to the S3 server.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pyarrow as pa
import pytest

from connectors.delta.markers import app_id
from connectors.delta.table_writer import DeltaTableWriter
from tests.jobs import REPO, diff, run_job, start_job, wait_until_version_grows
from tests.producing import BackgroundProducer, Record, produce, simple_items
from tests.s3 import S3Root, s3_job_env
from tests.test_table_writer import TOPIC, expected, records

KILLS = 3
COMMITTED = re.compile(r"committed \S+: version \S+, (\d+) rows written, (\d+) already there")


def landed(root: S3Root, topic: str) -> Counter[tuple[int, int]]:
    """(partition, offset) of every row of the topic's table on S3, duplicates counted."""
    return Counter(root.read(topic).select("partition", "offset").iter_rows())


def assert_exactly_once(root: S3Root, topic: str, produced: list[Record]) -> None:
    """Every produced record is one row with its value; nothing else is in the table."""
    found = diff(produced, topic, landed(root, topic))
    lost, duplicated, unknown = found.lost, found.duplicated, found.unknown
    assert not lost, f"{sum(lost.values())} records lost, e.g. {sorted(lost)[:5]}"
    assert not duplicated, f"{sum(duplicated.values())} duplicates, e.g. {sorted(duplicated)[:5]}"
    assert not unknown, f"rows that were never produced: {sorted(unknown)[:5]}"
    values = {(r.partition, r.offset): r.value for r in produced if r.topic == topic}
    rows = root.read(topic).select("partition", "offset", "value").iter_rows()
    assert all(values[(p, o)] == v for p, o, v in rows), "a row's value differs from the record's"


def last_offsets(topic: str, produced: list[Record]) -> dict[int, int]:
    last: dict[int, int] = {}
    for r in produced:
        if r.topic == topic:
            last[r.partition] = max(last.get(r.partition, -1), r.offset)
    return last


def assert_markers(root: S3Root, topic: str, produced: list[Record]) -> None:
    """Each partition's `txn` marker is its last produced offset."""
    last = last_offsets(topic, produced)
    table = root.table(topic)
    got = {p: table.transaction_version(app_id(topic, p)) for p in last}
    assert got == last


def commit_counts(stderr: str) -> tuple[int, int]:
    """(rows written, rows already there) summed over a run's commit log lines."""
    pairs = [(int(w), int(s)) for w, s in COMMITTED.findall(stderr)]
    return sum(w for w, _ in pairs), sum(s for _, s in pairs)


@pytest.mark.parametrize("options_via", ["settings", "aws-env"])
def test_job_lands_every_record_once_on_s3(
    options_via, kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    """Storage options from WAXLAKE_STORAGE_OPTIONS, or from the standard AWS_* variables."""
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 2_000))
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, options_via)
    recovery = tmp_path / "recovery"

    first = run_job(env, recovery)
    assert first.returncode == 0, first.stderr[-3000:]
    assert_exactly_once(s3_root, topic, produced)
    assert_markers(s3_root, topic, produced)
    assert commit_counts(first.stderr) == (2_000, 0)
    # The table is in the bucket (log and data files), nothing was written to a local "s3:" path.
    keys = s3_root.keys(topic)
    assert any("/_delta_log/" in k and k.endswith(".json") for k in keys), keys
    assert any(k.endswith(".parquet") for k in keys), keys
    assert not (REPO / "s3:").exists()
    assert not any(p.name.startswith("s3") for p in tmp_path.iterdir())

    # `waxlake status` reads the markers on S3 with the same settings.
    shown = subprocess.run(
        [sys.executable, "-m", "connectors.ops.cli", "status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    (table,) = json.loads(shown.stdout)["tables"]
    committed = {p["partition"]: p["committed_offset"] for p in table["partitions"]}
    assert committed == last_offsets(topic, produced)

    version = s3_root.version(topic)
    second = run_job(env, recovery)
    assert second.returncode == 0, second.stderr[-3000:]
    assert s3_root.version(topic) == version, "a run with nothing new made a commit"
    assert_exactly_once(s3_root, topic, produced)


def test_sigkill_and_restart_on_s3(kafka_bootstrap, topic_factory, s3_root, tmp_path):
    """tests/test_crash.py's exactly-once case with the tables on S3."""
    seed = int(os.environ.get("WAXLAKE_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    topics = {topic_factory(3): 3, topic_factory(2): 2}
    names = list(topics)
    recovery = tmp_path / "recovery"
    log = tmp_path / "job.log"
    # Small buffers: many commits per epoch, so kills land between and inside commits.
    env = s3_job_env(kafka_bootstrap, names, s3_root, "settings", max_batch_rows=700)

    def versions() -> dict[str, int | None]:
        return {t: s3_root.version(t) for t in names}

    background = BackgroundProducer(kafka_bootstrap, topics, rate=3_000).start()
    try:
        for _ in range(KILLS):
            before = versions()
            proc = start_job(env, recovery, log)
            try:
                wait_until_version_grows(versions, before, proc, log)
                time.sleep(rng.uniform(0.0, 1.5))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
    finally:
        produced = background.stop()
    final = run_job(env, recovery)
    assert final.returncode == 0, final.stderr[-3000:]

    assert produced
    for topic in names:
        try:
            assert_exactly_once(s3_root, topic, produced)
        except AssertionError as exc:
            raise AssertionError(
                f"{topic}: seed={seed} (WAXLAKE_CRASH_SEED={seed}): {exc}"
            ) from None


def _race(
    uri: str,
    storage_options: dict[str, str],
    step: int,
    barrier: multiprocessing.synchronize.Barrier,
    retries: multiprocessing.queues.Queue[int],
) -> None:
    """Write offsets 0..599 of two partitions in batches of `step`, as a zombie instance would."""
    writer = DeltaTableWriter(uri, TOPIC, storage_options=storage_options, max_attempts=500)
    barrier.wait()
    conflicts = 0
    for first in range(0, 600, step):
        last = min(first + step, 600) - 1
        result = writer.write_exactly_once(
            pa.concat_tables([records(0, first, last), records(1, first, last)])
        )
        conflicts += result.attempts - 1
    retries.put(conflicts)


def test_two_writers_racing_on_one_s3_table_never_duplicate(s3_root):
    uri = s3_root.table_uri(TOPIC)
    ctx = multiprocessing.get_context("spawn")  # fork after deltalake is loaded panics
    barrier = ctx.Barrier(2)
    retries: multiprocessing.queues.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(uri, s3_root.storage_options, step, barrier, retries))
        for step in (50, 70)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
    assert [proc.exitcode for proc in procs] == [0, 0]
    conflicts = [retries.get(timeout=5) for _ in procs]

    got = sorted(landed(s3_root, TOPIC).elements())
    assert len(got) == len(set(got)), f"duplicate (partition, offset) rows (conflicts {conflicts})"
    assert got == expected((0, 0, 599), (1, 0, 599))
    table = s3_root.table(TOPIC)
    assert table.transaction_version(app_id(TOPIC, 0)) == 599
    assert table.transaction_version(app_id(TOPIC, 1)) == 599


def test_losing_the_local_recovery_directory_loses_nothing(
    kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    """With the tables on S3 and the recovery store gone, each partition resumes at its marker."""
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 1_000))
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, "settings")
    recovery = tmp_path / "recovery"

    first = run_job(env, recovery)
    assert first.returncode == 0, first.stderr[-3000:]
    assert list(recovery.glob("part-*.sqlite3")), "the run made no recovery store"
    shutil.rmtree(recovery)

    more = [(t, p, k, (v or b"") + b":second", h) for t, p, k, v, h in simple_items(topic, 2, 600)]
    produced += produce(kafka_bootstrap, more)
    second = run_job(env, recovery)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_exactly_once(s3_root, topic, produced)
    assert_markers(s3_root, topic, produced)
    # It resumed from the markers on S3: nothing old was read again and filtered out.
    assert commit_counts(second.stderr) == (600, 0)


def test_decoded_flow_dead_letters_and_new_columns_on_s3(
    kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    """`flows.json_to_delta` on S3: typed rows, dead letters under `_dead_letters/`, a new field."""
    topic = topic_factory(2)
    good = [(topic, i % 2, f"k{i}".encode(), json.dumps({"n": i}).encode(), ()) for i in range(40)]
    bad = [(topic, 0, b"bad", b"{not json", ()), (topic, 1, b"list", b"[1, 2]", ())]
    produced = produce(kafka_bootstrap, [*good, *bad])
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, "settings")
    recovery = tmp_path / "recovery"
    flow = "flows.json_to_delta:flow"

    first = run_job(env, recovery, flow=flow)
    assert first.returncode == 0, first.stderr[-3000:]
    dead_topic = f"_dead_letters/{topic}"
    assert sorted(s3_root.read(topic)["n"].to_list()) == list(range(40))
    assert sorted(s3_root.read(dead_topic)["key"].to_list()) == [b"bad", b"list"]

    produced += produce(kafka_bootstrap, [(topic, 1, b"new", b'{"n": 99, "vip": true}', ())])
    second = run_job(env, recovery, flow=flow)
    assert second.returncode == 0, second.stderr[-3000:]
    table = s3_root.read(topic)
    assert table.filter(table["n"] == 99)["vip"].to_list() == [True]
    assert table["vip"].null_count() == 40
    # Each record is in exactly one of the two tables, once.
    both = landed(s3_root, topic) + landed(s3_root, dead_topic)
    assert both == Counter((r.partition, r.offset) for r in produced)


@pytest.mark.parametrize("problem", ["missing bucket", "dead endpoint"])
def test_unreachable_s3_root_stops_with_one_line(
    problem, kafka_bootstrap, topic_factory, s3_root, tmp_path
):
    from connectors.local_broker import free_port

    topic = topic_factory(1)
    env = s3_job_env(kafka_bootstrap, [topic], s3_root, "settings")
    if problem == "missing bucket":
        env["WAXLAKE_TABLE_ROOT"] = "s3://waxlake-no-such-bucket/lake"
    else:
        options = {**s3_root.storage_options, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
        env["WAXLAKE_STORAGE_OPTIONS"] = json.dumps(options)
    result = run_job(env, tmp_path / "recovery", timeout=60)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("waxlake: error: WAXLAKE_TABLE_ROOT: cannot read s3://"), last
