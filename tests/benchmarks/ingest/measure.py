"""Running one contender process: wall clock, CPU and peak RSS, with CPU sampled as it runs.

The contender runs under bench_launch.py (its own wait4 figures, not inflated by this process's
memory); its process tree is sampled from /proc every 50 ms, so that the CPU of an interval (the
steady state) can be read off and a child JVM's memory counts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.ingest import BENCH_DIR, REPO
from tests.benchmarks.proctree import tree_usage

RUN_TIMEOUT_S = 1800.0


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
    launcher = [sys.executable, str(BENCH_DIR / "bench_launch.py"), str(usage_file), "--", *argv]
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
