"""Kafka client configuration and checks shared by the source and the sink."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # OffsetSpec: re-exported
    AdminClient,
    OffsetSpec,
)

from connectors.config import ConfigError, Settings

log = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0


class ErrorLogger:
    """librdkafka `error_cb`: log broker trouble (rate-limited) so a dead broker is never silent.

    librdkafka itself reconnects with exponential backoff (`reconnect.backoff.ms`); fatal errors
    are raised by the source when it polls.
    """

    def __init__(self, what: str | Callable[[], str]) -> None:
        self._what = what
        self._last: dict[int, float] = {}

    def __call__(self, error: KafkaError) -> None:
        now = time.monotonic()
        if now - self._last.get(error.code(), -_LOG_EVERY_S) < _LOG_EVERY_S:
            return
        self._last[error.code()] = now
        level = logging.ERROR if error.fatal() else logging.WARNING
        what = self._what if isinstance(self._what, str) else self._what()
        log.log(level, "%s: Kafka error (librdkafka retries with backoff): %s", what, error)


def consumer_config(
    settings: Settings, *, what: str | Callable[[], str], **overrides: Any
) -> dict[str, Any]:
    """Consumer settings: waxlake's defaults, then the user's `WAXLAKE_KAFKA_CONFIG`, then ours.

    Offsets are never committed automatically: the sink commits them at the point the chosen
    guarantee needs.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group_id,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }
    config.update(settings.kafka_config)
    config.update(overrides)
    config["error_cb"] = ErrorLogger(what)
    return config


def make_consumer(
    settings: Settings, *, what: str | Callable[[], str], **overrides: Any
) -> Consumer:
    """A consumer; an invalid librdkafka setting becomes a ConfigError naming it."""
    try:
        return Consumer(consumer_config(settings, what=what, **overrides))
    except KafkaException as exc:
        raise ConfigError(
            f"WAXLAKE_KAFKA_CONFIG: librdkafka rejected the configuration: {exc.args[0].str()}"
        ) from None


_CONSUMER_ONLY = (
    *("isolation.", "auto.offset", "auto.commit", "enable.auto", "enable.partition.eof"),
    *("group.", "allow.auto", "queued.", "fetch.", "max.partition.fetch", "check.crcs"),
    *("session.timeout", "heartbeat.", "partition.assignment", "coordinator.query"),
    *("max.poll.interval", "consume.callback", "offset.store"),
)
"""Prefixes of librdkafka's consumer-only properties: an admin client warns about each
(`CONFWARN ... is a consumer property and will be ignored`), so they are left out of its config."""


_ADMIN_LOG = logging.getLogger("librdkafka.admin")


def make_admin(settings: Settings) -> AdminClient:
    """An admin client with the job's connection settings (security included).

    Its librdkafka log lines go to a Python logger, which confluent-kafka serves only when the
    client is polled, never from librdkafka's threads: a broker that does not answer is reported
    by the admin calls themselves, and a `Connect ... failed` line printed by a thread after the
    job's one `waxlake: error:` line would make that line no longer the last."""
    config = consumer_config(settings, what="admin")
    config = {k: v for k, v in config.items() if not k.startswith(_CONSUMER_ONLY)}
    config["logger"] = _ADMIN_LOG
    return AdminClient(config)


def list_partitions(
    settings: Settings, timeout_s: float = 15.0, admin: AdminClient | None = None
) -> dict[str, list[int]]:
    """Partitions of every configured topic; clear errors for a dead broker or a missing topic.

    Lists all topics instead of asking for each by name, so no broker auto-creates one.
    """
    try:
        admin = admin or make_admin(settings)
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT):
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS: no Kafka broker answered at {settings.bootstrap_servers} "
                f"within {timeout_s:.0f} s; check the address and that the broker is up"
            ) from None
        raise ConfigError(
            f"WAXLAKE_KAFKA_CONFIG: cannot use Kafka settings: {error.str()}"
        ) from None
    partitions: dict[str, list[int]] = {}
    missing = []
    for topic in settings.topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            missing.append(topic)
            continue
        partitions[topic] = sorted(meta.partitions)
    if missing:
        raise ConfigError(
            f"WAXLAKE_TOPICS: topic(s) {', '.join(missing)} do not exist on "
            f"{settings.bootstrap_servers}; create them first (waxlake never auto-creates topics)"
        )
    return partitions


def watermarks(
    settings: Settings, admin: AdminClient, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(log start, end) of many partitions in two ListOffsets requests per broker, the end as the
    job's consumers see it (under read_committed the last stable offset), like a consumer's
    `get_watermark_offsets`, which takes a round trip per partition."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return {}
    level = settings.kafka_config.get("isolation.level", "read_committed")  # as consumer_config
    isolation = (
        IsolationLevel.READ_UNCOMMITTED
        if level.lower() == "read_uncommitted"
        else IsolationLevel.READ_COMMITTED
    )
    ends: list[dict[tuple[str, int], int]] = []
    specs = (OffsetSpec.earliest(), OffsetSpec.latest())  # type: ignore[no-untyped-call]
    for spec in specs:
        futures = admin.list_offsets(
            {tp: spec for tp in wanted}, isolation_level=isolation, request_timeout=30
        )
        ends.append({(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()})
    low, high = ends
    return {key: (low[key], high[key]) for key in low}
