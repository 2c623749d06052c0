"""waxlake's Bytewax source: one partition per (topic, Kafka partition), one batch per poll.

The partitions a worker builds share one consumer and are started together (`Worker`), so a job
over a thousand partitions has a handful of threads, not thousands, and starts in seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from bytewax.inputs import FixedPartitionedSource
from confluent_kafka import KafkaException

from connectors.batch import KafkaBatch
from connectors.config import Settings
from connectors.kafka.client import list_partitions
from connectors.kafka.data_loss import PartitionGuard
from connectors.kafka.reader import KafkaPartitionReader
from connectors.kafka.shared_consumer import SharedConsumer
from connectors.kafka.starts import StartResolver
from connectors.ops.progress import PROGRESS

log = logging.getLogger(__name__)


def part_key(topic: str, partition: int) -> str:
    """Bytewax partition key of one Kafka partition (its resume state is stored under it)."""
    return f"{topic}#{partition}"


def parse_part_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("#")
    return topic, int(partition)


class Worker:
    """What the partitions one Bytewax worker builds share: the consumer, and their start."""

    def __init__(self, settings: Settings, tables: Mapping[str, Sequence[str]]) -> None:
        self._settings = settings
        self.shared = SharedConsumer(settings)
        self._resolver = StartResolver(settings, tables)
        self._waiting: list[KafkaPartitionReader] = []

    def add(self, reader: KafkaPartitionReader) -> None:
        self._waiting.append(reader)

    def start_all(self) -> None:
        """Start every reader built and not started yet: their positions together, then one
        assignment of all of them to the shared consumer."""
        readers, self._waiting = self._waiting, []
        readers = [r for r in readers if r.waiting]
        if not readers:
            return
        consumer = self.shared.consumer
        try:
            starts = self._resolver.resolve(consumer, {r.key: r.resume_state for r in readers})
            fetch = {r.key: r.begin(starts[r.key]) for r in readers}
            if self._settings.stop_at_end:
                self._count_to_read({k: starts[k].next_offset for k in fetch})
        finally:
            self._resolver.close()
        self.shared.assign(fetch)

    def _count_to_read(self, starts: dict[tuple[str, int], int]) -> None:
        """A bounded run's progress bar: the records between each start and its log's end."""
        try:
            ends = self._resolver.watermarks(list(starts))
        except KafkaException as exc:  # only the progress bar needs them
            log.warning("could not read the partitions' ends for the progress bar: %s", exc)
            return
        PROGRESS.add_to_read(sum(high - max(starts[key], low) for key, (low, high) in ends.items()))


class KafkaSource(FixedPartitionedSource[KafkaBatch, int | None]):
    """All partitions of the configured topics, one `KafkaBatch` per poll; each worker lists them
    all, Bytewax assigns each to exactly one worker.

    `tables`: per topic, the tables its records land in (default: one table named like the topic).
    Under exactly-once a partition resumes from its Bytewax resume state (consistent with every
    table and every stateful step), else after the lowest of its tables' markers.
    """

    def __init__(
        self, settings: Settings, tables: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._settings = settings
        self._tables = {t: list((tables or {}).get(t, [t])) for t in settings.topics}
        self._workers: dict[int, Worker] = {}
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        return [
            part_key(topic, partition)
            for topic, partitions in list_partitions(self._settings).items()
            for partition in partitions
        ]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> KafkaPartitionReader:
        topic, partition = parse_part_key(for_part)
        worker = self._worker()
        guard = PartitionGuard(self._settings, topic, partition, self._tables[topic])
        reader = KafkaPartitionReader(
            self._settings, worker.shared, topic, partition, resume_state, guard, worker.start_all
        )
        worker.add(reader)
        return reader

    def _worker(self) -> Worker:
        """The calling Bytewax worker thread's `Worker` (it builds and reads its partitions)."""
        thread = threading.get_ident()
        with self._lock:
            if thread not in self._workers:
                self._workers[thread] = Worker(self._settings, self._tables)
            return self._workers[thread]
