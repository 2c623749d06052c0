"""`python -m connectors.local_broker`: a real broker on the first stdout line, gone after SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.local_broker import create_topic
from connectors.local_broker.apache_kafka import cluster_id
from connectors.local_broker.process import group_alive
from tests.brokers import kafka_possible
from tests.jobs import REPO
from tests.producing import produce


@contextlib.contextmanager
def cli(kind: str, stderr: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The CLI in its own session, and its first stdout line; the caller signals it to stop,
    and this waits for it (killing it if it outlives 60 s)."""
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connectors.local_broker", "--kind", kind, *extra],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            yield proc, proc.stdout.readline().strip()  # blocks until the broker answers
        finally:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise


def consume_all(bootstrap: str, topic: str) -> list[bytes | None]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cli-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes | None] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                return values
            assert error is None, error
            values.append(msg.value())
    finally:
        consumer.close()
    raise AssertionError(f"no end of partition within 30 s; read {values}")


@pytest.mark.parametrize(
    ("kind", "stop"),
    [("tansu", signal.SIGTERM), ("kafka", signal.SIGTERM), ("tansu", signal.SIGHUP)],
)
def test_cli_serves_a_broker_until_sigterm(kind, stop, tmp_path):
    """SIGHUP (its terminal closed) stops it as cleanly as SIGTERM: no broker left behind."""
    if kind == "kafka" and (why := kafka_possible()):
        pytest.skip(why)
    stderr = tmp_path / "stderr.log"
    with cli(kind, stderr) as (proc, first):
        try:
            assert re.fullmatch(r"127\.0\.0\.1:\d+", first), (first, stderr.read_text())
            match = re.search(r"\(pid (\d+)\)", stderr.read_text())
            assert match, stderr.read_text()
            broker_pid = int(match[1])
            assert group_alive(broker_pid)  # the broker leads its own process group

            topic = f"cli-{uuid.uuid4().hex[:8]}"
            create_topic(first, topic, 1)
            produce(first, [(topic, 0, b"k", b"through the CLI", ())])
            assert consume_all(first, topic) == [b"through the CLI"]
        finally:
            proc.send_signal(stop)
    assert proc.returncode == 0, stderr.read_text()
    assert not group_alive(proc.pid)
    assert not group_alive(broker_pid), "the broker's process group outlived the CLI"


@pytest.mark.parametrize("port", ["taken", "70000"])
def test_cli_refuses_a_port_it_cannot_listen_on(port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = str(taken.getsockname()[1]) if port == "taken" else port
        done = subprocess.run(
            [sys.executable, "-m", "connectors.local_broker", "--kind", "noida", "--port", number],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    [line] = done.stderr.strip().splitlines()[-1:]
    expected = "is in use" if port == "taken" else "must be from 1 to 65535"
    assert f"--port {number}" in line and expected in line, done.stderr


def test_cli_says_what_is_missing_for_kafka(tmp_path):
    """No java: one line naming it, exit 1 (PATH has only the Python of this venv)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=str(bin_dir), WAXLAKE_KAFKA_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "connectors.local_broker", "--kind", "kafka"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no 'java' on PATH" in lines[0]


def test_cli_noida_keeps_data_in_the_given_dir(tmp_path):
    data = tmp_path / "noida-data"
    stderr = tmp_path / "stderr.log"
    with cli("noida", stderr, "--data-dir", str(data)) as (proc, bootstrap):
        try:
            assert bootstrap, stderr.read_text()
            topic = f"cli-{uuid.uuid4().hex[:8]}"
            create_topic(bootstrap, topic, 1)
            produce(bootstrap, [(topic, 0, None, b"kept", ())])
        finally:
            proc.send_signal(signal.SIGINT)
    assert proc.returncode == 0, stderr.read_text()
    assert any(data.iterdir()), "noida wrote nothing into --data-dir"


def test_cluster_ids_never_look_like_an_option():
    """1 in 64 base64url UUIDs starts with "-", which the storage format command rejects."""
    ids = {cluster_id() for _ in range(5_000)}
    assert len(ids) == 5_000
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
