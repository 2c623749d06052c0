"""The freshness phase: produce time -> visible in the Delta table, at a fixed produce rate.

A fresh topic, the contender tailing it, records produced at a steady rate with their Kafka
timestamp set to the produce() wall time. Once the first commit is visible and 3 s more have
passed, every record produced in the next window is measured: freshness = when a poller (every
50 ms) first saw the table version holding it - its timestamp.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from connectors.local_broker import create_topic
from tests.benchmarks.ingest.contenders import WAXLAKE_CONTENDERS, Target, freshness_command
from tests.benchmarks.ingest.measure import Measured, run_measured
from tests.benchmarks.ingest.produce import PacedProducer
from tests.benchmarks.ingest.report import fmt
from tests.benchmarks.ingest.results import Freshness, quantile
from tests.benchmarks.ingest.throughput import waxlake_timings


class TablePoller(threading.Thread):
    """Polls a Delta table; for each new version, when it became visible and what it added."""

    def __init__(self, uri: Path, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.uri = str(uri)
        self.interval = interval
        self.stop_event = threading.Event()
        self.first_visible = threading.Event()
        self.latencies: list[pa.Array] = []  # visible ms - produce ms, per new file
        self.timestamps: list[pa.Array] = []
        self.window: tuple[int, int] | None = None
        self.visible_in_window = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:
            self.error = repr(exc)

    def _run(self) -> None:
        table: DeltaTable | None = None
        seen_files: set[str] = set()
        version = -1
        while not self.stop_event.wait(self.interval):
            if table is None:
                try:
                    table = DeltaTable(self.uri)
                except Exception:  # not created yet
                    continue
            else:
                table.update_incremental()
            if table.version() == version:
                continue
            visible_ms = time.time() * 1000
            version = table.version()
            files = set(table.file_uris())
            new = files - seen_files
            seen_files |= new
            for path in new:
                self._add_file(path, visible_ms)
            self.first_visible.set()

    def _add_file(self, path: str, visible_ms: float) -> None:
        # Delta stores timestamps in microseconds, whatever unit was written.
        ts = pq.read_table(path, columns=["timestamp"])["timestamp"].combine_chunks()
        ts_ms = pc.cast(pc.cast(ts, pa.timestamp("ms", "UTC"), safe=False), pa.int64())
        self.timestamps.append(ts_ms)
        self.latencies.append(pc.subtract(pa.scalar(visible_ms), pc.cast(ts_ms, "double")))
        if self.window is not None:
            inside = pc.and_(
                pc.greater_equal(ts_ms, self.window[0]), pc.less(ts_ms, self.window[1])
            )
            self.visible_in_window += pc.sum(inside).as_py() or 0

    def window_latencies(self) -> list[float]:
        assert self.window is not None
        lo, hi = self.window
        out: list[float] = []
        for ts, lat in zip(self.timestamps, self.latencies, strict=True):
            inside = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
            out.extend(pc.filter(lat, inside).to_pylist())
        return out


def run_freshness(
    name: str,
    bootstrap: str,
    partitions: int,
    size: int,
    rate: int,
    seconds: float,
    workdir: Path,
    epoch_s: int,
) -> Freshness:
    fresh = Freshness(name, rate, seconds)
    topic = f"fresh-{size}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions)
    root = workdir / f"fresh-{name}"
    root.mkdir(parents=True)
    log = workdir / f"fresh-{name}.log"
    target = Target(bootstrap, topic, partitions, root, workdir / f"fresh-{name}.report.json")
    argv, env = freshness_command(name, target, epoch_s)
    print(f"  freshness {name} at {rate:,}/s for {seconds:g} s ...", end="", flush=True)

    producer = PacedProducer(bootstrap, topic, partitions, size, rate)
    poller = TablePoller(target.uri)
    stop = threading.Event()
    measured: list[Measured] = []
    runner = threading.Thread(
        target=lambda: measured.append(run_measured(argv, env, log, stop_when=stop)), daemon=True
    )
    runner.start()
    producer.start()
    poller.start()
    try:
        _measure_window(producer, poller, runner, seconds)
    except Exception as exc:
        fresh.error = repr(exc)
    finally:
        producer.stop_event.set()
        stop.set()
        runner.join(120)
        poller.stop_event.set()
        poller.join(30)
    _collect(fresh, producer, poller, measured)
    if name in WAXLAKE_CONTENDERS:
        commit_ms = waxlake_timings(log)["commit_ms"]
    elif target.report.exists():
        commit_ms = json.loads(target.report.read_text()).get("commit_ms", [])
    else:
        commit_ms = []
    fresh.commits = len(commit_ms) or None
    fresh.commit_ms_p50 = quantile(commit_ms, 0.5)
    fresh.commit_ms_p99 = quantile(commit_ms, 0.99)
    if fresh.error is None and fresh.visible < fresh.produced:
        fresh.error = f"only {fresh.visible} of {fresh.produced} records visible before the stop"
    fresh.ok = fresh.error is None
    status = "" if fresh.ok else f" ({(fresh.error or '').splitlines()[0]})"
    print(
        f" p50 {fmt(fresh.freshness_ms_p50, 0)} ms, p99 {fmt(fresh.freshness_ms_p99, 0)} ms"
        + status,
        flush=True,
    )
    return fresh


def _measure_window(
    producer: PacedProducer, poller: TablePoller, runner: threading.Thread, seconds: float
) -> None:
    """Warm up until the first commit is visible, then 3 s more, then measure `seconds`."""
    if not poller.first_visible.wait(180):
        raise TimeoutError("no table version became visible within 180 s")
    start_ms = int(time.time() * 1000) + 3000
    window = (start_ms, start_ms + int(seconds * 1000))
    poller.window = producer.window = window
    time.sleep(max(0.0, window[1] / 1000 - time.time()) + 0.05)
    producer.stop_event.set()
    producer.join(90)
    deadline = time.monotonic() + max(60.0, 3 * seconds)
    while poller.visible_in_window < producer.in_window and time.monotonic() < deadline:
        if not runner.is_alive():
            break
        time.sleep(0.1)
    time.sleep(0.2)


def _collect(
    fresh: Freshness, producer: PacedProducer, poller: TablePoller, measured: list[Measured]
) -> None:
    fresh.produced = producer.in_window
    fresh.visible = poller.visible_in_window
    if measured:
        m = measured[0]
        fresh.peak_rss_mb = m.peak_rss_mb
        fresh.cpu_percent_of_core = 100 * m.cpu_s / (m.ended - m.started)
        fresh.exit_code = m.exit_code
        # Stopped by SIGINT: Bytewax's own KafkaSource flow exits 1 ("signal received"),
        # so the exit code is only recorded; what counts is what became visible.
    if poller.error and fresh.error is None:
        fresh.error = f"poller: {poller.error}"
    if poller.window is not None:
        latencies = poller.window_latencies()
        fresh.freshness_ms_p50 = quantile(latencies, 0.5)
        fresh.freshness_ms_p99 = quantile(latencies, 0.99)
        fresh.freshness_ms_max = max(latencies) if latencies else None
