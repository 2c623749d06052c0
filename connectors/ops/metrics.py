"""Prometheus metrics, in prometheus-client's default registry.

Bytewax serves that registry on `/metrics` (port 3030) when `BYTEWAX_DATAFLOW_API_ENABLED` is set,
so the job needs no metrics server of its own.

Consumer lag is the partition's end offset minus the offset committed to the table. The end offset
is the broker's high watermark, or the next offset the job has read if that is further: some
brokers (Tansu) report a high watermark that is too low, and a read position is proof of records.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and no dashboard uses them

RECORDS_READ = Counter("waxlake_records_read", "Records read from Kafka.", ["topic"])
BYTES_READ = Counter(
    "waxlake_bytes_read", "Bytes of keys and values read from Kafka (Arrow size).", ["topic"]
)
RECORDS_WRITTEN = Counter(
    "waxlake_records_written", "Records committed to the Delta table.", ["topic"]
)
BYTES_WRITTEN = Counter(
    "waxlake_bytes_written", "Arrow bytes of records committed to the Delta table.", ["topic"]
)
RECORDS_SKIPPED = Counter(
    "waxlake_records_skipped",
    "Replayed records dropped because the table already held them (exactly-once).",
    ["topic"],
)
COMMITS = Counter("waxlake_commits", "Flushes committed to the Delta table.", ["topic"])
COMMIT_SECONDS = Histogram(
    "waxlake_commit_duration_seconds",
    "Time to commit one flush (table write and group offset commit).",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMMIT_CONFLICTS = Counter(
    "waxlake_commit_conflicts",
    "Delta commits that failed because another writer committed first (then retried).",
    ["topic"],
)
GROUP_COMMIT_FAILURES = Counter(
    "waxlake_group_commit_failures", "Failed commits of offsets to the Kafka group.", ["topic"]
)
DEAD_LETTERS = Counter(
    "waxlake_dead_letters", "Records written to the dead-letter table.", ["topic"]
)
RECORDS_LOST = Counter(
    "waxlake_records_lost",
    "Offsets deleted from Kafka before they landed, accepted with WAXLAKE_ON_DATA_LOSS=continue.",
    ["topic", "partition"],
)
BUFFERED_ROWS = Gauge(
    "waxlake_buffered_rows", "Rows read and waiting for the next commit.", ["topic"]
)
COMMITTED_OFFSET = Gauge(
    "waxlake_committed_offset",
    "Last offset committed to the table, per partition.",
    ["topic", "partition"],
)
END_OFFSET = Gauge(
    "waxlake_end_offset",
    "End offset of the partition (see module doc for brokers with a wrong high watermark).",
    ["topic", "partition"],
)


class _LagCollector(Collector):
    """`waxlake_consumer_lag`: end offset minus the next offset after the committed one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._end: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}

    def set_end(self, topic: str, partition: int, end: int) -> None:
        with self._lock:
            key = (topic, partition)
            self._end[key] = max(end, self._end.get(key, 0))
            END_OFFSET.labels(topic, str(partition)).set(self._end[key])

    def set_committed(self, topic: str, partition: int, last_offset: int) -> None:
        with self._lock:
            self._committed[(topic, partition)] = last_offset
            COMMITTED_OFFSET.labels(topic, str(partition)).set(last_offset)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "waxlake_consumer_lag",
            "Records in the partition not yet committed to the table.",
            labels=["topic", "partition"],
        )
        with self._lock:
            for (topic, partition), end in sorted(self._end.items()):
                committed = self._committed.get((topic, partition), -1)
                family.add_metric([topic, str(partition)], max(0, end - committed - 1))
        yield family


_PER_TOPIC = (
    RECORDS_READ,
    BYTES_READ,
    RECORDS_WRITTEN,
    BYTES_WRITTEN,
    RECORDS_SKIPPED,
    COMMITS,
    COMMIT_SECONDS,
    COMMIT_CONFLICTS,
    GROUP_COMMIT_FAILURES,
    DEAD_LETTERS,
    BUFFERED_ROWS,
)


def declare_topics(topics: list[str]) -> None:
    """Export every per-topic series from the start (at 0), so rates and alerts see them."""
    for topic in topics:
        for metric in _PER_TOPIC:
            metric.labels(topic)


LAG = _LagCollector()
REGISTRY.register(LAG)

METRIC_NAMES = {
    "waxlake_records_read_total",
    "waxlake_bytes_read_total",
    "waxlake_records_written_total",
    "waxlake_bytes_written_total",
    "waxlake_records_skipped_total",
    "waxlake_commits_total",
    "waxlake_commit_duration_seconds_bucket",
    "waxlake_commit_duration_seconds_count",
    "waxlake_commit_duration_seconds_sum",
    "waxlake_commit_conflicts_total",
    "waxlake_group_commit_failures_total",
    "waxlake_dead_letters_total",
    "waxlake_records_lost_total",
    "waxlake_buffered_rows",
    "waxlake_committed_offset",
    "waxlake_end_offset",
    "waxlake_consumer_lag",
}
"""Every series name the job exports (what dashboards and alerts may reference)."""
