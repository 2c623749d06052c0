"""Run one benchmark contender and write its own wall time, CPU and peak RSS as JSON.

    python tests/benchmarks/bench_launch.py OUT.json -- /abs/path/to/python args...

Why a launcher: on Linux a process's `ru_maxrss` starts at its parent's high-water RSS (the
parent's memory map is counted when the child execs), so a contender started straight from
bench_ingest.py, which has held a million produced records, would report at least that much.
This process stays small, so the contender's figure is its own. It writes the contender's pid to
OUT.json.pid at once (for CPU sampling from /proc), forwards SIGINT and SIGTERM to it, and exits
with its exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from types import FrameType


def main() -> int:
    out, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.time()
    pid = os.posix_spawn(argv[0], argv, dict(os.environ))
    with open(out + ".pid.tmp", "w") as f:
        f.write(str(pid))
    os.replace(out + ".pid.tmp", out + ".pid")  # appears complete

    def forward(signum: int, frame: FrameType | None) -> None:
        os.kill(pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    _, status, usage = os.wait4(pid, 0)
    ended = time.time()
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump(
            {
                "pid": pid,
                "started": started,
                "ended": ended,
                "exit_code": code,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
