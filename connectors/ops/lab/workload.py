"""The lab's workload: the same deterministic records for every guarantee, produced while the
job runs, and what the broker acknowledged, by (partition, offset).

Each record's Kafka timestamp is the wall time (ms) of its `produce()` call, so the table's own
`timestamp` column tells when a landed row was produced: latency needs no side table. Only
records with a successful delivery report count as produced; the lab's counts are against them.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

TICK_S = 0.02  # the producer paces itself in ticks of this length


@dataclass(frozen=True)
class Workload:
    """`records` records of `size` bytes over `partitions`, at `rate` records/s."""

    records: int
    size: int
    partitions: int
    rate: int

    def key(self, seq: int) -> bytes:
        return f"k{seq}".encode()

    def value(self, seq: int) -> bytes:
        """Unique per record, `size` bytes (at least the sequence number)."""
        head = f"{seq:012d}:".encode()
        return head + b"x" * max(0, self.size - len(head))

    def partition(self, seq: int) -> int:
        return seq % self.partitions

    @property
    def duration_s(self) -> float:
        return self.records / self.rate


class Acked:
    """Thread-safe record of the delivery reports: acknowledged (partition, offset), errors."""

    def __init__(self) -> None:
        self.partitions = array("i")
        self.offsets = array("q")
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self.errors.append(str(err))
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is None or offset is None or offset < 0:
            with self._lock:
                self.errors.append(f"delivery report without an offset: {partition}/{offset}")
            return
        with self._lock:
            self.partitions.append(partition)
            self.offsets.append(offset)

    def __len__(self) -> int:
        return len(self.offsets)


class BackgroundProducer(threading.Thread):
    """Produces the workload to `topic` at its rate (idempotent, so retries never duplicate),
    then flushes; `acked` holds what the broker acknowledged."""

    def __init__(
        self, bootstrap: str, topic: str, workload: Workload, config: Mapping[str, str]
    ) -> None:
        super().__init__(name=f"lab-producer-{topic}", daemon=True)
        self.topic = topic
        self.workload = workload
        self.acked = Acked()
        self.sent = 0
        self.unflushed = 0
        self.failure: str | None = None
        self._producer = Producer(
            {
                **config,
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "queue.buffering.max.messages": 1_000_000,
                # Quiet: a broker restart would print a line per reconnect into the lab's
                # progress; a record that fails for good arrives in its delivery report.
                "log_level": 0,
            }
        )

    def run(self) -> None:
        try:
            self._produce_all()
        except Exception as exc:  # reported by the runner; the counts stay exact
            self.failure = repr(exc)

    def _produce_all(self) -> None:
        work, producer = self.workload, self._producer
        per_tick = max(1, round(work.rate * TICK_S))
        started = time.monotonic()
        seq = 0
        while seq < work.records:
            for _ in range(min(per_tick, work.records - seq)):
                self._produce(seq)
                seq += 1
            self.sent = seq
            producer.poll(0)
            # Pace against the start, so a slow tick is made up, not lost.
            ahead = started + seq / work.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        self.unflushed = producer.flush(120)

    def _produce(self, seq: int) -> None:
        work = self.workload
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=work.key(seq),
                    value=work.value(seq),
                    partition=work.partition(seq),
                    timestamp=int(time.time() * 1000),
                    on_delivery=self.acked,
                )
                return
            except BufferError:  # the local queue is full (a broker restart): wait for room
                self._producer.poll(0.05)

    def finish(self, timeout: float) -> Acked:
        """Wait until everything was produced and acknowledged (or failed)."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"producer to {self.topic} still running after {timeout:.0f} s")
        return self.acked
