"""The command and environment of each contender, for a throughput or a freshness run.

Each contender is its own process reading the topic from offset 0 into a fresh table (raw and
raw-shared write nothing). Those outside the project's environment get venvs of their own:
quixstreams pins an older confluent-kafka, PySpark brings its JVM (spark_setup.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa

from tests.benchmarks import spark_setup
from tests.benchmarks.ingest import BENCH_DIR, REPO

CONTENDERS = (
    "raw",
    "raw-shared",
    "waxlake-eo",
    "waxlake-alo",
    "waxlake-avro",
    "peer-bytewax",
    "peer-quix",
    "peer-spark",
)
RAW_CONTENDERS = ("raw", "raw-shared")  # read only: no table
WAXLAKE_CONTENDERS = ("waxlake-eo", "waxlake-alo", "waxlake-avro")  # timings from the job's log
DELTA_CONTENDERS = ("waxlake-eo", "waxlake-alo", "peer-bytewax", "peer-quix")  # freshness
QUIX_VENV = BENCH_DIR / ".venv-quix"
QUIX_VERSION = "3.28.1"

Command = tuple[list[str], dict[str, str]]


@dataclass(frozen=True)
class Target:
    """What a contender reads and where it writes: `uri` is its table (`root` / topic)."""

    bootstrap: str
    topic: str
    partitions: int
    root: Path
    report: Path  # the timings JSON a non-waxlake contender writes
    registry_url: str | None = None

    @property
    def uri(self) -> Path:
        return self.root / self.topic


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def raw_command(target: Target, shared: bool) -> Command:
    """bench_raw.py: one consumer per partition (the floor), or one for all (`shared`)."""
    argv = [
        sys.executable,
        str(BENCH_DIR / "bench_raw.py"),
        "--bootstrap",
        target.bootstrap,
        "--topic",
        target.topic,
        "--partitions",
        str(target.partitions),
        "--report",
        str(target.report),
    ]
    return [*argv, "--shared"] if shared else argv, base_env()


def waxlake_command(name: str, target: Target, epoch_s: int, bounded: bool) -> Command:
    """The documented job: `python -m bytewax.run FLOW -r <root>/_recovery -s N -b 0`."""
    flow = "flows.registry_to_delta:flow" if name == "waxlake-avro" else "flows.kafka_to_delta:flow"
    argv = [sys.executable, "-m", "bytewax.run", flow, "-r", str(target.root / "_recovery")]
    argv += ["-s", str(epoch_s), "-b", "0"]
    env = {
        **base_env(),
        "KAFKA_BOOTSTRAP_SERVERS": target.bootstrap,
        "WAXLAKE_TOPICS": target.topic,
        "WAXLAKE_TABLE_ROOT": str(target.root),
        "WAXLAKE_GUARANTEE": "at-least-once" if name == "waxlake-alo" else "exactly-once",
        "WAXLAKE_GROUP_ID": f"bench-{uuid.uuid4().hex[:12]}",
        "WAXLAKE_STOP_AT_END": "1" if bounded else "0",
        "WAXLAKE_LOG_LEVEL": "INFO",
    }
    if name == "waxlake-avro":
        if target.registry_url is None:
            raise ValueError("waxlake-avro needs a schema registry")
        env["WAXLAKE_SCHEMA_REGISTRY_URL"] = target.registry_url
    return argv, env


def bytewax_peer(target: Target, tail: bool) -> Command:
    env = {
        **base_env(),
        "BENCH_BOOTSTRAP": target.bootstrap,
        "BENCH_TOPIC": target.topic,
        "BENCH_TABLE": str(target.uri),
        "BENCH_TAIL": "1" if tail else "0",
        "BENCH_REPORT": str(target.report),
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
    pins = [f"quixstreams=={QUIX_VERSION}", f"deltalake=={version('deltalake')}"]
    pins.append(f"pyarrow=={pa.__version__}")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)


def quix_peer(target: Target, count: int, commit_interval: float | None) -> Command:
    """peer_quix_app.py; `count` > 0: stop after that many records (a throughput run)."""
    argv = [str(quix_python()), str(BENCH_DIR / "peer_quix_app.py")]
    argv += ["--bootstrap", target.bootstrap, "--topic", target.topic, "--table", str(target.uri)]
    argv += ["--group", f"bench-quix-{uuid.uuid4().hex[:12]}"]
    argv += ["--state-dir", str(target.root / "quix-state"), "--report", str(target.report)]
    if count:
        argv += ["--count", str(count), "--timeout", "120"]
    if commit_interval is not None:
        argv += ["--commit-interval", str(commit_interval)]
    env = {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    return argv, env


def throughput_command(name: str, target: Target, records: int, epoch_s: int) -> Command:
    """A bounded run: reads the `records` there are and exits."""
    if name in RAW_CONTENDERS:
        return raw_command(target, shared=name == "raw-shared")
    if name in WAXLAKE_CONTENDERS:
        return waxlake_command(name, target, epoch_s, bounded=True)
    if name == "peer-bytewax":
        return bytewax_peer(target, tail=False)
    if name == "peer-quix":
        return quix_peer(target, records, None)
    if name == "peer-spark":
        checkpoint = target.root / "_checkpoint"
        argv = spark_setup.peer_command(
            target.bootstrap, target.topic, target.uri, checkpoint, target.report
        )
        return argv, {k: v for k, v in base_env().items() if k != "PYTHONPATH"}
    raise ValueError(name)


def freshness_command(name: str, target: Target, epoch_s: int) -> Command:
    """A tailing run, stopped by SIGINT."""
    if name in ("waxlake-eo", "waxlake-alo"):
        return waxlake_command(name, target, epoch_s, bounded=False)
    if name == "peer-bytewax":
        return bytewax_peer(target, tail=True)
    if name == "peer-quix":
        return quix_peer(target, 0, float(epoch_s))
    raise ValueError(name)
