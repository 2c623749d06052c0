"""Installing Apicurio Registry for the local registry: Java 21+, Maven, a cache directory.

The runnable Quarkus layout is the `all` classifier of `io.apicurio:apicurio-registry-app` on
Maven Central; `registry/pom.xml` only resolves and unpacks it, into a cache reused later.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

APICURIO_VERSION = "3.3.3"
CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 21  # the registry's classes are built for Java 21 (class file version 65)
HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_HEAP = "128m"
BUILD_TIMEOUT = 1800.0  # a cold Maven resolve fetches ~160 MB
_POM = Path(__file__).with_name("registry") / "pom.xml"
RUNNER = "quarkus-run.jar"
PORT_IN_USE = re.compile(r"Port (\d+) seems to be in use")  # Quarkus's bind failure
PORT_ATTEMPTS = 3  # a port picked by _free_port() can be taken before the JVM binds it
# Small, quick to start, and fine for a test's handful of requests: serial GC and C1 only.
# An application class-data archive (kept beside the registry, written at the first clean
# exit) roughly halves later start-up times.
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


class RegistryUnavailable(RuntimeError):
    """Java 21+ or Maven is missing here, or resolving the registry failed."""


class RegistryStartError(RuntimeError):
    """The registry process exited early or did not answer in time (message has the log tail)."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


# --- where things are -------------------------------------------------------------------------


def cache_root() -> Path:
    """``$WAXLAKE_REGISTRY_CACHE``, else ``$XDG_CACHE_HOME/waxlake``, else ``~/.cache/waxlake``."""
    override = os.environ.get("WAXLAKE_REGISTRY_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "waxlake"


def java_version(java: Path) -> str | None:
    """The full version ("25.0.3") of the JDK/JRE that ``java`` belongs to, or None."""
    release = java.resolve().parent.parent / "release"
    with contextlib.suppress(OSError):
        match = re.search(r'^JAVA_VERSION="([^"]+)"', release.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "([^"]+)"', out)
    return match.group(1) if match else None


def _java_major(java: Path) -> int | None:
    """The feature version (17, 21, 25) of ``java``, or None if unknown."""
    version = java_version(java)
    match = re.match(r"(\d+)(?:\.(\d+))?", version or "")
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java(min_version: int = MIN_JAVA) -> str:
    """Path of a ``java`` of at least ``min_version``; :class:`RegistryUnavailable` if none."""
    candidates: list[Path] = []
    for var in ("WAXLAKE_REGISTRY_JAVA",):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    jvm_dir = Path("/usr/lib/jvm")
    if jvm_dir.is_dir():
        found = [p / "bin" / "java" for p in jvm_dir.iterdir() if (p / "bin" / "java").is_file()]
        candidates.extend(sorted(found, key=lambda p: _java_major(p) or 0, reverse=True))
    seen: list[str] = []
    for java in candidates:
        if not (java.is_file() and os.access(java, os.X_OK)):
            continue
        major = _java_major(java)
        seen.append(f"{java} ({major})")
        if major is not None and major >= min_version:
            return str(java)
    raise RegistryUnavailable(
        f"local registry unavailable: it needs Java {min_version} or newer; found "
        f"{', '.join(seen) or 'no java'} (set WAXLAKE_REGISTRY_JAVA or JAVA_HOME)"
    )


def _find_maven() -> str:
    mvn = os.environ.get("WAXLAKE_REGISTRY_MVN") or shutil.which("mvn")
    if not mvn:
        raise RegistryUnavailable(
            "local registry unavailable: it is resolved with Maven the first time, and no "
            "'mvn' is on PATH (set WAXLAKE_REGISTRY_MVN)"
        )
    return mvn


def registry_home(version: str = APICURIO_VERSION) -> Path:
    """The unpacked registry (holds ``quarkus-run.jar``), resolved with Maven on first use.

    Safe against concurrent callers (a file lock) and interrupted builds (it unpacks into a
    scratch directory and renames it into place).
    """
    root = cache_root()
    home = root / f"apicurio-{version}"
    if (home / RUNNER).is_file():
        return home
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"apicurio-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (home / RUNNER).is_file():  # another process built it while we waited
            return home
        mvn = _find_maven()
        scratch = Path(tempfile.mkdtemp(prefix=f"apicurio-{version}.partial-", dir=root))
        try:
            argv = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(_POM),
                f"-Dapicurio.version={version}",
                f"-Dwaxlake.unpack.dir={scratch / 'app'}",
                f"-Dwaxlake.work.dir={scratch / 'maven'}",
                "dependency:unpack@apicurio",
            ]
            try:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RegistryUnavailable(
                    f"resolving Apicurio Registry {version} with Maven took over "
                    f"{BUILD_TIMEOUT:.0f} s"
                ) from exc
            if done.returncode != 0 or not (scratch / "app" / RUNNER).is_file():
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
                raise RegistryUnavailable(
                    f"resolving Apicurio Registry {version} with Maven failed "
                    f"(exit {done.returncode}): {' '.join(argv)}\n{tail}"
                )
            (scratch / "app").rename(home)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return home


# --- processes ----------------------------------------------------------------------------------
