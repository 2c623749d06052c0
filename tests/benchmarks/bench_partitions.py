"""Many-partitions benchmark: what waxlake costs per Kafka partition, with little data.

Run from the repository root, with the project's dev environment:

    python tests/benchmarks/bench_partitions.py                    # 100 topics x 10 partitions
    python tests/benchmarks/bench_partitions.py --broker kafka     # on Apache Kafka (java, mvn)
    python tests/benchmarks/bench_partitions.py --topics 20 --partitions 10 --idle-seconds 10

It starts a local broker, creates the topics, produces a few records to every partition, then
runs the real job (`python -m bytewax.run flows.kafka_to_delta:flow`, exactly-once, `-r`, `-s 5`)
three times, each as its own process (through bench_launch.py, so its peak RSS is its own):

  bounded   a first run on a fresh table root, WAXLAKE_STOP_AT_END=1, to exit
  restart   the same root again, bounded: every partition resumes, nothing is left to read
  idle      a first run on a fresh root, unbounded: once every record has landed, CPU is sampled
            for --idle-seconds, then SIGINT stops it cleanly

Per run: wall time and CPU (user + sys) to exit, peak RSS and peak thread count (sampled from
/proc every 50 ms), and start-up times from the job's INFO log: process start to the first
"reading <topic>[p]" line, to the line of the last partition, and to the first "committed" line.
Every run checks that each table holds every produced record exactly once. Prints a table and
writes JSON (default tests/benchmarks/results/partitions.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script: make `connectors` importable
    sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from connectors.local_broker import create_topic, start_broker  # noqa: E402
from tests.benchmarks.sampled_job import Job  # noqa: E402

DEFAULT_JSON = HERE / "results" / "partitions.json"
_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_READING = re.compile(_LOG_TIME + r" INFO connectors\.kafka\.\w+: reading (\S+)\[(\d+)\] from")
_COMMITTED = re.compile(
    _LOG_TIME + r" INFO connectors\.delta\.sink: committed .*?(\d+) rows written"
)


@dataclass
class RunResult:
    name: str
    ok: bool = False
    error: str | None = None
    exit_code: int | None = None
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    peak_threads: int | None = None
    first_reading_s: float | None = None
    all_reading_s: float | None = None
    first_commit_s: float | None = None
    landed_s: float | None = None  # unbounded run: every record committed
    idle_cpu_percent: float | None = None
    idle_threads: int | None = None
    idle_rss_mb: float | None = None
    rows: int | None = None
    notes: list[str] = field(default_factory=list)


def log_times(log: Path) -> dict[str, Any]:
    reading: dict[tuple[str, int], float] = {}
    commits: list[float] = []
    rows = 0
    for line in log.read_text(errors="replace").splitlines():
        if m := _READING.match(line):
            reading.setdefault((m.group(2), int(m.group(3))), _when(m.group(1)))
        elif m := _COMMITTED.match(line):
            commits.append(_when(m.group(1)))
            rows += int(m.group(2))
    return {"reading": reading, "commits": commits, "rows": rows}


def _when(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def produce(bootstrap: str, topics: list[str], partitions: int, per_partition: int) -> int:
    errors: list[str] = []
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    count = 0
    for topic in topics:
        for p in range(partitions):
            for i in range(per_partition):
                producer.produce(
                    topic,
                    f"{topic}:{p}:{i}".encode() + b"x" * 150,
                    b"%d" % i,
                    partition=p,
                    on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
                )
                count += 1
        producer.poll(0)
    if producer.flush(60) or errors:
        raise RuntimeError(f"produce failed: {errors[:5]}")
    return count


def check_tables(root: Path, topics: list[str], per_topic: int) -> tuple[int, str | None]:
    """(rows landed, the first problem): every record exactly once in its topic's table."""
    total = 0
    for topic in topics:
        uri = root / topic
        if not (uri / "_delta_log").exists():
            return total, f"no table for {topic}"
        counts = (
            pl.scan_delta(str(uri))
            .select(pl.len().alias("n"), pl.struct("partition", "offset").n_unique().alias("u"))
            .collect()
        )
        n, unique = int(counts["n"][0]), int(counts["u"][0])
        total += n
        if n != per_topic or unique != per_topic:
            return total, f"{topic}: {n} rows ({unique} unique), expected {per_topic}"
    return total, None


def job_argv(root: Path, epoch_s: int) -> list[str]:
    flow = "flows.kafka_to_delta:flow"
    recovery = str(root / "_recovery")
    return [
        sys.executable,
        "-m",
        "bytewax.run",
        flow,
        "-r",
        recovery,
        "-s",
        str(epoch_s),
        "-b",
        "0",
    ]


def job_env(bootstrap: str, topics: list[str], root: Path, bounded: bool) -> dict[str, str]:
    from tests.benchmarks.ingest.contenders import base_env

    return {
        **base_env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WAXLAKE_TOPICS": ",".join(topics),
        "WAXLAKE_TABLE_ROOT": str(root),
        "WAXLAKE_GUARANTEE": "exactly-once",
        "WAXLAKE_GROUP_ID": f"bench-parts-{uuid.uuid4().hex[:12]}",
        "WAXLAKE_STOP_AT_END": "1" if bounded else "0",
        "WAXLAKE_LOG_LEVEL": "INFO",
    }


@dataclass
class Setup:
    bootstrap: str
    topics: list[str]
    partitions: int
    per_topic: int
    epoch_s: int
    workdir: Path

    @property
    def total(self) -> int:
        return self.per_topic * len(self.topics)

    @property
    def partition_count(self) -> int:
        return self.partitions * len(self.topics)


def summarise(result: RunResult, job: Job, usage: dict[str, Any], setup: Setup) -> None:
    """Fill in what every run reports: exit, wall, CPU, peaks, start-up lines."""
    result.exit_code = usage.get("exit_code")
    started = usage.get("started", job.started)
    result.wall_s = usage.get("ended", time.time()) - started
    result.cpu_s = usage.get("cpu_s")
    rss = max([s.rss_kb for s in job.samples] + [usage.get("maxrss_kb", 0)])
    result.peak_rss_mb = rss / 1024
    result.peak_threads = max((s.threads for s in job.samples), default=None)
    times = log_times(job.log)
    reading = sorted(times["reading"].values())
    if reading:
        result.first_reading_s = reading[0] - started
        if len(reading) >= setup.partition_count:
            result.all_reading_s = reading[-1] - started
        else:
            result.notes.append(f"only {len(reading)} partitions logged 'reading'")
    if times["commits"]:
        result.first_commit_s = times["commits"][0] - started


def run_bounded(name: str, setup: Setup, root: Path) -> RunResult:
    result = RunResult(name)
    log = setup.workdir / f"{name}.log"
    env = job_env(setup.bootstrap, setup.topics, root, bounded=True)
    job = Job(job_argv(root, setup.epoch_s), env, log)
    usage = job.finish(timeout=900)
    summarise(result, job, usage, setup)
    conclude(result, root, setup, log)
    return result


def run_idle(name: str, setup: Setup, root: Path, idle_s: float) -> RunResult:
    result = RunResult(name)
    log = setup.workdir / f"{name}.log"
    env = job_env(setup.bootstrap, setup.topics, root, bounded=False)
    job = Job(job_argv(root, setup.epoch_s), env, log)
    landed = job.wait_for(lambda: log_times(log)["rows"] >= setup.total, timeout=600)
    if landed and job.proc.poll() is None:
        result.landed_s = time.time() - job.started
        time.sleep(2.0)  # let the last commit's work (maintenance, group commit) finish
        start = time.time()
        time.sleep(idle_s)
        end = time.time()
        result.idle_cpu_percent = 100 * job.cpu_between(start, end) / (end - start)
        last = [s for s in job.samples if start <= s.at <= end]
        if last:
            result.idle_threads = last[-1].threads
            result.idle_rss_mb = last[-1].rss_kb / 1024
    else:
        result.notes.append("not every record landed within 600 s")
    job.stop()
    usage = job.finish(timeout=120)
    summarise(result, job, usage, setup)
    conclude(result, root, setup, log)
    return result


def conclude(result: RunResult, root: Path, setup: Setup, log: Path) -> None:
    if result.exit_code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        result.error = f"exit code {result.exit_code}; log tail:\n{tail}"
        return
    result.rows, problem = check_tables(root, setup.topics, setup.per_topic)
    result.error = problem
    result.ok = problem is None and not result.notes


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def render(results: list[RunResult]) -> str:
    headers = [
        "run",
        "first reading s",
        "all reading s",
        "first commit s",
        "wall s",
        "CPU s",
        "idle CPU % core",
        "peak RSS MB",
        "peak threads",
        "ok",
    ]
    rows = [
        [
            r.name,
            fmt(r.first_reading_s),
            fmt(r.all_reading_s),
            fmt(r.first_commit_s),
            fmt(r.wall_s),
            fmt(r.cpu_s),
            fmt(r.idle_cpu_percent),
            fmt(r.peak_rss_mb, 0),
            fmt(r.peak_threads),
            "yes" if r.ok else "NO",
        ]
        for r in results
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="waxlake over many partitions (see docstring)")
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=10, help="partitions per topic")
    parser.add_argument("--records", type=int, default=5, help="records per partition")
    parser.add_argument("--epoch-seconds", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--runs", default="bounded,restart,idle")
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--bootstrap", help="use this running broker instead of starting one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--workdir", type=Path, help="tables and logs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the tables and logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="waxlake-parts-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    output: dict[str, Any] = {"config": vars(args) | {"json": str(args.json)}, "runs": []}
    output["config"]["workdir"] = str(workdir)
    try:
        with contextlib.ExitStack() as stack:
            if args.bootstrap:
                bootstrap, output["broker"] = args.bootstrap, f"{args.broker} at {args.bootstrap}"
            else:
                broker = stack.enter_context(start_broker(args.broker))
                bootstrap, output["broker"] = broker.bootstrap, broker.title
            stem = f"parts-{uuid.uuid4().hex[:6]}"
            topics = [f"{stem}-{i:03d}" for i in range(args.topics)]
            print(f"creating {len(topics)} topics x {args.partitions} partitions ...", flush=True)
            for topic in topics:
                create_topic(bootstrap, topic, args.partitions)
            count = produce(bootstrap, topics, args.partitions, args.records)
            print(f"produced {count:,} records", flush=True)
            setup = Setup(
                bootstrap,
                topics,
                args.partitions,
                args.partitions * args.records,
                args.epoch_seconds,
                workdir,
            )
            for name in runs:
                print(f"  {name} ...", flush=True)
                if name in ("bounded", "restart"):  # restart: the same root again
                    results.append(run_bounded(name, setup, workdir / "lake"))
                elif name == "idle":
                    results.append(run_idle(name, setup, workdir / "lake-idle", args.idle_seconds))
                else:
                    raise SystemExit(f"unknown run {name!r}")
                last = results[-1]
                if last.error:
                    print(f"    {name}: {last.error}", flush=True)
    finally:
        output["runs"] = [asdict(r) for r in results]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{args.topics} topics x {args.partitions} partitions, {args.records} records each, "
        f"{args.broker}, -s {args.epoch_seconds}\n" + render(results)
    )
    for r in results:
        if r.idle_cpu_percent is not None:
            print(
                f"idle ({args.idle_seconds:g} s after everything landed at {fmt(r.landed_s)} s): "
                f"{r.idle_cpu_percent:.1f}% of a core, {r.idle_threads} threads, "
                f"{fmt(r.idle_rss_mb, 0)} MB RSS"
            )
    print(f"JSON result: {args.json}")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
