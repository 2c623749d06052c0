"""One entry point for every local broker kind (the CLI, the demo and the benchmarks use it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from connectors.local_broker.apache_kafka import start_kafka
from connectors.local_broker.emulators import start_noida, start_tansu
from connectors.local_broker.process import LocalBroker

KINDS = ("kafka", "tansu", "noida")


def start_broker(kind: str, port: int | None = None, data_dir: Path | None = None) -> LocalBroker:
    """Start a local broker of ``kind`` ("kafka", "tansu" or "noida") and wait until it answers.

    noida keeps its data in ``data_dir`` (a temp dir removed at stop when None); the other
    kinds ignore it. Raises ``BrokerUnavailable`` or ``BrokerStartError``.
    """
    if kind == "kafka":
        return start_kafka(port)
    if kind == "tansu":
        return start_tansu(port)
    if kind == "noida":
        if data_dir is not None:
            return start_noida(data_dir, port)
        scratch = tempfile.TemporaryDirectory(prefix="waxlake-noida-data-")
        try:
            broker = start_noida(Path(scratch.name), port)
        except BaseException:
            scratch.cleanup()
            raise
        broker.cleanup_after_stop(scratch)
        return broker
    raise ValueError(f"unknown broker kind {kind!r}; one of {', '.join(KINDS)}")
