"""A job process started through bench_launch.py (so its peak RSS is its own) and sampled from
/proc every 50 ms: CPU of its process tree, RSS and thread count, for the benchmarks."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.proctree import tree_usage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass
class Sample:
    at: float
    cpu_s: float
    rss_kb: int
    threads: int


class Job:
    """One job process, started through bench_launch.py and sampled from /proc."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.usage = log.with_name(log.name + ".usage.json")
        pid_file = Path(f"{self.usage}.pid")
        launcher = [sys.executable, str(HERE / "bench_launch.py"), str(self.usage), "--", *argv]
        self.started = time.time()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                launcher, env=env, cwd=REPO, stdout=out, stderr=out, start_new_session=True
            )
        self.samples: list[Sample] = []
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(pid_file,), daemon=True)
        self._sampler.start()

    def _sample(self, pid_file: Path) -> None:
        while not pid_file.exists():
            if self._done.wait(0.005):
                return
        pid = int(pid_file.read_text())
        status = Path(f"/proc/{pid}/status")
        while not self._done.wait(0.05):
            usage = tree_usage(pid)
            try:
                text = status.read_text()
            except OSError:
                return
            if usage is None:
                return
            threads = int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
            self.samples.append(Sample(time.time(), usage[0], usage[1], threads))

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return condition()
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # the launcher forwards it: a clean stop

    def finish(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._done.set()
        self._sampler.join()
        if not self.usage.exists():
            return {"exit_code": self.proc.returncode, "ended": time.time(), "cpu_s": 0.0}
        return dict(json.loads(self.usage.read_text()))

    def cpu_between(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s.at <= end]
        return inside[-1].cpu_s - inside[0].cpu_s if len(inside) > 1 else 0.0
