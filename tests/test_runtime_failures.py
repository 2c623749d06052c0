"""Fatal errors while running end with one `waxlake: error:` line; topics that grow are picked up."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.broker_ops import add_partitions
from tests.jobs import (
    diff,
    job_env,
    kill_if_running,
    read_table,
    run_job,
    start_job,
    wait_while_running,
)
from tests.producing import produce, simple_items
from tests.test_data_loss import last_line, wait_for_marker


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


def can_mount(tmp_path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    probe = tmp_path / "probe"
    try:
        mount_tmpfs(probe, "1m")
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["umount", str(probe)], check=True)
    return True


def test_full_disk_ends_with_one_line_and_a_restart_lands_everything(
    kafka_bootstrap, topic_factory, tmp_path
):
    if not can_mount(tmp_path):
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    topic = topic_factory(1)
    lake = tmp_path / "lake"
    mount_tmpfs(lake, "2m")
    try:
        items = [(topic, 0, f"k{i}".encode(), os.urandom(2048), ()) for i in range(3000)]
        produced = produce(kafka_bootstrap, items)
        env = job_env(kafka_bootstrap, [topic], lake, max_batch_rows=500)

        full = run_job(env, tmp_path / "recovery")

        assert full.returncode != 0
        line = last_line(full.stderr)
        assert line.startswith(f"waxlake: error: committing topic {topic} to {lake}/{topic}")
        assert f"the disk under {lake}/{topic} is full" in line, full.stderr[-3000:]
        assert "Traceback" in full.stderr  # kept for debugging, before the line

        subprocess.run(["mount", "-o", "remount,size=64m", str(lake)], check=True)
        again = run_job(env, tmp_path / "recovery")
        assert again.returncode == 0, again.stderr[-3000:]
        got = Counter(read_table(lake / topic).select("partition", "offset").iter_rows())
        found = diff(produced, topic, got)
        assert not found.lost and not found.duplicated
    finally:
        subprocess.run(["umount", "-l", str(lake)], check=False)


def test_new_partitions_are_read_after_a_clean_restart(log_broker, topic_factory, tmp_path):
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    log = tmp_path / "job.log"
    env = job_env(log_broker, [topic], root, partition_check_interval_s=1)
    produced = produce(log_broker, simple_items(topic, 1, 100))
    proc = start_job(env, root / "_recovery", log)
    try:
        wait_for_marker(root, topic, 99, proc, log)
        add_partitions(log_broker, topic, 3)
        produced += produce(
            log_broker,
            [(topic, p, b"k", f"new-{p}-{i}".encode(), ()) for p in (1, 2) for i in range(50)],
        )
        started = time.monotonic()
        assert proc.wait(timeout=60) == 75, log.read_text()[-3000:]
        assert time.monotonic() - started < 60
    finally:
        kill_if_running(proc)
    assert f"topic {topic} grew from 1 to 3 partitions" in log.read_text()

    restarted = run_job(env, root / "_recovery")  # what Kubernetes does after exit code 75

    assert restarted.returncode == 0, restarted.stderr[-3000:]
    got = Counter(read_table(root / topic).select("partition", "offset").iter_rows())
    found = diff(produced, topic, got)
    assert not found.lost and not found.duplicated and not found.unknown


def test_object_store_gone_past_retries_ends_with_one_line(
    kafka_bootstrap, topic_factory, tmp_path
):
    from tests.s3 import S3Root, S3Unavailable, s3_job_env, start_moto

    try:
        server = start_moto(tmp_path)  # its own server: this test stops it
    except S3Unavailable as exc:
        pytest.skip(str(exc))
    log = tmp_path / "job.log"
    topic = topic_factory(1)
    root = S3Root(server, server.new_bucket())
    env = s3_job_env(kafka_bootstrap, [topic], root, "settings")
    options = {**root.storage_options, "max_retries": "2", "retry_timeout": "3s"}
    env["WAXLAKE_STORAGE_OPTIONS"] = json.dumps(options)
    produce(kafka_bootstrap, simple_items(topic, 1, 100))
    proc = start_job(env, tmp_path / "recovery", log)
    try:
        wait_while_running(
            proc, log, lambda: "committed s3://" in log.read_text(), "a commit to S3"
        )
        server.stop()
        produce(kafka_bootstrap, simple_items(topic, 1, 100))
        assert proc.wait(timeout=120) != 0
    finally:
        kill_if_running(proc)
        server.stop()
    line = last_line(log.read_text())
    assert line.startswith(f"waxlake: error: committing topic {topic} to {root.uri}/{topic}"), (
        log.read_text()[-3000:]
    )
    assert "the object store did not accept the commit" in line
