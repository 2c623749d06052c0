"""Run the real job (`python -m bytewax.run ...`) and read what it landed, for the tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from connectors.kafka.records import SCHEMA
from connectors.local_broker import free_port
from tests.producing import Record

REPO = Path(__file__).resolve().parents[1]


def job_env(
    bootstrap: str,
    topics: Sequence[str],
    root: Path,
    guarantee: str = "exactly-once",
    **settings: str | int,
) -> dict[str, str]:
    """Environment for one job run: the contract's variable names plus extra WAXLAKE_* ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WAXLAKE_TOPICS": ",".join(topics),
            "WAXLAKE_TABLE_ROOT": str(root),
            "WAXLAKE_GUARANTEE": guarantee,
            "WAXLAKE_GROUP_ID": f"waxlake-test-{uuid.uuid4().hex[:12]}",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update({f"WAXLAKE_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def job_command(
    recovery: Path | None,
    snapshot_s: int = 1,
    flow: str = "flows.kafka_to_delta:flow",
    extra: Sequence[str] = (),
) -> list[str]:
    cmd = [sys.executable, "-m", "bytewax.run", flow, *extra]
    if recovery is not None:
        cmd += ["-r", str(recovery), "-s", str(snapshot_s), "-b", "0"]
    return cmd


def cluster_commands(recovery: Path, processes: int, snapshot_s: int = 1) -> list[list[str]]:
    """One command per process of a local cluster (`-i/-a`), each with its own recovery dir,
    as each pod of the StatefulSet has its own volume."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    return [
        job_command(recovery / f"proc-{i}", snapshot_s, extra=["-i", str(i), "-a", addresses])
        for i in range(processes)
    ]


def run_cluster(
    env: dict[str, str], recovery: Path, processes: int, timeout: float = 180
) -> list[subprocess.CompletedProcess[str]]:
    """A bounded run of a local cluster to completion; one result per process."""
    procs = [
        subprocess.Popen(
            cmd,
            env={**env, "WAXLAKE_STOP_AT_END": "1"},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in cluster_commands(recovery, processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def start_job(
    env: dict[str, str],
    recovery: Path | None,
    log: Path,
    snapshot_s: int = 1,
    flow: str = "flows.kafka_to_delta:flow",
) -> subprocess.Popen[bytes]:
    """Start the job in the background, output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            job_command(recovery, snapshot_s, flow),
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_job(
    env: dict[str, str],
    recovery: Path | None,
    timeout: float = 180,
    snapshot_s: int = 1,
    flow: str = "flows.kafka_to_delta:flow",
) -> subprocess.CompletedProcess[str]:
    """A bounded run (`WAXLAKE_STOP_AT_END=1`) to completion."""
    return subprocess.run(
        job_command(recovery, snapshot_s, flow),
        env={**env, "WAXLAKE_STOP_AT_END": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_table(uri: Path | str) -> pl.DataFrame:
    return pl.read_delta(str(uri))


Key = tuple[int, int]


@dataclass(frozen=True)
class Diff:
    """What a table holds against what was produced, by (partition, offset)."""

    lost: Counter[Key]
    duplicated: dict[Key, int]
    unknown: set[Key]


def diff(produced: Iterable[Record], topic: str, got: Counter[Key]) -> Diff:
    want = Counter((r.partition, r.offset) for r in produced if r.topic == topic)
    return Diff(
        lost=want - got,
        duplicated={k: n - 1 for k, n in got.items() if n > 1},
        unknown=set(got) - set(want),
    )


def landed_keys(root: Path, topic: str) -> Counter[tuple[int, int]]:
    """(partition, offset) of every row in the topic's table and its dead-letter table."""
    keys: Counter[tuple[int, int]] = Counter()
    for uri in (root / topic, root / "_dead_letters" / topic):
        if (uri / "_delta_log").exists():
            keys.update(read_table(uri).select("partition", "offset").iter_rows())
    return keys


def row_keys(df: pl.DataFrame) -> list[tuple[int, int]]:
    """(partition, offset) of every row, sorted, duplicates kept."""
    return sorted(df.select("partition", "offset").iter_rows())


def wait_while_running(
    proc: subprocess.Popen[bytes],
    log: Path,
    until: Callable[[], bool],
    what: str,
    timeout: float = 60,
    every: float = 0.05,
) -> None:
    """Poll `until()` while the job runs; fail with the log's tail if the job exits first or
    `what` has not happened within `timeout` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"job exited early with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if until():
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(every)


def kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    """A test's cleanup: the job it started does not outlive it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def wait_until_version_grows(
    versions: Callable[[], Mapping[str, int | None]],
    before: Mapping[str, int | None],
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 60,
) -> None:
    """Poll until some table's version is past `before` (a commit landed); fail if the job exits."""
    wait_while_running(
        proc,
        log,
        lambda: any(_grew(before.get(t), v) for t, v in versions().items()),
        "a commit",
        timeout,
    )


def _grew(before: int | None, now: int | None) -> bool:
    return now is not None and (before is None or now > before)


def versions(root: Path, tables: Sequence[str]) -> dict[str, int]:
    """The current version of each of `tables` that exists under `root`."""
    from deltalake import DeltaTable

    out = {}
    for name in tables:
        uri = str(root / name)
        if DeltaTable.is_deltatable(uri):
            out[name] = DeltaTable(uri).version()
    return out


def kill_at_random(
    env: dict[str, str],
    recovery: Path,
    log: Path,
    root: Path,
    tables: Sequence[str],
    rng: random.Random,
    rounds: int,
    flow: str = "flows.kafka_to_delta:flow",
) -> None:
    """`rounds` times: start the job, wait until it has committed, SIGKILL it after a random
    delay (up to 1.5 s), so kills land in the middle of reading, buffering and committing."""
    for _ in range(rounds):
        before = versions(root, tables)
        proc = start_job(env, recovery, log, flow=flow)
        wait_until_version_grows(lambda: versions(root, tables), before, proc, log)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL


def raw_records(values: list[bytes], first: int = 0) -> pa.Table:
    """Records of partition 0 of topic `t` from offset `first`, as the source hands them on: no
    key, no timestamp, no headers."""
    n = len(values)
    return pa.table(
        {
            "topic": pa.array(["t"] * n),
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(first, first + n), pa.int64()),
            "timestamp": pa.array([None] * n, SCHEMA.field("timestamp").type),
            "key": pa.array([None] * n, pa.binary()),
            "value": pa.array(values, pa.binary()),
            "headers": pa.array([[]] * n, SCHEMA.field("headers").type),
        },
        schema=SCHEMA,
    )
