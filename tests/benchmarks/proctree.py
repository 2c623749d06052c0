"""CPU time and resident memory of a process and all its live descendants, from /proc (Linux).

A contender may run most of its work in a child (the Spark peer's driver JVM is a child of its
Python process): wait4() in the launcher counts a child's CPU only once it has been reaped, and
its peak RSS is the largest single process's, not the sum. The benchmark samples this instead.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def children(pid: int) -> list[int]:
    """Direct children of `pid` (each thread's children file; empty if it is gone)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    found = [pid]
    i = 0
    while i < len(found):
        found.extend(c for c in children(found[i]) if c not in found)
        i += 1
    return found


def _usage(pid: int) -> tuple[float, int] | None:
    """(utime + stime + reaped children's cutime + cstime in s, RSS kB) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    # After the command name: utime, stime, cutime, cstime are fields 14-17 (1-based).
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / _CLOCK_TICKS, rss_pages * _PAGE_KB


def tree_usage(pid: int) -> tuple[float, int] | None:
    """CPU seconds and RSS kB summed over `pid` and its live descendants; None once it is gone."""
    root = _usage(pid)
    if root is None:
        return None
    cpu, rss = root
    for child in tree(pid)[1:]:
        usage = _usage(child)
        if usage is not None:
            cpu += usage[0]
            rss += usage[1]
    return cpu, rss
