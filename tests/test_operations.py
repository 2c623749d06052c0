"""Operating the job: /metrics from a running job, progress on a terminal, JSON logs."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from connectors.ops.metrics import METRIC_NAMES
from tests.jobs import (
    REPO,
    job_command,
    job_env,
    read_table,
    run_job,
    start_job,
    wait_while_running,
)
from tests.producing import BackgroundProducer, produce, simple_items


def scrape(
    url: str = "http://127.0.0.1:3030/metrics",
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_until(
    proc: subprocess.Popen[bytes], log: Path, done: Callable[[Samples], bool]
) -> Samples:
    """The job's metrics once `done` holds for them (within 60 s); the job is stopped then."""
    deadline = time.monotonic() + 60
    samples: Samples = {}
    try:
        while not done(samples):
            assert proc.poll() is None, log.read_text()[-3000:]
            names = sorted({name for name, _ in samples if name.startswith("waxlake_")})
            assert time.monotonic() < deadline, f"metrics never got there: {names}"
            time.sleep(0.3)
            try:
                samples = scrape()
            except OSError:
                continue
    finally:
        proc.kill()
        proc.wait(30)
    return samples


def test_metrics_endpoint_reports_what_was_produced(
    kafka_bootstrap, broker_kind, topic_factory, tmp_path
):
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 3_000))
    if broker_kind == "tansu":
        # The last record of each partition alone, so even Tansu's high watermark is exact.
        produced += produce(kafka_bootstrap, [(topic, 0, None, b"last", [])])
        produced += produce(kafka_bootstrap, [(topic, 1, None, b"last", [])])
    last = {p: max(r.offset for r in produced if r.partition == p) for p in (0, 1)}
    root = tmp_path / "lake"
    env = {**job_env(kafka_bootstrap, [topic], root), "BYTEWAX_DATAFLOW_API_ENABLED": "1"}
    log = tmp_path / "job.log"
    proc = start_job(env, root / "_recovery", log)
    written = ("waxlake_records_written_total", (("topic", topic),))
    samples = scrape_until(proc, log, lambda got: got.get(written) == len(produced))

    by_topic = (("topic", topic),)
    assert samples[("waxlake_records_read_total", by_topic)] == len(produced)
    assert samples[("waxlake_commits_total", by_topic)] >= 1
    assert (
        samples[("waxlake_commit_duration_seconds_count", by_topic)]
        == samples[("waxlake_commits_total", by_topic)]
    )
    assert samples[("waxlake_bytes_written_total", by_topic)] > 3_000 * 20
    assert samples[("waxlake_buffered_rows", by_topic)] == 0
    assert samples[("waxlake_commit_conflicts_total", by_topic)] == 0
    for partition in (0, 1):
        labels = (("partition", str(partition)), ("topic", topic))
        assert samples[("waxlake_committed_offset", labels)] == last[partition]
        assert samples[("waxlake_end_offset", labels)] == last[partition] + 1
        assert samples[("waxlake_consumer_lag", labels)] == 0
    exported = {name for name, labels in samples if name.startswith("waxlake_")}
    assert exported <= METRIC_NAMES
    assert exported == METRIC_NAMES


def test_idle_partitions_report_end_offset_and_lag(kafka_bootstrap, topic_factory, tmp_path):
    """After a restart with nothing new to read, every partition still has its lag series (the
    lag alert cannot see a partition that has none)."""
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 200))
    last = {p: max(r.offset for r in produced if r.partition == p) for p in (0, 1)}
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    assert run_job(env, root / "_recovery").returncode == 0
    env = {**env, "WAXLAKE_STOP_AT_END": "0", "BYTEWAX_DATAFLOW_API_ENABLED": "1"}
    log = tmp_path / "job.log"
    proc = start_job(env, root / "_recovery", log)
    wanted = [
        (name, (("partition", str(p)), ("topic", topic)))
        for p in (0, 1)
        for name in ("waxlake_end_offset", "waxlake_consumer_lag")
    ]
    samples = scrape_until(proc, log, lambda got: all(w in got for w in wanted))
    for partition in (0, 1):
        labels = (("partition", str(partition)), ("topic", topic))
        assert samples[("waxlake_end_offset", labels)] == last[partition] + 1
        assert samples[("waxlake_consumer_lag", labels)] == 0


def test_bounded_run_shows_progress_on_a_terminal_only(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(2)
    produce(kafka_bootstrap, simple_items(topic, 2, 2_000))
    env = {**job_env(kafka_bootstrap, [topic], tmp_path / "lake"), "WAXLAKE_STOP_AT_END": "1"}

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        job_command(None), env=env, cwd=REPO, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the job exited
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert proc.wait(60) == 0
    text = screen.decode(errors="replace")
    assert "landed: 100%" in text and "2.00k/2.00k" in text and "records/s" in text

    # Not a terminal (logs, CI): no progress bar.
    piped = run_job(job_env(kafka_bootstrap, [topic], tmp_path / "lake2"), None)
    assert piped.returncode == 0
    assert "landed:" not in piped.stderr


def test_json_logs(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, simple_items(topic, 1, 10))
    env = job_env(kafka_bootstrap, [topic], tmp_path / "lake", log_format="json")
    result = run_job(env, None)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    commits = [r for r in records if r["message"].startswith("committed")]
    assert len(commits) == 1
    assert commits[0]["level"] == "INFO" and commits[0]["logger"] == "connectors.delta.sink"
    assert "10 rows written" in commits[0]["message"] and "0:0-9" in commits[0]["message"]
    # Every line the job itself logs is JSON (librdkafka's own lines start with '%').
    others = [
        line for line in result.stderr.splitlines() if line and not line.startswith(("{", "%"))
    ]
    assert others == [], others


def test_commit_interval_commits_before_the_epoch_ends(kafka_bootstrap, topic_factory, tmp_path):
    """With a 60 s epoch, only WAXLAKE_COMMIT_INTERVAL_MS can make the table appear early."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, commit_interval_ms=200)
    log = tmp_path / "job.log"
    background = BackgroundProducer(kafka_bootstrap, {topic: 1}, rate=500).start()
    proc = start_job(env, root / "_recovery", log, snapshot_s=60)
    try:
        wait_while_running(
            proc,
            log,
            lambda: "committed" in log.read_text(),  # logged right after the commit
            "a commit before the epoch ended",
            timeout=30,  # well inside the first 60 s epoch
            every=0.1,
        )
    finally:
        proc.kill()
        proc.wait(30)
        background.stop()
    assert read_table(root / topic).height > 0
