"""A JVM class-data archive (CDS) per JDK, so that a JVM started again starts faster.

The first run of a JDK writes the archive at exit (`-XX:ArchiveClassesAtExit`); later runs map it
(`-XX:SharedArchiveFile`). Each JVM writes a scratch file of its own, renamed into place only
after a clean exit, so concurrent JVMs never share a half-written archive.

Standalone on purpose: this module imports the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path


class ClassDataArchive:
    def __init__(self, directory: Path, java_version: str | None) -> None:
        version = re.sub(r"[^0-9A-Za-z._+-]", "_", java_version or "unknown")
        self.path = directory / f"waxlake-jdk-{version}.jsa"
        self._scratch: Path | None = None

    def flags(self, tag: str) -> list[str]:
        """The JVM flags of one start: use the archive, or write one (`tag`: unique per start)."""
        if self.path.is_file():
            self._scratch = None
            return [f"-XX:SharedArchiveFile={self.path}"]
        self._scratch = self.path.with_name(f"{self.path.name}.{os.getpid()}-{tag}.tmp")
        return [f"-XX:ArchiveClassesAtExit={self._scratch}"]

    def settle(self, clean_exit: bool) -> None:
        """After the JVM ended: keep what a clean exit wrote, else drop the scratch file."""
        scratch, self._scratch = self._scratch, None
        if scratch is None:
            return
        with contextlib.suppress(OSError):
            if clean_exit and scratch.is_file() and not self.path.exists():
                os.replace(scratch, self.path)
            else:
                scratch.unlink(missing_ok=True)
