"""Clean stop on SIGTERM (what Kubernetes sends) and Ctrl-C.

Bytewax dies at once on SIGTERM. Instead, the first signal asks every source partition to end its
input; Bytewax then closes the last epoch, the sink commits what it buffered and the process exits
0. A second signal stops at once (exit 130): what was buffered is dropped and replayed on restart,
which every guarantee tolerates because its position was never advanced past it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

STOP = threading.Event()
"""Set once a stop was requested; source partitions end their input when they see it."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if STOP.is_set():
        log.warning("%s again: stopping now; uncommitted records will be read again", name)
        logging.shutdown()
        # Delta and Kafka commits are atomic, so even one in flight is either made or not.
        os._exit(130)
    STOP.set()
    log.warning("%s: stopping the sources, committing what is buffered, then exiting", name)


def install_signal_handlers() -> None:
    """Only the main thread may install handlers; Bytewax runs the flow there."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
