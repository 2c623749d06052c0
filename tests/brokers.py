"""Which Kafka broker a test session uses, started once, and a record of what ran.

Order for the session broker (``kafka_bootstrap``):

1. ``$KAFKA_BOOTSTRAP_SERVERS`` ("external");
2. a testcontainers Kafka if a Docker engine answers ("container");
3. Apache Kafka from Maven jars when ``java`` and ``mvn`` are on PATH ("kafka");
4. a local Tansu broker ("tansu").

``WAXLAKE_TEST_BROKER=kafka|tansu|noida`` forces one; a forced broker that cannot start fails
the tests that need it (it is never skipped).
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.local_broker import (
    BrokerStartError,
    BrokerUnavailable,
    LocalBroker,
    start_kafka,
    start_noida,
    start_tansu,
)
from connectors.local_broker.kafka_jars import cache_dir, is_resolved, kafka_version

FORCE_ENV = "WAXLAKE_TEST_BROKER"
FORCEABLE = ("kafka", "tansu", "noida")
# Kinds that hide aborted transactions and keep a real log (DeleteRecords, topic deletion).
REAL_LOG_KINDS = frozenset({"kafka", "noida", "external", "container"})


class NoBroker(Exception):
    """No broker could be had; ``forced`` if WAXLAKE_TEST_BROKER asked for this one."""

    def __init__(self, reason: str, *, forced: bool) -> None:
        super().__init__(reason)
        self.forced = forced


@dataclass
class SessionBroker:
    """A broker a session uses: its kind, address, a human title and what stops it."""

    kind: str
    bootstrap: str
    title: str
    started_s: float = 0.0
    broker: LocalBroker | None = None
    stopper: Callable[[], None] | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.stopper is not None:
            self.stopper()

    def describe(self) -> str:
        started = f", started in {self.started_s:.1f} s" if self.started_s else ""
        return f"{self.title} at {self.bootstrap} ({self.kind}{started})"


# Every broker a session started, in order, for the terminal summary.
STARTED: list[tuple[str, SessionBroker]] = []


def forced_kind() -> str | None:
    value = os.environ.get(FORCE_ENV, "").strip().lower()
    if not value:
        return None
    if value not in FORCEABLE:
        raise NoBroker(
            f"{FORCE_ENV}={value!r}: expected one of {', '.join(FORCEABLE)}", forced=True
        )
    return value


def kafka_possible() -> str | None:
    """None if Apache Kafka can be started from Maven jars here, else why not."""
    if not shutil.which("java"):
        return "no 'java' on PATH for Apache Kafka"
    if not shutil.which("mvn") and not is_resolved(cache_dir(kafka_version())):
        return "no 'mvn' on PATH to resolve the Apache Kafka jars"
    return None


def plan() -> str:
    """What the session will use, for the report header (nothing is started here)."""
    try:
        forced = forced_kind()
    except NoBroker as exc:
        return f"broker: {exc}"
    if forced:
        return f"broker: {FORCE_ENV}={forced} (started on first use)"
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return f"broker: external at {os.environ['KAFKA_BOOTSTRAP_SERVERS']}"
    why_not = kafka_possible()
    fallback = f"Tansu ({why_not})" if why_not else f"Apache Kafka {kafka_version()} (Maven jars)"
    return f"broker: a Docker Kafka if an engine answers, else {fallback}; started on first use"


def start_local(kind: str, data_dir: Callable[[], Path]) -> SessionBroker:
    """Start a local broker of ``kind``; ``BrokerUnavailable``/``BrokerStartError`` pass up."""
    started = time.monotonic()
    broker: LocalBroker
    if kind == "kafka":
        broker = start_kafka()
    elif kind == "tansu":
        broker = start_tansu()
    elif kind == "noida":
        broker = start_noida(data_dir())
    else:
        raise ValueError(kind)
    return SessionBroker(
        kind, broker.bootstrap, broker.title, time.monotonic() - started, broker=broker
    )


def start_session_broker(data_dir: Callable[[], Path]) -> SessionBroker:
    """The session broker, by the order in the module docstring; ``NoBroker`` if none."""
    forced = forced_kind()
    if forced:
        try:
            return start_local(forced, data_dir)
        except (BrokerUnavailable, BrokerStartError) as exc:
            raise NoBroker(f"{FORCE_ENV}={forced}: {exc}", forced=True) from exc
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return SessionBroker("external", env, "external broker")
    reasons: list[str] = []
    if docker_engine_answers():
        try:
            return _start_container()
        except Exception as exc:  # no image offline, etc.: fall back
            reasons.append(f"testcontainers Kafka failed: {exc!r}")
    else:
        reasons.append("no Docker engine answers")
    why_not = kafka_possible()
    if why_not is None:
        try:
            return start_local("kafka", data_dir)
        except (BrokerUnavailable, BrokerStartError) as exc:
            reasons.append(str(exc).partition("\n")[0])
    else:
        reasons.append(why_not)
    try:
        session = start_local("tansu", data_dir)
    except BrokerUnavailable as exc:
        reasons.append(str(exc))
        raise NoBroker("; ".join(reasons), forced=False) from exc
    session.notes.extend(reasons)
    return session


def _start_container() -> SessionBroker:
    from testcontainers.community.kafka import KafkaContainer

    started = time.monotonic()
    container: Any = KafkaContainer().start()
    return SessionBroker(
        "container",
        container.get_bootstrap_server(),
        f"testcontainers Kafka ({container.image})",
        time.monotonic() - started,
        stopper=container.stop,
    )


def _endpoint_accepts(docker_host: str) -> bool:
    """Raw connect to the Docker endpoint, so docker-py is only tried when something listens."""
    try:
        if docker_host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect(docker_host.removeprefix("unix://"))
            return True
        if docker_host.startswith("tcp://"):
            host, _, port = docker_host.removeprefix("tcp://").partition("/")[0].rpartition(":")
            with socket.create_connection((host, int(port or 2375)), timeout=3):
                return True
    except (OSError, ValueError):
        return False
    return True  # ssh:// etc.: let docker-py decide


def docker_engine_answers() -> bool:
    """True if a Docker engine answers a ping (the ``docker`` CLI alone is not enough)."""
    if not _endpoint_accepts(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"):
        return False
    answered = False
    with warnings.catch_warnings():
        # docker-py leaks its socket when a connect fails; that ResourceWarning would fail
        # the session under filterwarnings=error, so collect it here while it is ignored.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                answered = bool(client.ping())
            finally:
                client.close()
        except Exception:
            answered = False
        gc.collect()
    return answered
