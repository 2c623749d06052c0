"""A real schema registry on loopback for tests and the demo: Apicurio Registry (no Docker).

Apicurio Registry speaks the Confluent Schema Registry REST API under ``/apis/ccompat/v7``, so
confluent-kafka's ``SchemaRegistryClient`` and its Avro, Protobuf and JSON Schema serializers
work against it unchanged (``LocalRegistry.url`` is the base URL that client takes). Where its
jars come from and which Java runs it: ``registry_install`` (Maven Central's ``all`` classifier
of ``io.apicurio:apicurio-registry-app``, unpacked once into ``$WAXLAKE_REGISTRY_CACHE`` or
``~/.cache/waxlake``; Java 21 or newer, ``$WAXLAKE_REGISTRY_JAVA`` to choose one).

Storage is in memory by default (a fresh, empty registry per start); ``data_dir`` keeps it in an
H2 file there, so that :meth:`LocalRegistry.stop` then :meth:`LocalRegistry.start` comes back
with the same schemas and ids. Usage::

    with start_registry() as registry:
        client = SchemaRegistryClient({"url": registry.url})

The JVM runs in its own session (process group); :meth:`LocalRegistry.stop` signals the whole
group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import atexit
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from connectors.local_broker.class_data import ClassDataArchive
from connectors.local_broker.process import free_port, read_tail, stop_group
from connectors.local_broker.registry_install import (
    APICURIO_VERSION,
    CCOMPAT_PATH,
    DEFAULT_HEAP,
    DEFAULT_START_TIMEOUT,
    HOST,
    JVM_FLAGS,
    PORT_ATTEMPTS,
    PORT_IN_USE,
    RUNNER,
    RegistryStartError,
    RegistryUnavailable,
    cache_root,
    find_java,
    java_version,
    registry_home,
)

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "LocalRegistry",
    "RegistryStartError",
    "RegistryUnavailable",
    "cache_root",
    "find_java",
    "registry_home",
    "start_registry",
]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _subjects_answer(url: str) -> str | None:
    """None if ``GET {url}/subjects`` returned a JSON list, else why not."""
    try:
        with _DIRECT.open(f"{url}/subjects", timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:  # URLError, HTTPError, refused, bad JSON
        return repr(exc)
    return None if isinstance(body, list) else f"unexpected answer {body!r}"


class LocalRegistry:
    """An Apicurio Registry JVM on ``127.0.0.1:port``; a context manager that stops it.

    :meth:`stop` ends the process and keeps the log; :meth:`start` runs it again on the same
    port (and the same ``data_dir``, if any); :meth:`close` (also ``__exit__``) stops it and
    removes its scratch directory.
    """

    def __init__(
        self,
        port: int,
        *,
        home: Path,
        java: str,
        data_dir: Path | None = None,
        heap: str = DEFAULT_HEAP,
        jvm_args: Sequence[str] = (),
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.port = port
        self.home = home
        self.java = java
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.heap = heap
        self.jvm_args = list(jvm_args)
        self.timeout = timeout
        self._workdir = Path(tempfile.mkdtemp(prefix="waxlake-registry-"))
        self.log_path = self._workdir / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0
        self._archive = ClassDataArchive(home, java_version(Path(java)))
        self.last_start_seconds: float | None = None
        atexit.register(self.close)

    def __repr__(self) -> str:
        process = self.process
        running = process is not None and process.poll() is None
        state = f"pid={process.pid}" if process is not None and running else "stopped"
        return f"LocalRegistry({self.url!r}, {state})"

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL, for ``SchemaRegistryClient({"url": ...})``."""
        return f"http://{HOST}:{self.port}{CCOMPAT_PATH}"

    @property
    def base_url(self) -> str:
        """The server root (Apicurio's own API lives under ``/apis/registry/v3``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the registry's combined stdout/stderr (all starts)."""
        return read_tail(self.log_path, lines)

    def _log_since_launch(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _argv(self, management_port: int) -> list[str]:
        props = {
            "quarkus.http.host": HOST,
            "quarkus.http.port": self.port,
            # The management interface (health, metrics) is a build-time feature of this
            # build: it always listens, so give it a free loopback port of its own.
            "quarkus.management.host": HOST,
            "quarkus.management.port": management_port,
            "apicurio.storage.snapshot.location": self._workdir,
            "java.io.tmpdir": self._workdir,
        }
        if self.data_dir is not None:
            props["apicurio.datasource.url"] = f"jdbc:h2:file:{self.data_dir / 'registry'}"
        return [
            self.java,
            f"-Xmx{self.heap}",
            *JVM_FLAGS,
            *self._archive.flags(f"{id(self)}-{self.starts}"),
            *self.jvm_args,
            *(f"-D{key}={value}" for key, value in props.items()),
            "-jar",
            str(self.home / RUNNER),
        ]

    def _launch(self, management_port: int) -> None:
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self._workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- waxlake: start {self.starts + 1} on port {self.port}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                self._argv(management_port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,
            )
        self.starts += 1

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.timeout
        last = "port never opened"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RegistryStartError(
                    f"registry process exited with code {self.process.returncode}", exited=True
                )
            problem = _subjects_answer(self.url)
            if problem is None:
                return
            last = problem
            time.sleep(0.1)
        raise RegistryStartError(
            f"registry at {self.url} not ready after {self.timeout:.0f} s ({last})", exited=False
        )

    def start(self) -> Self:
        """Run the registry (again) on :attr:`port` and wait until its ccompat API answers.

        A no-op while it runs. Raises :class:`RegistryStartError` (with the log tail) if the
        process exits first or does not answer within :attr:`timeout` seconds.
        """
        if self.running:
            return self
        begun = time.monotonic()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._launch(free_port())
            try:
                self._wait_ready()
            except RegistryStartError as exc:
                tail = self.log_tail()
                self.stop()
                # Retry only the "management port was grabbed meanwhile" race.
                busy = {int(p) for p in PORT_IN_USE.findall(self._log_since_launch())}
                if exc.exited and attempt < PORT_ATTEMPTS and busy and self.port not in busy:
                    continue
                raise RegistryStartError(
                    f"Apicurio Registry failed to start: {exc}\n--- registry log tail ---\n{tail}",
                    exited=exc.exited,
                ) from exc
            except BaseException:
                self.stop()
                raise
            break
        self.last_start_seconds = time.monotonic() - begun
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the registry's process group, wait, then SIGKILL. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        clean_exit = stop_group(process, timeout)
        self._archive.settle(clean_exit and process.returncode in (0, 143, -signal.SIGTERM))

    def close(self) -> None:
        """Stop the registry and remove its scratch directory (the log goes with it)."""
        atexit.unregister(self.close)
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_registry(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    version: str = APICURIO_VERSION,
    heap: str = DEFAULT_HEAP,
    jvm_args: Sequence[str] = (),
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalRegistry:
    """Start Apicurio Registry on ``127.0.0.1:port`` (a free port if None); see the module doc.

    The first call on a machine resolves the registry with Maven (minutes); later ones start it
    from the cache in a few seconds.
    """
    java = find_java()
    home = registry_home(version)
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        registry = LocalRegistry(
            port if port is not None else free_port(),
            home=home,
            java=java,
            data_dir=data_dir,
            heap=heap,
            jvm_args=jvm_args,
            timeout=timeout,
        )
        try:
            return registry.start()
        except RegistryStartError as exc:
            registry.close()
            # Retry only the "free port was grabbed meanwhile" race: the process died.
            if attempt == attempts or not exc.exited:
                raise
        except BaseException:
            registry.close()
            raise
    raise AssertionError("unreachable")
