"""Partitions added to a topic while the job runs: stop cleanly so a restart reads them.

Bytewax fixes its list of source partitions when a run starts, so a partition added later would
never be read. A watcher lists the topics every `WAXLAKE_PARTITION_CHECK_INTERVAL_S` seconds;
when one has grown it asks for the same clean stop as SIGTERM (every buffered record committed),
and the process exits with `EXIT_RESTART` so Kubernetes (or any supervisor) starts it again; the
new run reads the new partitions from their start and resumes the others where they were.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from connectors.config import ConfigError, Settings
from connectors.kafka.client import list_partitions
from connectors.ops.shutdown import STOP

log = logging.getLogger(__name__)

EXIT_RESTART = 75
"""EX_TEMPFAIL: stopped cleanly on purpose; start the job again."""

RESTART = threading.Event()


def _exit_for_restart() -> None:
    if RESTART.is_set():
        logging.shutdown()
        os._exit(EXIT_RESTART)


def _watch(settings: Settings, known: dict[str, list[int]]) -> None:
    interval = settings.partition_check_interval_s
    while not STOP.wait(interval):
        try:
            now = list_partitions(settings, timeout_s=min(15.0, max(interval, 1.0)))
        except ConfigError as exc:  # broker away or topic gone: the source reports that
            log.debug("partition check failed: %s", exc)
            continue
        grown = {t: (len(known[t]), len(p)) for t, p in now.items() if len(p) > len(known[t])}
        if grown:
            log.warning(
                "%s: stopping cleanly (everything read is committed) to read the new partitions; "
                "exit code %d: restart the job (Kubernetes does)",
                ", ".join(
                    f"topic {t} grew from {a} to {b} partitions" for t, (a, b) in grown.items()
                ),
                EXIT_RESTART,
            )
            RESTART.set()
            STOP.set()
            return


def watch_partitions(settings: Settings, known: dict[str, list[int]]) -> None:
    """Start the watcher for an unbounded run (a bounded run reads what it listed at start)."""
    if settings.stop_at_end or settings.partition_check_interval_s <= 0:
        return
    atexit.register(_exit_for_restart)
    threading.Thread(
        target=_watch, args=(settings, known), name="waxlake-partition-watch", daemon=True
    ).start()
