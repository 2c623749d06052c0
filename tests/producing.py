"""Produce real records for the tests, remembering where the broker put them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

Header = tuple[str, bytes | None]


@dataclass(frozen=True)
class Record:
    """A record as produced; `offset` is filled in from the delivery report."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class Recorder:
    """Delivery callback that keeps what the broker acknowledged, with offsets."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.errors: list[KafkaError] = []
        self._lock = threading.Lock()

    def __call__(
        self, err: KafkaError | None, msg: Message, headers: Sequence[Header] = ()
    ) -> None:
        """Delivery callback; delivery reports carry no headers, so the sender passes them."""
        if err is not None:
            self.errors.append(err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        record = Record(topic, partition, offset, msg.key(), msg.value(), tuple(headers))
        with self._lock:
            self.records.append(record)

    def with_headers(
        self, headers: Sequence[Header]
    ) -> Callable[[KafkaError | None, Message], None]:
        return lambda err, msg: self(err, msg, headers)


def producer(bootstrap: str, **config: str | int | bool) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            **config,
        }
    )


def produce(
    bootstrap: str,
    items: Iterable[tuple[str, int, bytes | None, bytes | None, Sequence[Header]]],
) -> list[Record]:
    """Produce (topic, partition, key, value, headers) items; return them with their offsets."""
    recorder = Recorder()
    prod = producer(bootstrap)
    for i, (topic, partition, key, value, headers) in enumerate(items):
        prod.produce(
            topic,
            key=key,
            value=value,
            partition=partition,
            headers=list(headers) or None,
            on_delivery=recorder.with_headers(headers),
        )
        if i % 10_000 == 0:
            prod.poll(0)
    assert prod.flush(60) == 0, "records left unacknowledged"
    assert not recorder.errors, recorder.errors
    return recorder.records


def simple_items(
    topic: str, partitions: int, count: int, size: int = 50
) -> list[tuple[str, int, bytes | None, bytes | None, Sequence[Header]]]:
    """`count` records spread over `partitions`, each value unique."""
    pad = b"x" * max(0, size - 16)
    return [
        (topic, i % partitions, f"k{i}".encode(), f"{topic}:{i}:".encode() + pad, ())
        for i in range(count)
    ]


@dataclass
class BackgroundProducer:
    """Produces to `topics` at about `rate` records/s until stopped; remembers what landed."""

    bootstrap: str
    topics: dict[str, int]
    rate: int = 5_000
    value_for: Callable[[str, int], bytes | None] = lambda topic, seq: f"{topic}:{seq}".encode()
    key_for: Callable[[int], bytes] = lambda seq: f"k{seq}".encode()
    partition_for: Callable[[int, int], int] = lambda seq, partitions: seq % partitions
    recorder: Recorder = field(default_factory=Recorder)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BackgroundProducer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        prod = producer(self.bootstrap)
        tick = 0.02
        per_tick = max(1, int(self.rate * tick))
        seq = 0
        while not self._stop.is_set():
            started = time.monotonic()
            for _ in range(per_tick):
                for topic, partitions in self.topics.items():
                    prod.produce(
                        topic,
                        key=self.key_for(seq),
                        value=self.value_for(topic, seq),
                        partition=self.partition_for(seq, partitions),
                        on_delivery=self.recorder,
                    )
                seq += 1
            prod.poll(0)
            time.sleep(max(0.0, tick - (time.monotonic() - started)))
        assert prod.flush(60) == 0

    def stop(self) -> list[Record]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=90)
        assert not self.recorder.errors, self.recorder.errors
        return self.recorder.records
