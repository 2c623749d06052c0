"""Bytewax recovery store next to the table: created on first run, checked on every run.

A missing or empty directory is initialised; a store with some of its partitions missing is an
error, never silently re-initialised: re-initialising would throw away the resume state of the
partitions that are there.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from bytewax.recovery import init_db_dir

from connectors.config import ConfigError

log = logging.getLogger(__name__)

_PART_FILE = re.compile(r"^part-(\d+)\.sqlite3$")


def _part_count(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT part_count FROM parts").fetchone()
    if row is None:
        raise ConfigError(f"BYTEWAX_RECOVERY_DIRECTORY: {path} is not a Bytewax recovery partition")
    return int(row[0])


def share(partitions: int, process_id: int, processes: int) -> set[int]:
    """Recovery partitions process `process_id` of `processes` holds: index modulo processes.

    Each process holds exactly its share, so no partition is in two processes' directories and
    every partition is in one of them, as Bytewax needs.
    """
    return {j for j in range(partitions) if j % processes == process_id}


def prepare_recovery_dir(
    directory: Path, partitions: int, *, process_id: int = 0, processes: int = 1
) -> None:
    """Create and initialise this process's share of the store if `directory` holds none of it;
    else check that it holds exactly its share, never re-initialising a populated store."""
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
        _initialise(directory, partitions, share(partitions, process_id, processes))
        return
    try:
        counts = {_part_count(path) for path in found.values()}
    except sqlite3.Error as exc:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: cannot read the recovery store in {directory} ({exc}); "
            "restore it from backup or delete the directory to start over"
        ) from None
    if len(counts) > 1:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: the partitions in {directory} come from different "
            f"stores (partition counts {sorted(counts)}); restore one store or delete the directory"
        )
    expected = share(counts.pop(), process_id, processes)
    missing = sorted(expected - set(found))
    if missing:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: the recovery store in {directory} is only partly there "
            f"(process {process_id} of {processes} needs partitions {sorted(expected)}, missing "
            f"{missing}); restore the missing part-N.sqlite3 files or delete the directory to "
            "start over (in exactly-once mode the tables' offsets take over)"
        )
    extra = sorted(set(found) - expected)
    if extra:
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: {directory} holds partitions {extra} that belong to "
            f"other processes (process {process_id} of {processes} holds index % {processes} == "
            f"{process_id}); move them to their process's recovery directory"
        )


def _initialise(directory: Path, partitions: int, mine: set[int]) -> None:
    """Create all partitions in a scratch directory and keep only this process's share."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".waxlake-init-", dir=directory))
    try:
        init_db_dir(scratch, partitions)  # type: ignore[no-untyped-call]
        for index in sorted(mine):
            name = f"part-{index}.sqlite3"
            (scratch / name).rename(directory / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "initialised recovery store %s: partitions %s of %d", directory, sorted(mine), partitions
    )


_SOURCE_KEY = re.compile(r"^(.+)#(\d+)$")
"""State keys of the Kafka source's partitions: `<topic>#<partition>`."""


def state_keys(part: Path) -> list[str]:
    """The state keys a recovery partition holds snapshots of (raises sqlite3.Error). Closed
    before Bytewax opens the store: its own SQLite library must not meet a connection of
    Python's in the same process (`recovery_backup`)."""
    with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT DISTINCT state_key FROM snaps")]


def foreign_topics(directory: Path, topics: list[str]) -> list[str]:
    """Topics the store holds source positions of that this job does not read: a topic removed
    from WAXLAKE_TOPICS, or another job's store (Bytewax itself stops on them with `Key ... is
    not in this worker's routing map`)."""
    found: set[str] = set()
    for part in sorted(directory.glob("part-*.sqlite3")):
        try:
            keys = state_keys(part)
        except sqlite3.Error:
            continue  # prepare_recovery_dir says what is wrong with it
        for key in keys:
            match = _SOURCE_KEY.match(key)
            if match and match.group(1) not in topics:
                found.add(match.group(1))
    return sorted(found)
