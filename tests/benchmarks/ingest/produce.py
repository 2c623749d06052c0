"""Producing the benchmark's records: a bulk load before the throughput runs, a paced producer
for freshness. Values are slices of one random pool, so producing costs little per record."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer


class Deliveries:
    """The producer's delivery callback: acknowledged records and the first errors."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors: list[str] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        elif len(self.errors) < 10:
            self.errors.append(str(err))


def fast_producer(bootstrap: str, deliveries: Deliveries, linger_ms: int) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "on_delivery": deliveries,
        }
    )


def value_pool(size: int) -> bytes:
    return os.urandom(size + 4096)


def produce_values(
    bootstrap: str, topic: str, partitions: int, records: int, value: Callable[[int], bytes]
) -> float:
    """Produce `value(i)` keyed b"i" for i < `records`, round-robin over partitions; rec/s."""
    deliveries = Deliveries()
    prod = fast_producer(bootstrap, deliveries, linger_ms=20)
    started = time.monotonic()
    for i in range(records):
        data = value(i)
        while True:
            try:
                prod.produce(topic, data, b"%d" % i, partition=i % partitions)
                break
            except BufferError:
                prod.poll(0.05)
        if i % 10_000 == 0:
            prod.poll(0)
    left = prod.flush(120)
    elapsed = time.monotonic() - started
    if left or deliveries.errors or deliveries.ok != records:
        raise RuntimeError(
            f"produce failed: {left} unflushed, {deliveries.ok}/{records} acknowledged, "
            f"errors {deliveries.errors}"
        )
    return records / elapsed


def produce_bulk(bootstrap: str, topic: str, partitions: int, records: int, size: int) -> float:
    """Produce `records` values of `size` random-ish bytes round-robin; return records/s."""
    pool = value_pool(size)

    def value(i: int) -> bytes:
        j = (i * 7919) % 4096
        return pool[j : j + size]

    return produce_values(bootstrap, topic, partitions, records, value)


class PacedProducer(threading.Thread):
    """Produces at a fixed rate, each record's timestamp set to its produce() wall time (ms)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, size: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.size = size
        self.rate = rate
        self.deliveries = Deliveries()
        self.producer = fast_producer(bootstrap, self.deliveries, linger_ms=5)
        self.stop_event = threading.Event()
        self.window: tuple[int, int] | None = None  # [from, to) produce ms counted
        self.in_window = 0
        self.produced = 0

    def run(self) -> None:
        pool = value_pool(self.size)
        tick = 0.01
        per_tick = self.rate * tick
        due = 0.0
        started = time.monotonic()
        i = 0
        while not self.stop_event.is_set():
            due += per_tick
            now_ms = int(time.time() * 1000)
            counted = self.window is not None and self.window[0] <= now_ms < self.window[1]
            while i < int(due):
                j = (i * 7919) % 4096
                self.producer.produce(
                    self.topic,
                    pool[j : j + self.size],
                    b"%d" % i,
                    partition=i % self.partitions,
                    timestamp=now_ms,
                )
                i += 1
                if counted:
                    self.in_window += 1
            self.produced = i
            self.producer.poll(0)
            ticks = round(due / per_tick)
            time.sleep(max(0.0, started + ticks * tick - time.monotonic()))
        self.producer.flush(60)
