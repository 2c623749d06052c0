"""One librdkafka consumer for every Kafka partition a Bytewax worker reads.

A consumer per partition costs four to five threads and a pthread key each (confluent-kafka makes
at most about 1,000 clients in a process) and polls on its own: 1,000 partitions were 4,000
threads, too many keys to start, and a third of a core when idle. Here the readers of one worker
share one consumer: `take()` polls it for whichever reader asks and hands every message to the
buffer of its partition, in order (records and the per-partition events alike: end of partition,
offset out of range), so each reader sees exactly what a consumer of its own would have given it.

Memory stays bounded however many partitions there are: nothing more is polled while all
buffers together hold `_POLLS_BUFFERED` polls (their readers go first), and a partition whose
buffer holds `_PAUSE_POLLS` polls is paused until its reader catches up (pausing at one poll
made 4 busy partitions read markedly slower: they were paused and resumed on every poll).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from connectors.config import Settings
from connectors.errors import KafkaFatalError
from connectors.kafka.client import make_consumer

log = logging.getLogger(__name__)

Key = tuple[str, int]
"""(topic, partition)."""

_POLLS_BUFFERED = 4
_PAUSE_POLLS = 2
_IDLE_FIRST = timedelta(milliseconds=20)
_IDLE_PER_PARTITION = timedelta(milliseconds=0.5)
_IDLE_MOST = timedelta(milliseconds=500)

# Errors that describe the state of the fetch, not a broken job: librdkafka keeps retrying.
TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
}


def _prefetch(settings: Settings) -> dict[str, int]:
    """librdkafka's prefetch limits are per consumer, so here shared by every partition: it
    stops fetching when its queue holds `queued.min.messages` (100,000) and then waits
    `fetch.queue.backoff.ms` (1 s) before trying again, so one consumer over 4 busy partitions
    read at half the rate of 4 consumers. With these it reads faster than 4 did. Memory stays
    bounded by `queued.max.messages.kbytes` (64 MB by default; it wins over the count). The
    user's own settings in WAXLAKE_KAFKA_CONFIG are kept."""
    wanted = {"queued.min.messages": 1_000_000, "fetch.queue.backoff.ms": 10}
    return {k: v for k, v in wanted.items() if k not in settings.kafka_config}


def is_fatal(error: KafkaError) -> bool:
    return bool(error.fatal()) or not (error.retriable() or error.code() in TRANSIENT)


def fail_or_warn(error: KafkaError, where: str) -> None:
    """A fatal Kafka error stops the job with what to do; any other is logged (it is retried)."""
    if is_fatal(error):
        raise KafkaFatalError(
            f"{where}: Kafka error {error.name()}: {error.str()}; check the broker and "
            "WAXLAKE_KAFKA_CONFIG (security, ACLs), then restart the job: nothing was "
            "lost, it resumes from the committed offsets"
        )
    log.warning("Kafka error on %s (retrying): %s", where, error.str())


class SharedConsumer:
    """The consumer of one worker and the per-partition buffers it fills (see the module doc).

    Used by one Bytewax worker thread only, like the readers that hold it: no locking."""

    def __init__(self, settings: Settings) -> None:
        self._buffers: dict[Key, list[Message]] = {}
        self._limit = settings.max_poll_records
        self._paused: set[Key] = set()
        self._buffered = 0
        self._members = 0
        self._drained = True
        self.gated = False
        self.polls = 0  # consume() calls, for tests and the benchmark
        self.consumer = make_consumer(
            settings,
            what=self.describe,
            # End-of-partition events: where bounded runs stop, how offsets without records
            # (transaction markers) at the end are covered, and how a log that now ends before
            # the table's marker shows (on brokers whose high watermark is unreliable).
            # Every partition assigned has a known position: out of range must reach us.
            **{"enable.partition.eof": True, "auto.offset.reset": "error"},
            **_prefetch(settings),
        )

    def describe(self) -> str:
        """What the consumer reads, for its log lines: "source t[0], t[1], t[2] and 8 more"."""
        names = [f"{topic}[{p}]" for topic, p in self._buffers]
        if not names:
            return "source (no partitions yet)"
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return "source " + ", ".join(names[:3]) + more

    def join(self) -> None:
        """A reader will use this consumer; `leave()` when it is done."""
        self._members += 1

    def leave(self, key: Key) -> None:
        self.unassign(key)
        self._members -= 1
        if self._members == 0:
            self.consumer.close()

    def assign(self, positions: Mapping[Key, int]) -> None:
        """Start fetching these partitions from these offsets, in one call."""
        for key in positions:
            self._buffers[key] = []
        self.consumer.incremental_assign(
            [TopicPartition(topic, p, offset) for (topic, p), offset in positions.items()]
        )

    def seek(self, key: Key, offset: int) -> None:
        """Fetch the partition again from `offset`, dropping what was buffered for it."""
        self.unassign(key)
        self.assign({key: offset})

    def unassign(self, key: Key) -> None:
        """Stop fetching the partition (its reader has ended) and forget its buffer."""
        buffer = self._buffers.pop(key, None)
        if buffer is None:
            return
        self._buffered -= len(buffer)
        tp = TopicPartition(*key)
        if key in self._paused:  # leave librdkafka no pause flag for a later assign
            self._paused.discard(key)
            self.consumer.resume([tp])
        self.consumer.incremental_unassign([tp])

    def take(self, key: Key) -> list[Message]:
        """Up to a poll's worth of the partition's messages, in offset order; polls the consumer
        first if the partition's buffer is short. After an empty answer, `idle` says whether
        the consumer had nothing queued at all (else other partitions' records were, and this
        partition's may be behind them)."""
        buffer = self._buffers[key]
        self.gated = False
        if len(buffer) < self._limit:
            if self._buffered < self._limit * _POLLS_BUFFERED:
                self._poll()
            else:
                self.gated = True  # every buffer together is full: their readers go first
        count = min(self._limit, len(buffer))
        if not count:
            return []
        taken = buffer[:count]
        del buffer[:count]
        self._buffered -= count
        if key in self._paused and len(buffer) < self._limit:
            self._paused.discard(key)
            self.consumer.resume([TopicPartition(*key)])
        return taken

    @property
    def idle(self) -> bool:
        """The last poll found nothing left to fetch: it returned less than a full poll."""
        return not self.gated and self._drained

    def idle_delay(self, empty_polls: int) -> timedelta:
        """How long a reader that found nothing `empty_polls` times in a row, with the consumer
        `idle`, waits: doubling from 20 ms, up to 0.5 ms per partition sharing the consumer (at
        most 0.5 s), so a worker makes about 2,000 idle calls a second however many partitions
        it reads. Not idle (records of other partitions were queued): 20 ms at most."""
        if not self.idle:
            return _IDLE_FIRST if self.gated else timedelta(0)
        most = min(_IDLE_MOST, max(_IDLE_FIRST, _IDLE_PER_PARTITION * len(self._buffers)))
        return min(most, _IDLE_FIRST * (1 << min(max(empty_polls - 1, 0), 10)))

    def _poll(self) -> None:
        messages = self.consumer.consume(self._limit, 0)
        self.polls += 1
        self._drained = len(messages) < self._limit
        if not messages:
            return
        buffers: dict[Any, list[Message]] = self._buffers  # message keys may hold None
        last: Any = None
        buffer: list[Message] | None = None
        touched: list[Any] = []
        added = 0
        for message in messages:
            key = (message.topic(), message.partition())
            if key != last:
                last, buffer = key, buffers.get(key)
                if buffer is not None:
                    touched.append(key)
            if buffer is not None:
                buffer.append(message)
                added += 1
            else:
                self._unrouted(message)
        self._buffered += added
        for key in touched:
            if len(buffers[key]) >= self._limit * _PAUSE_POLLS and key not in self._paused:
                self._paused.add(key)
                self.consumer.pause([TopicPartition(*key)])

    def _unrouted(self, message: Message) -> None:
        """A message of no partition assigned here: a record of a partition that was unassigned
        (dropped), or an error of the topic or the whole consumer."""
        error = message.error()
        if error is None:
            return
        topic = message.topic()
        keys = [key for key in self._buffers if key[0] == topic]
        if keys:  # a topic-level error: every partition of the topic must know
            for key in keys:
                self._buffers[key].append(message)
                self._buffered += 1
            return
        fail_or_warn(error, f"the consumer of {self.describe()}")
