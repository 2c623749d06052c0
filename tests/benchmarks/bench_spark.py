"""The throughput phase of bench_ingest.py on a broker of choice, for the Spark peer.

bench_ingest.py runs on Tansu, whose high watermarks stop short of the end of each partition;
Spark's availableNow trigger ends at those watermarks, so on Tansu peer-spark lands too few
records. noida-db reports correct watermarks but answers a fetch with everything it has,
whatever the size limits (a 1,000,000 x 200 B topic in one 216 MB response, which librdkafka
refuses: the raw read retries forever). So point it at a real Kafka broker already running:

    python tests/benchmarks/bench_spark.py --bootstrap 127.0.0.1:9092     # raw,peer-spark
    python tests/benchmarks/bench_spark.py --broker noida --contenders peer-spark

Same records, processes and figures as bench_ingest.py's throughput tables (no freshness
phase). Results go to tests/benchmarks/results/spark.json by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a script: make `connectors` and `tests` importable
    sys.path.insert(0, str(REPO))

from connectors.local_broker import create_topic, start_noida, start_tansu  # noqa: E402
from tests.benchmarks import spark_setup  # noqa: E402
from tests.benchmarks.ingest.contenders import CONTENDERS, ensure_quix_venv  # noqa: E402
from tests.benchmarks.ingest.produce import produce_bulk  # noqa: E402
from tests.benchmarks.ingest.report import environment_info, throughput_table  # noqa: E402
from tests.benchmarks.ingest.throughput import run_throughput  # noqa: E402


@dataclass
class External:
    bootstrap: str


def start_broker(
    name: str, bootstrap: str | None, workdir: Path
) -> contextlib.AbstractContextManager[Any]:
    if bootstrap:
        return contextlib.nullcontext(External(bootstrap))
    return start_noida(workdir / "noida-data") if name == "noida" else start_tansu()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=("noida", "tansu"), default="noida")
    parser.add_argument("--bootstrap", help="use this running broker instead of starting one")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="200,1024")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--contenders", default="raw,peer-spark")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "spark.json")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if unknown := sorted(set(contenders) - set(CONTENDERS)):
        parser.error(f"unknown contender(s): {', '.join(unknown)}")
    if "peer-spark" in contenders:
        spark_setup.ensure_spark_peer()
    if "peer-quix" in contenders:
        ensure_quix_venv()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="waxlake-bench-spark-"))
    workdir.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": {
            "broker": args.bootstrap or args.broker,
            "records": args.records,
            "partitions": args.partitions,
        },
        "environment": environment_info(),
        "runs": [],
    }
    all_ok = True
    try:
        with start_broker(args.broker, args.bootstrap, workdir) as broker:
            for size in sizes:
                run_dir = workdir / f"size-{size}"
                run_dir.mkdir(parents=True, exist_ok=True)
                topic = f"bench-{size}-{uuid.uuid4().hex[:8]}"
                create_topic(broker.bootstrap, topic, args.partitions)
                print(f"producing {args.records:,} x {size} B to {topic} ...", end="", flush=True)
                rate = produce_bulk(broker.bootstrap, topic, args.partitions, args.records, size)
                print(f" {rate:,.0f} rec/s", flush=True)
                results = [
                    run_throughput(
                        name, broker.bootstrap, topic, args.partitions, args.records, run_dir, 5
                    )
                    for name in CONTENDERS
                    if name in contenders
                ]
                all_ok &= all(r.ok for r in results)
                print(
                    f"\n{args.records:,} records x {size} B, {args.partitions} partitions, "
                    f"{args.bootstrap or args.broker}\n" + throughput_table(results),
                    flush=True,
                )
                output["runs"].append(
                    {"size": size, "topic": topic, "throughput": [asdict(r) for r in results]}
                )
    finally:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    for run in output["runs"]:
        for item in run["throughput"]:
            if item.get("error"):
                print(f"\n[{run['size']} B] {item['contender']}: {item['error']}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
