"""The fault menu, and the seeded schedule every guarantee gets the same.

Each fault waits until the job's current process has committed once (it is past its start-up and
in its read-buffer-commit cycle), then a seeded random delay, then strikes:

- `sigkill`: SIGKILL at that moment, wherever the job is; it is restarted at once.
- `sigkill-mid-commit`, `sigterm-mid-commit`: the signal as the next commit is in flight, seen
  as a data file that no table version holds yet (written before its log entry); with SIGTERM
  the job finishes that commit, commits its buffer and exits 0 (a rolling restart); with
  SIGKILL it dies before the table write is done, after at-most-once moved the group offset.
- `sigkill-after-commit`: SIGKILL the moment the next table version appears, before the job
  has committed the group offset after it: the window in which at-least-once duplicates.
  (Both mid-commit kills are the article's "failure between the two writes", one per order.)
- `zombie`: a second instance of the job (same topic, table and group, its own recovery
  directory, as a second pod has its own volume) runs beside it until it has committed once,
  plus the delay, and is then SIGKILLed: the instance that was thought dead.
- `broker-restart`: the broker stops (controlled shutdown) and starts on the same log, while
  the producer and the job keep going; only for a local Apache Kafka broker (Tansu keeps its
  log in memory: a restart would lose every record, which is no test of the job).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.local_broker import KafkaBroker, LocalBroker
from connectors.ops.lab.job import Incarnation, Job

KINDS = (
    "sigkill",
    "sigkill-mid-commit",
    "sigkill-after-commit",
    "sigterm-mid-commit",
    "zombie",
    "broker-restart",
)
MID_COMMIT_TIMEOUT_S = 10.0  # no commit in flight by then (nothing left to read): strike anyway


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    delay_s: float


def schedule(kills: int, kinds: list[str], seed: int, max_delay_s: float) -> list[Fault]:
    """`kills` faults, the kinds taken in turn, each with a delay drawn from `seed`."""
    rng = random.Random(seed)
    return [
        Fault(i, kinds[i % len(kinds)], round(rng.uniform(0.0, max_delay_s), 3))
        for i in range(kills)
    ]


def refusal(kinds: list[str], broker: LocalBroker | None) -> str | None:
    """Why this broker cannot take these faults (None: it can)."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        return f"--faults: unknown fault(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}"
    if "broker-restart" in kinds and not isinstance(broker, KafkaBroker):
        what = "an external broker" if broker is None else f"{broker.title} (memory only)"
        return (
            f"--faults broker-restart needs a broker that keeps its log across a restart and "
            f"that the lab runs itself (--broker kafka); {what} cannot be restarted"
        )
    return None


def _entries(table_dir: Path) -> list[tuple[str, int]]:
    """Each partition directory of the table and how many entries it holds."""
    found = []
    for part in table_dir.glob("partition=*"):
        try:
            found.append((str(part), len(os.listdir(part))))
        except OSError:
            continue
    return found


def wait_for_commit_in_flight(table_dir: Path, process: Incarnation, timeout: float) -> bool:
    """Block until a partition directory gains an entry: a commit writing its data file (the
    local store writes a staging file first and renames it), its log entry still to come
    (compaction is off, so nothing else adds files). Polled without sleeping: the log entry
    follows within a millisecond or two."""
    before = _entries(table_dir)
    dirs = [d for d, _ in before]
    counts = [n for _, n in before]
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        for d, n in zip(dirs, counts, strict=True):
            try:
                if len(os.listdir(d)) > n:
                    return True
            except OSError:
                continue
        checks += 1
        if checks % 500 == 0:
            if time.monotonic() > deadline or process.poll() is not None:
                return False
            if len(_entries(table_dir)) > len(dirs):  # a new partition directory
                return True


def _latest_version(log_dir: Path) -> int:
    versions = [int(n[:-5]) for n in os.listdir(log_dir) if n.endswith(".json") and n[0].isdigit()]
    return max(versions, default=-1)


def wait_for_new_version(table_dir: Path, process: Incarnation, timeout: float) -> bool:
    """Block until the table's next log entry exists; polled without sleeping, since the job
    commits the group offset within milliseconds of it."""
    log_dir = table_dir / "_delta_log"
    if not log_dir.is_dir():
        return False
    target = str(log_dir / f"{_latest_version(log_dir) + 1:020d}.json")
    deadline = time.monotonic() + timeout
    checks = 0
    while not os.path.exists(target):
        checks += 1
        if checks % 2000 == 0 and (time.monotonic() > deadline or process.poll() is not None):
            return False
    return True


class Injector:
    """Applies faults to one guarantee's job; returns the process that runs on afterwards."""

    def __init__(self, job: Job, table_dir: Path, broker: LocalBroker | None) -> None:
        self.job = job
        self.table_dir = table_dir
        self.broker = broker

    def apply(self, fault: Fault, current: Incarnation) -> tuple[Incarnation, dict[str, Any]]:
        time.sleep(fault.delay_s)
        record: dict[str, Any] = {"kind": fault.kind, "delay_s": fault.delay_s}
        if fault.kind == "sigkill":
            record["exit"] = current.kill()
            return self.job.start(), record
        if fault.kind in ("sigkill-mid-commit", "sigterm-mid-commit"):
            record["in_flight"] = wait_for_commit_in_flight(
                self.table_dir, current, MID_COMMIT_TIMEOUT_S
            )
            if fault.kind == "sigkill-mid-commit":
                record["exit"] = current.kill()
            else:  # one SIGTERM: a second one would make the job exit at once (130)
                record["exit"] = current.stop(60)
            return self.job.start(), record
        if fault.kind == "sigkill-after-commit":
            record["in_flight"] = wait_for_new_version(
                self.table_dir, current, MID_COMMIT_TIMEOUT_S
            )
            record["exit"] = current.kill()
            return self.job.start(), record
        if fault.kind == "zombie":
            return current, self._zombie(fault, record)
        if fault.kind == "broker-restart":
            assert isinstance(self.broker, KafkaBroker)
            started = time.monotonic()
            self.broker.restart()
            record["down_s"] = round(time.monotonic() - started, 2)
            return current, record
        raise ValueError(f"unknown fault {fault.kind!r}")

    def _zombie(self, fault: Fault, record: dict[str, Any]) -> dict[str, Any]:
        zombie = self.job.start("zombie", recovery=f"recovery-zombie-{fault.index}")
        record["zombie_committed"] = self.job.wait_for_commit(zombie, 0, timeout=60)
        time.sleep(fault.delay_s)
        record["zombie_commits"] = zombie.commits()
        record["exit"] = zombie.kill()
        return record
