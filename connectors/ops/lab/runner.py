"""One guarantee's run: its own topic, table root, group and recovery store; the workload
produced while the job runs; the schedule of faults; a final drain; then the counts.

Between faults a process that exits by itself (a failed commit, a broker outage it gave up on)
is restarted at once, as an orchestrator would, and noted. The final drain stops the running
process cleanly (SIGTERM) once every record is acknowledged, then runs the job bounded
(`WAXLAKE_STOP_AT_END=1`, which ends at each partition's end of file, not at the high
watermark some brokers get wrong) until it exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.local_broker import LocalBroker, create_topic
from connectors.ops.lab import counting
from connectors.ops.lab.faults import Fault, Injector
from connectors.ops.lab.job import Incarnation, Job, JobSpec
from connectors.ops.lab.workload import BackgroundProducer, Workload

FIRST_COMMIT_TIMEOUT_S = 60.0
IDLE_COMMIT_TIMEOUT_S = 5.0  # once the producer is done there may be nothing left to commit
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LabSettings:
    """What is the same for every guarantee."""

    workload: Workload
    faults: list[Fault]
    epoch_s: int
    batch_rows: int
    kafka_config: str = "{}"


@dataclass
class GuaranteeRun:
    """What one guarantee's run measured."""

    guarantee: str
    topic: str
    counts: counting.Counts
    commits: int
    cpu_s: float
    wall_s: float
    processes: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    produce_errors: int
    drain_exit: int | None
    restarts: int = 0
    notes: list[str] = field(default_factory=list)


def run_guarantee(
    guarantee: str,
    bootstrap: str,
    broker: LocalBroker | None,
    settings: LabSettings,
    workdir: Path,
    run_id: str,
    say: Callable[[str], None],
) -> GuaranteeRun:
    topic = f"waxlake-lab-{run_id}-{guarantee}"
    work = settings.workload
    create_topic(bootstrap, topic, work.partitions)
    root = workdir / "lake"
    spec = JobSpec(
        bootstrap,
        topic,
        root,
        guarantee,
        f"waxlake-lab-{run_id}-{guarantee}",
        settings.epoch_s,
        settings.batch_rows,
        settings.kafka_config,
    )
    job = Job(spec, workdir)
    injector = Injector(job, root / topic, broker)
    producer = BackgroundProducer(bootstrap, topic, work, {})
    notes: list[str] = []
    records: list[dict[str, Any]] = []
    restarts = 0
    started = time.monotonic()
    try:
        current = job.start()
        producer.start()
        say(f"job started, producing {work.records:,} records at {work.rate:,}/s")
        for fault in settings.faults:
            current, restarted = _running(job, current, notes, say)
            restarts += restarted
            timeout = FIRST_COMMIT_TIMEOUT_S if producer.is_alive() else IDLE_COMMIT_TIMEOUT_S
            committed = job.wait_for_commit(current, 0, timeout)
            current, record = injector.apply(fault, current)
            record["after_commit"] = committed
            record["at_s"] = round(time.monotonic() - started, 2)
            records.append(record)
            idle = "" if committed else "; no commit came first (nothing left to commit?)"
            say(
                f"fault {fault.index + 1}/{len(settings.faults)}: {_describe(record)} "
                f"at {record['at_s']:.1f} s ({len(producer.acked):,} acknowledged){idle}"
            )
        acked = producer.finish(timeout=max(120.0, 3 * work.duration_s))
        if producer.failure:
            notes.append(f"the producer stopped early: {producer.failure}")
        say(f"produced: {len(acked):,} acknowledged, {len(acked.errors)} failed; draining")
        current, restarted = _running(job, current, notes, say)
        restarts += restarted
        current.stop()
        drain = job.start("drain", bounded=True)
        drain_exit: int | None = drain.wait(DRAIN_TIMEOUT_S)
        if drain_exit != 0:
            notes.append(f"final drain exited {drain_exit}:\n{drain.tail()}")
            say(f"final drain exited {drain_exit}")
    except TimeoutError as exc:
        notes.append(str(exc))
        drain_exit = None
    finally:
        job.reap_all()
    wall_s = time.monotonic() - started
    found = counting.landed(root, topic)
    counts = counting.count(counting.acked_frame(producer.acked), found.rows)
    return GuaranteeRun(
        guarantee=guarantee,
        topic=topic,
        counts=counts,
        commits=found.commits,
        cpu_s=job.cpu_s,
        wall_s=wall_s,
        processes=[
            {
                "role": p.role,
                "exit": p.returncode,
                "cpu_s": round(p.cpu_s, 3),
                "commits_logged": p.commits(),
                "signals": p.signals,
            }
            for p in job.processes
        ],
        faults=records,
        produce_errors=len(producer.acked.errors) + producer.unflushed,
        drain_exit=drain_exit,
        restarts=restarts,
        notes=notes,
    )


def _running(
    job: Job, current: Incarnation, notes: list[str], say: Callable[[str], None]
) -> tuple[Incarnation, int]:
    """The current process, or a new one if it exited by itself (noted, with its log tail)."""
    code = current.poll()
    if code is None:
        return current, 0
    notes.append(f"{current.role} exited by itself with {code}:\n{current.tail()}")
    say(f"the job exited by itself ({code}); restarting it")
    return job.start(), 1


def _describe(record: dict[str, Any]) -> str:
    kind = str(record["kind"])
    if kind == "zombie":
        return f"zombie ran ({record.get('zombie_commits', 0)} commits), SIGKILLed"
    if kind == "broker-restart":
        return f"broker restarted ({record.get('down_s')} s down)"
    flight = "" if record.get("in_flight", True) else " (no commit in flight)"
    return f"{kind}{flight} after {record['delay_s']:.2f} s, exit {record.get('exit')}"
