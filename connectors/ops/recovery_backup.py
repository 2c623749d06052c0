"""Bytewax's recovery store next to the table on object storage: kept local, backed up.

Bytewax keeps its recovery store in SQLite on local disk (it needs locks and a WAL), so with an
`s3://` table root each process backs its share up to `<root>/_recovery/<WAXLAKE_GROUP_ID>/` (one
folder per job: jobs may share a root) every snapshot interval
and once more when it stops, with SQLite's backup API (a consistent copy of a live WAL database,
which a file copy is not), and restores it at start when its local directory holds none of it.
This is what keeps the state of stateful steps (windows, joins, counters) when a pod loses its
disk; the tables' markers alone keep exactly-once.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sqlite3
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

from pyarrow import fs

from connectors.config import ConfigError, Settings
from connectors.ops.recovery import state_keys

log = logging.getLogger(__name__)

_PART = re.compile(r"^part-(\d+)\.sqlite3$")
RECOVERY_DIR = "_recovery"


def _is_remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def _filesystem(settings: Settings) -> tuple[fs.FileSystem, str]:
    """The object store of the table root, from the job's storage options (or AWS_* env)."""
    root = settings.table_root
    if not root.startswith(("s3://", "s3a://")):
        raise ConfigError(
            f"BYTEWAX_RECOVERY_DIRECTORY: recovery backups go to s3:// roots only, not {root}; "
            "keep the recovery directory on a persistent volume instead"
        )
    options = {k.upper(): v for k, v in settings.storage_options.items()}

    def option(name: str) -> str | None:
        return options.get(name) or os.environ.get(name)

    endpoint = option("AWS_ENDPOINT_URL")
    scheme = "http" if endpoint and endpoint.startswith("http://") else "https"
    store = fs.S3FileSystem(
        access_key=option("AWS_ACCESS_KEY_ID"),
        secret_key=option("AWS_SECRET_ACCESS_KEY"),
        session_token=option("AWS_SESSION_TOKEN"),
        region=option("AWS_REGION") or option("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
        scheme=scheme,
    )
    return store, f"{root.split('://', 1)[1]}/{RECOVERY_DIR}/{quote(settings.group_id, safe='')}"


def backup_uri(settings: Settings) -> str | None:
    """Where this job's recovery store is backed up (None: a local root, no backup)."""
    if not _is_remote(settings.table_root):
        return None
    _, remote = _filesystem(settings)
    return f"s3://{remote}"


def _parts(store: fs.FileSystem, remote: str) -> list[fs.FileInfo]:
    """The backed-up partitions in `remote`, else in its parent (backups from before the
    per-job folders)."""
    for where in (remote, remote.rsplit("/", 1)[0]):
        found = store.get_file_info(fs.FileSelector(where, allow_not_found=True))
        parts = [info for info in found if _PART.match(info.base_name)]
        if parts:
            return parts
    return []


def stores_at_root(settings: Settings) -> list[str]:
    """The recovery partitions kept at `<root>/_recovery` (the local store, or the backup of an
    object-store root), by path."""
    if not _is_remote(settings.table_root):
        local = Path(settings.table_root.removeprefix("file://")) / RECOVERY_DIR
        return sorted(str(part) for part in local.glob("part-*.sqlite3") if _holds_state(part))
    store, remote = _filesystem(settings)
    return sorted(f"s3://{info.path}" for info in _parts(store, remote))


def _holds_state(part: Path) -> bool:
    """Whether a recovery partition holds any position (one only initialised, by a start that
    then stopped on a bad setting, holds none, and wins over nothing)."""
    try:
        return bool(state_keys(part))
    except sqlite3.Error:
        return True  # unreadable: say it is there, the operator looks


def restore(settings: Settings, directory: Path, mine: set[int]) -> list[int]:
    """Fetch this process's recovery partitions from the backup if the local directory holds
    none of them; returns the partitions restored."""
    if not _is_remote(settings.table_root) or any(
        (directory / f"part-{i}.sqlite3").exists() for i in mine
    ):
        return []
    store, remote = _filesystem(settings)
    restored = []
    directory.mkdir(parents=True, exist_ok=True)
    for info in _parts(store, remote):
        match = _PART.match(info.base_name)
        if match and int(match.group(1)) in mine:
            fs.copy_files(info.path, str(directory / info.base_name), source_filesystem=store)
            restored.append(int(match.group(1)))
    if restored:
        log.warning(
            "restored recovery partitions %s from s3://%s",
            sorted(restored),
            info.path.rsplit("/", 1)[0],
        )
    return sorted(restored)


def backup(settings: Settings, directory: Path) -> None:
    """A consistent copy of every local recovery partition, uploaded next to the table."""
    store, remote = _filesystem(settings)
    store.create_dir(remote, recursive=True)
    for part in sorted(directory.glob("part-*.sqlite3")):
        with tempfile.TemporaryDirectory(prefix="waxlake-backup-") as scratch:
            copy = Path(scratch) / part.name
            source = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
            fs.copy_files(str(copy), f"{remote}/{part.name}", destination_filesystem=store)


def start_backups(settings: Settings, directory: Path, interval_s: float) -> None:
    """Back the store up every `interval_s` seconds and when the process exits."""
    if not _is_remote(settings.table_root):
        return  # a local root: the recovery directory is already next to the table
    _filesystem(settings)  # a bad root fails at start-up, not in the thread
    stop = threading.Event()

    def run(final: bool = False) -> None:
        try:
            backup(settings, directory)
        except (OSError, sqlite3.Error) as exc:
            log.warning("recovery backup to %s failed (retried): %s", settings.table_root, exc)
        if final:
            stop.set()

    def loop() -> None:
        while not stop.wait(interval_s):
            run()

    threading.Thread(target=loop, name="waxlake-recovery-backup", daemon=True).start()
    atexit.register(run, True)
