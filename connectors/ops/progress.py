"""Progress of a bounded run (`WAXLAKE_STOP_AT_END=1`) on a terminal: landed of to-read, rate, ETA.

tqdm draws only when stderr is a terminal; in logs (no TTY) it stays silent.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class Progress:
    """Records to read (known per partition when its reader starts) and records landed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bar: tqdm[None] | None = None

    def _ensure(self) -> tqdm[None]:
        if self._bar is None:
            self._bar = tqdm(
                total=0,
                unit=" records",
                unit_scale=True,
                desc="landed",
                file=sys.stderr,
                disable=None,  # None: only on a terminal
                dynamic_ncols=True,
            )
        return self._bar

    def add_to_read(self, count: int) -> None:
        with self._lock:
            bar = self._ensure()
            bar.total = (bar.total or 0) + max(0, count)
            bar.refresh()

    def landed(self, count: int) -> None:
        with self._lock:
            bar = self._ensure()
            if bar.total is not None and bar.n + count > bar.total:
                bar.total = bar.n + count  # brokers with a low high watermark (Tansu)
            bar.update(count)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


PROGRESS = Progress()
