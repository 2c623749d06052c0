"""The jars of Apache Kafka, resolved by Maven into a local cache on first use.

``kafka/pom.xml`` names them; ``mvn ... copy-dependencies`` copies them (with every runtime
dependency) into ``<cache>/libs``, and a marker file written after a successful resolve lets
later runs skip Maven. The cache is ``$WAXLAKE_KAFKA_CACHE``, else
``$XDG_CACHE_HOME/waxlake/kafka-<version>`` (``~/.cache/...``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from connectors.local_broker.process import BrokerUnavailable

POM = Path(__file__).with_name("kafka") / "pom.xml"
LOG4J_CONFIG = Path(__file__).with_name("kafka") / "log4j2.properties"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
MVN_TIMEOUT = 900.0
_MARKER = "resolved.sha256"


@dataclass(frozen=True)
class KafkaJars:
    """A resolved jar folder and the ``java`` that runs it."""

    version: str
    libs: Path
    java: str

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


def kafka_version(pom: Path = POM) -> str:
    """The ``kafka.version`` property of the POM (the one place the version is written)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise ValueError(f"{pom}: no <kafka.version> property")
    return (node.text or "").strip()


def cache_dir(version: str) -> Path:
    """Where the jars of ``version`` are kept; ``WAXLAKE_KAFKA_CACHE`` overrides it."""
    override = os.environ.get("WAXLAKE_KAFKA_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "waxlake" / f"kafka-{version}"


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH; must be Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if not java:
        raise BrokerUnavailable(
            "Apache Kafka unavailable: no 'java' on PATH (or in $JAVA_HOME/bin); "
            f"Kafka 4.x needs Java {MIN_JAVA}+"
        )
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerUnavailable(
            f"Apache Kafka unavailable: {java} is Java {major}; Kafka 4.x needs Java {MIN_JAVA}+"
        )
    return java


@cache
def java_major_version(java: str) -> int:
    """17 from 'openjdk version "17.0.15"', 8 from '"1.8.0_412"' (``java -version``)."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailable(f"Apache Kafka unavailable: cannot run {java}: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise BrokerUnavailable(f"Apache Kafka unavailable: {java} -version says {out.stderr!r}")
    major, minor = int(match[1]), int(match[2] or 0)
    return minor if major == 1 else major


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def is_resolved(cache: Path, pom: Path = POM) -> bool:
    """True if ``cache`` holds jars resolved from this very POM (its marker matches)."""
    marker = cache / _MARKER
    try:
        return marker.read_text().strip() == _pom_digest(pom) and (cache / "libs").is_dir()
    except OSError:
        return False


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One resolver at a time per cache (a test session and a CLI may start together)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resolve_jars(cache: Path | None = None, pom: Path = POM, quiet: bool = False) -> KafkaJars:
    """The jars of the POM's Kafka version, resolving them with Maven the first time.

    Raises :class:`BrokerUnavailable` naming what is missing (java, mvn) or why Maven failed.
    """
    version = kafka_version(pom)
    cache = cache or cache_dir(version)
    java = find_java()
    if is_resolved(cache, pom):
        return KafkaJars(version, cache / "libs", java)
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerUnavailable(
            f"Apache Kafka unavailable: no 'mvn' on PATH to resolve the Kafka {version} jars "
            f"into {cache} (needed once; install Maven)"
        )
    with _locked(cache):
        if not is_resolved(cache, pom):  # another process may have resolved meanwhile
            _run_maven(mvn, pom, cache, version, quiet)
    return KafkaJars(version, cache / "libs", java)


def _run_maven(mvn: str, pom: Path, cache: Path, version: str, quiet: bool) -> None:
    """copy-dependencies into a fresh folder, then swap it in and write the marker."""
    if not quiet:
        print(
            f"local_broker: resolving Apache Kafka {version} jars with Maven into {cache} "
            "(first run only)",
            file=sys.stderr,
            flush=True,
        )
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    # Maven runs on a copy of the POM in the cache: nothing is written into the source tree.
    work_pom = cache / "pom.xml"
    shutil.copyfile(pom, work_pom)
    argv = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(work_pom), DEPENDENCY_PLUGIN]
    argv += ["-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
    try:
        done = subprocess.run(
            argv, cwd=cache, capture_output=True, text=True, timeout=MVN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerUnavailable(
            f"Apache Kafka unavailable: Maven did not resolve the jars in {MVN_TIMEOUT:.0f} s"
        ) from exc
    jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
    if done.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BrokerUnavailable(
            f"Apache Kafka unavailable: Maven could not resolve the Kafka {version} jars "
            f"(exit {done.returncode}):\n{tail}"
        )
    shutil.rmtree(cache / "libs", ignore_errors=True)
    staging.rename(cache / "libs")
    (cache / _MARKER).write_text(_pom_digest(pom) + "\n")
