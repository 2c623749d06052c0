"""The job under test: `python -m bytewax.run flows.kafka_to_delta:flow` as child processes.

Every process of a guarantee's run (each incarnation after a fault, a zombie, the final drain) is
reaped with `os.wait4`, which returns its resource usage: user + system CPU is then exact for
every process, SIGKILLed ones too, and nothing else (broker, producer) is counted. Popen's own
wait is never called, since it would reap the process and lose that usage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FLOW = "flows.kafka_to_delta:flow"
COMMIT_LINE = b"connectors.delta.sink: committed "


@dataclass(frozen=True)
class JobSpec:
    """Everything that makes one guarantee's job: its topic, table root, group and knobs."""

    bootstrap: str
    topic: str
    root: Path
    guarantee: str
    group_id: str
    epoch_s: int
    batch_rows: int
    kafka_config: str = "{}"

    def env(self, *, bounded: bool) -> dict[str, str]:
        """The job's environment: the lab's settings only (other WAXLAKE_* are dropped), and no
        compaction or vacuum, so every data file stays the one its commit added (see latency)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "WAXLAKE_TOPICS": self.topic,
                "WAXLAKE_TABLE_ROOT": str(self.root),
                "WAXLAKE_GUARANTEE": self.guarantee,
                "WAXLAKE_GROUP_ID": self.group_id,
                "WAXLAKE_KAFKA_CONFIG": self.kafka_config,
                "WAXLAKE_MAX_BATCH_ROWS": str(self.batch_rows),
                "WAXLAKE_COMPACT_EVERY_COMMITS": "0",
                "WAXLAKE_VACUUM_EVERY_COMMITS": "0",
                "WAXLAKE_LOG_FORMAT": "text",
                "WAXLAKE_LOG_LEVEL": "INFO",
                "WAXLAKE_STOP_AT_END": "1" if bounded else "0",
            }
        )
        return env

    def command(self, recovery: Path) -> list[str]:
        recovery_args = ["-r", str(recovery), "-s", str(self.epoch_s), "-b", "0"]
        return [sys.executable, "-m", "bytewax.run", FLOW, *recovery_args]


@dataclass
class Incarnation:
    """One process of the job; `poll`/`wait` reap it with wait4 and keep its CPU time."""

    role: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float
    ended: float | None = None
    returncode: int | None = None
    cpu_s: float = 0.0
    signals: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code once it has exited (negative: killed by that signal), else None."""
        if self.returncode is not None:
            return self.returncode
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.ended = time.monotonic()
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode  # so Popen never waits for it again
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.role} (pid {self.pid}) still running after {timeout} s")
            time.sleep(0.02)
        return code

    def send(self, sig: signal.Signals) -> None:
        if self.poll() is None:
            self.signals.append(sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> int:
        self.send(signal.SIGKILL)
        return self.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the job commits what it buffered and exits 0), SIGKILL after `timeout`."""
        self.send(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError:
            return self.kill()

    def commits(self) -> int:
        """Commits this process logged (`committed ...` lines of `connectors.delta.sink`)."""
        try:
            return self.log.read_bytes().count(COMMIT_LINE)
        except OSError:
            return 0

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Job:
    """All processes of one guarantee's job, for the counts, the CPU and the logs."""

    def __init__(self, spec: JobSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.processes: list[Incarnation] = []
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    def start(
        self, role: str = "job", *, recovery: str = "recovery", bounded: bool = False
    ) -> Incarnation:
        """Start a process of the job. `recovery` names its recovery directory: a zombie gets
        its own, as a second pod has its own volume."""
        log = self.workdir / "logs" / f"{len(self.processes):02d}-{role}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                self.spec.command(self.workdir / recovery),
                env=self.spec.env(bounded=bounded),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = Incarnation(role, popen, log, time.monotonic())
        self.processes.append(process)
        return process

    def wait_for_commit(self, process: Incarnation, after: int, timeout: float) -> bool:
        """Wait until `process` has logged more than `after` commits; False if it exited or
        the time ran out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.commits() > after:
                return True
            if process.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def reap_all(self) -> None:
        """SIGKILL and reap whatever is still running (an error path: nothing may outlive the lab)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.processes)
