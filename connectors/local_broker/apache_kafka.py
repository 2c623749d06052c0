"""A real single-node Apache Kafka broker (KRaft, broker and controller in one JVM).

The jars come from Maven (:mod:`connectors.local_broker.kafka_jars`). Each broker gets a fresh
temp dir: ``server.properties``, a log dir formatted by ``kafka.tools.StorageTool``, the broker's
log4j2 file ``broker.log`` and the JVM's own output ``stdout.log``. Settings are those of a
fast test broker: every internal topic with one replica and one partition, no initial
rebalance delay, and a log cleaner that compacts within a second of a segment being eligible.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Self

from connectors.local_broker.kafka_jars import LOG4J_CONFIG, KafkaJars, resolve_jars
from connectors.local_broker.process import (
    HOST,
    BrokerStartError,
    LocalBroker,
    free_port,
    launch_on_port,
    read_tail,
    spawn,
    stop_group,
)

KAFKA_START_TIMEOUT = 90.0  # a JVM on a busy 2-core machine
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true")

# A fast single-node test broker. Kafka's defaults are kept otherwise (auto-created topics on,
# as on most clusters: the job must never rely on or cause that).
TEST_BROKER_SETTINGS: Mapping[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",  # first group commit in well under a second
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "delete.topic.enable": "true",
    "log.cleaner.enable": "true",
    "log.cleaner.backoff.ms": "200",  # 15 s by default: a compacted test topic compacts quickly
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),  # 128 MiB off-heap by default
    "log.retention.check.interval.ms": "1000",
    "log.initial.task.delay.ms": "0",  # retention/cleanup tasks start at once, not after 30 s
    "num.network.threads": "2",
    "num.io.threads": "4",
}


def cluster_id() -> str:
    """A random KRaft cluster id: a base64url UUID without padding, as kafka-storage makes.

    Never one starting with "-" (1 in 64): the format command would read it as an option and
    fail ("argument --cluster-id/-t: expected one argument"); Kafka's Uuid.randomUuid skips
    those too.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def server_properties(
    port: int, controller_port: int, log_dir: Path, extra: Mapping[str, str] | None = None
) -> str:
    """``server.properties`` of a combined broker+controller with a static one-voter quorum."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        **TEST_BROKER_SETTINGS,
        **(extra or {}),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaBroker(LocalBroker):
    """An Apache Kafka broker process; :meth:`restart` keeps its ports and its log dir."""

    stop_timeout = 30.0  # a controlled shutdown; SIGKILL after that

    def __init__(
        self,
        jars: KafkaJars,
        port: int,
        controller_port: int,
        workdir: tempfile.TemporaryDirectory[str],
        argv: list[str],
        process: subprocess.Popen[bytes],
    ) -> None:
        root = Path(workdir.name)
        super().__init__(
            "kafka", f"{HOST}:{port}", process, root / "stdout.log", workdir, jars.version
        )
        self.jars = jars
        self.controller_port = controller_port
        self.root = root
        self.log_dir = root / "data"
        self.broker_log = root / "broker.log"
        self._argv = argv

    @property
    def title(self) -> str:
        return f"Apache Kafka {self.version}"

    def log_tail(self, lines: int = 40) -> str:
        """The broker's log4j2 file, then the JVM's own output (crashes, OOM) if any."""
        parts = [read_tail(self.broker_log, lines), read_tail(self.log_path, lines)]
        return "\n".join(p for p in parts if p)

    @classmethod
    def start(
        cls,
        port: int | None = None,
        timeout: float = KAFKA_START_TIMEOUT,
        jars: KafkaJars | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> Self:
        """Resolve the jars if needed, format a fresh log dir and start the broker.

        Raises ``BrokerUnavailable`` (no java/mvn, Maven failed) or ``BrokerStartError``.
        """
        jars = jars or resolve_jars()
        return launch_on_port(lambda p: cls._start_on(jars, p, timeout, settings), port)

    @classmethod
    def _start_on(
        cls,
        jars: KafkaJars,
        port: int,
        timeout: float,
        settings: Mapping[str, str] | None,
    ) -> Self:
        workdir = tempfile.TemporaryDirectory(prefix="waxlake-kafka-", ignore_cleanup_errors=True)
        root = Path(workdir.name)
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        config = root / "server.properties"
        config.write_text(server_properties(port, controller_port, root / "data", settings))
        java = [jars.java, *JVM_OPTIONS]
        java += [f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG}"]
        java += [f"-Dwaxlake.kafka.log={root / 'broker.log'}", "-cp", jars.classpath]
        fmt = [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config)]
        # A static quorum (controller.quorum.voters): format WITHOUT --standalone (rejected).
        formatted = subprocess.run(fmt, cwd=root, capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            workdir.cleanup()
            raise BrokerStartError(
                "kafka storage format failed (exit "
                f"{formatted.returncode}): {(formatted.stdout + formatted.stderr).strip()[-2000:]}",
                exited=False,
            )
        argv = [*java, "kafka.Kafka", str(config)]
        process = spawn(argv, root / "stdout.log", root)
        broker = cls(jars, port, controller_port, workdir, argv, process)
        broker.wait_ready(timeout)
        return broker

    def restart(self, timeout: float = KAFKA_START_TIMEOUT, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM: controlled shutdown; ``kill``: SIGKILL) and start the same
        command again: same ports, same log dir, same cluster. Returns once it answers."""
        if self._stopped:
            raise RuntimeError(f"{self!r} is stopped; it cannot restart")
        stop_group(self.process, self.stop_timeout, kill=kill)
        deadline = time.monotonic() + 10
        while not _port_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process = spawn(self._argv, self.log_path, self.root)
        self.wait_ready(timeout)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def start_kafka(
    port: int | None = None,
    timeout: float = KAFKA_START_TIMEOUT,
    settings: Mapping[str, str] | None = None,
) -> KafkaBroker:
    """Start an Apache Kafka broker; see :meth:`KafkaBroker.start`."""
    return KafkaBroker.start(port, timeout=timeout, settings=settings)


class GroupOffset(NamedTuple):
    """One row of ``kafka-consumer-groups --describe`` ("-" becomes None)."""

    topic: str
    partition: int
    current_offset: int | None
    log_end_offset: int | None
    lag: int | None


CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def kafka_consumer_groups(
    bootstrap: str, group: str, jars: KafkaJars | None = None, timeout: float = 60.0
) -> list[GroupOffset]:
    """Kafka's own consumer-groups tool, ``--describe --group``, parsed: an independent view
    of what a group committed and of the lag standard tools report.

    Raises ``RuntimeError`` with the tool's output if it reports an error (it exits 0 even
    for an unknown group).
    """
    jars = jars or resolve_jars()
    argv = [jars.java, "-Xmx256m", "-cp", jars.classpath, CONSUMER_GROUP_COMMAND]
    argv += ["--bootstrap-server", bootstrap, "--describe", "--group", group]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0 or "Error:" in output:
        raise RuntimeError(f"kafka-consumer-groups --describe --group {group}: {output.strip()}")
    return parse_group_offsets(done.stdout)


def parse_group_offsets(text: str) -> list[GroupOffset]:
    """Rows of the ``--describe`` table, by its header's column names."""
    rows: list[GroupOffset] = []
    columns: list[str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "GROUP":
            columns = fields
            continue
        if columns is None or len(fields) < len(columns):
            continue
        cell = dict(zip(columns, fields, strict=False))

        def number(name: str, cell: dict[str, str] = cell) -> int | None:
            value = cell[name]
            return None if value == "-" else int(value)

        rows.append(
            GroupOffset(
                topic=cell["TOPIC"],
                partition=int(cell["PARTITION"]),
                current_offset=number("CURRENT-OFFSET"),
                log_end_offset=number("LOG-END-OFFSET"),
                lag=number("LAG"),
            )
        )
    return rows
