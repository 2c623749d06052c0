"""A broker as a child process: start it in its own session, wait until it answers, stop it.

Each broker runs in its own session (process group); :meth:`LocalBroker.stop` signals the
whole group, so helper/child processes go away too (noida-db's launcher, a JVM's children).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
PORT_ATTEMPTS = 3  # a port picked by free_port() can be taken before the broker binds it


class BrokerUnavailable(RuntimeError):
    """The broker's package, binary or toolchain is not installed on this machine."""


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


def read_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
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


def group_alive(pgid: int) -> bool:
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


def spawn(argv: Sequence[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "NO_COLOR": "1"},  # plain text logs (Tansu colours them)
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], timeout: float, *, kill: bool = False) -> bool:
    """SIGTERM (or SIGKILL) the process group led by ``process``; SIGKILL what is left after
    ``timeout`` seconds. Returns once the whole group is gone: True if it went without that
    SIGKILL."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the pgid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    # The leader may be a wrapper (noida-db's Python launcher) that exits at once while
    # the real broker is still saving its data: wait for the whole group.
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None or group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait()
        while group_alive(pgid):
            time.sleep(0.05)
        return False
    return True


class LocalBroker:
    """A broker subprocess listening on ``bootstrap``; a context manager that stops it.

    ``kind`` is the short name ("kafka", "tansu", "noida"); ``version`` what it runs, for logs.
    """

    stop_timeout = 10.0

    def __init__(
        self,
        name: str,
        bootstrap: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        workdir: tempfile.TemporaryDirectory[str] | None = None,
        version: str = "",
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.process = process
        self.log_path = log_path
        self.version = version
        self._cleanups: list[tempfile.TemporaryDirectory[str]] = [workdir] if workdir else []
        self._stopped = False
        atexit.register(self.stop)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid={self.process.pid}"
        return f"{type(self).__name__}({self.name!r}, {self.bootstrap!r}, {state})"

    @property
    def port(self) -> int:
        return int(self.bootstrap.rpartition(":")[2])

    @property
    def title(self) -> str:
        """Human name with version, e.g. "Tansu 0.6.0" (for logs and test headers)."""
        return f"{self.name} {self.version}".strip()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's combined stdout/stderr."""
        return read_tail(self.log_path, lines)

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the broker's process group, wait, SIGKILL if needed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        stop_group(self.process, self.stop_timeout if timeout is None else timeout)
        while self._cleanups:
            self._cleanups.pop().cleanup()

    def cleanup_after_stop(self, directory: tempfile.TemporaryDirectory[str]) -> None:
        """Remove ``directory`` when the broker stops (e.g. a data dir made for it)."""
        self._cleanups.append(directory)

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
        version: str = "",
    ) -> Self:
        """Run ``argv`` (a broker that will listen on ``HOST:port``) and wait until it answers.

        Output goes to ``<tmp>/<name>.log``; the temp dir is removed by :meth:`stop`.
        """
        workdir = tempfile.TemporaryDirectory(prefix=f"waxlake-{name}-", ignore_cleanup_errors=True)
        log_path = Path(workdir.name) / f"{name}.log"
        process = spawn(argv, log_path, Path(workdir.name))
        broker = cls(name, f"{HOST}:{port}", process, log_path, workdir, version)
        broker.wait_ready(timeout)
        return broker

    def wait_ready(self, timeout: float) -> None:
        """Wait until the broker answers; on failure stop it and raise with the log tail."""
        try:
            wait_for_broker(self.bootstrap, timeout=timeout, process=self.process)
        except BrokerStartError as exc:
            tail = self.log_tail()
            self.stop()
            raise BrokerStartError(
                f"{self.name} broker failed to start: {exc}\n--- {self.name} log tail ---\n{tail}",
                exited=exc.exited,
            ) from exc
        except BaseException:
            self.stop()
            raise


B = TypeVar("B", bound=LocalBroker)


def launch_on_port(start: Callable[[int], B], port: int | None) -> B:
    """``start(port)`` on ``port``, or on a free port with retries when none is given.

    Retries only the "free port was grabbed meanwhile" race: the process exited early.
    """
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return start(port if port is not None else free_port())
        except BrokerStartError as exc:
            if attempt == attempts or not exc.exited:
                raise
    raise AssertionError("unreachable")
