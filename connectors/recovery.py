"""Bytewax recovery store next to the table: created on first run, checked on every run.

A missing or empty directory is initialised; a store with some of its partitions missing is an
error, never silently re-initialised: re-initialising would throw away the resume state of the
partitions that are there.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from bytewax.recovery import init_db_dir

from connectors.config import ConfigError

log = logging.getLogger(__name__)

_PART_FILE = re.compile(r"^part-(\d+)\.sqlite3$")


def _part_count(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT part_count FROM parts").fetchone()
    if row is None:
        raise ConfigError(f"BYTEWAX_RECOVERY_DIRECTORY: {path} is not a Bytewax recovery partition")
    return int(row[0])


def prepare_recovery_dir(directory: Path, partitions: int, *, complete: bool = True) -> None:
    """Create and initialise `directory` if it holds no recovery partitions; else check it.

    `complete=False` is for clusters where each process holds only some of the partitions.
    """
    found: dict[int, Path] = {}
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(
                f"BYTEWAX_RECOVERY_DIRECTORY: {directory} exists and is not a directory"
            )
        for child in directory.iterdir():
            match = _PART_FILE.match(child.name)
            if match:
                found[int(match.group(1))] = child
    if not found:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]
        log.info("initialised recovery store %s with %d partition(s)", directory, partitions)
        return
    try:
        counts = {_part_count(path) for path in found.values()}
    except sqlite3.Error as exc:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: cannot read the recovery store in {directory} ({exc}); "
            "restore it from backup or delete the directory to start over"
        ) from None
    expected = max(counts)
    missing = sorted(set(range(expected)) - set(found)) if complete else []
    if len(counts) > 1 or missing:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: the recovery store in {directory} is only partly there "
            f"(has partitions {sorted(found)} of {expected}, missing {missing}); restore the missing "
            "part-N.sqlite3 files or delete the directory to start over (in exactly-once mode the "
            "tables' offsets take over)"
        )
