"""Bytewax's recovery store next to the table on object storage: kept local, backed up.

Bytewax keeps its recovery store in SQLite on local disk (it needs locks and a WAL), so with an
`s3://` table root each process backs its share up to `<root>/_recovery/<WAXLAKE_GROUP_ID>/` (one
folder per job: jobs may share a root) every snapshot interval
and once more when it stops, with SQLite's backup API (a consistent copy of a live WAL database,
which a file copy is not), and restores it at start when its local directory holds none of it.
This is what keeps the state of stateful steps (windows, joins, counters) when a pod loses its
disk; the tables' markers alone keep exactly-once.

The backup reads the live store from a short-lived child process, never from the job's own: the
job writes it with Bytewax's bundled SQLite, and a second SQLite library in the same process
cannot see the first one's POSIX locks (they are per process), so each takes itself for the
only user. Python's SQLite kept the -wal and -shm it opened at start-up after Bytewax's deleted
and recreated them, and read that stale wal-index: only the initial store, never the WAL. Opened
read-write, its close checkpoints and deletes the WAL under Bytewax, whose later commits are lost.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from pyarrow import fs

from connectors.config import ConfigError, Settings
from connectors.ops.recovery import state_keys

log = logging.getLogger(__name__)

_PART = re.compile(r"^part-(\d+)\.sqlite3$")
RECOVERY_DIR = "_recovery"
_COPY = (
    "import sqlite3, sys\n"
    "source = sqlite3.connect(sys.argv[1], uri=True, timeout=30)\n"
    "target = sqlite3.connect(sys.argv[2])\n"
    "source.backup(target)\n"  # every page in one step: one read transaction, never torn
    "target.close()\n"
    "source.close()\n"
)
"""The child's program: SQLite's backup API from a reader that sees the job's locks and WAL."""


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


def committed_epoch(part: Path) -> int | None:
    """The last epoch a copy of a recovery partition (not the live store) holds committed."""
    uri = f"file:{quote(str(part))}?immutable=1"  # a still file: no lock, no -wal or -shm
    with closing(sqlite3.connect(uri, uri=True)) as db:
        epoch = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()[0]
    return None if epoch is None else int(epoch)


def restore(settings: Settings, directory: Path, mine: set[int]) -> list[int]:
    """Fetch this process's recovery partitions from the backup if the local directory holds
    none of them; returns the partitions restored. The log says which epoch each one resumes
    from: a backup of a store with no committed epoch yet restores no state."""
    if not _is_remote(settings.table_root) or any(
        (directory / f"part-{i}.sqlite3").exists() for i in mine
    ):
        return []
    store, remote = _filesystem(settings)
    epochs: dict[int, int | None] = {}
    where = f"s3://{remote}"
    directory.mkdir(parents=True, exist_ok=True)
    for info in _parts(store, remote):
        match = _PART.match(info.base_name)
        if match and int(match.group(1)) in mine:
            fetched = directory / f".{info.base_name}.restoring"  # not a part-N name until whole
            fs.copy_files(info.path, str(fetched), source_filesystem=store)
            epochs[int(match.group(1))] = committed_epoch(fetched)
            fetched.rename(directory / info.base_name)
            where = f"s3://{info.path.rsplit('/', 1)[0]}"
    held = {index: epoch for index, epoch in sorted(epochs.items()) if epoch is not None}
    if held:
        log.warning(
            "restored recovery partitions %s from %s at committed epoch %s",
            sorted(held),
            where,
            ", ".join(f"{epoch} (part {index})" for index, epoch in held.items()),
        )
    if empty := sorted(set(epochs) - set(held)):
        log.warning(
            "the backup of recovery partitions %s in %s holds no committed epoch (taken before "
            "the first snapshot): their stateful steps start afresh",
            empty,
            where,
        )
    return sorted(epochs)


def _copy(part: Path, copy: Path) -> None:
    """A consistent copy of the live partition `part`, made by a child process (see the module
    docstring for why not by this one); raises OSError if it fails."""
    uri = f"file:{quote(str(part))}?mode=ro"
    try:
        child = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _COPY, uri, str(copy)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.SubprocessError as exc:
        raise OSError(f"copying {part}: {exc}") from None
    if child.returncode != 0:
        tail = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        raise OSError(f"copying {part}: {tail[0]}")


def backup(settings: Settings, directory: Path) -> dict[int, int | None]:
    """A consistent copy of every local recovery partition, uploaded next to the table; returns
    the committed epoch each copy holds, by partition."""
    store, remote = _filesystem(settings)
    store.create_dir(remote, recursive=True)
    epochs: dict[int, int | None] = {}
    for part in sorted(directory.glob("part-*.sqlite3")):
        match = _PART.match(part.name)
        if not match:
            continue
        with tempfile.TemporaryDirectory(prefix="waxlake-backup-") as scratch:
            copy = Path(scratch) / part.name
            _copy(part, copy)
            epochs[int(match.group(1))] = committed_epoch(copy)
            fs.copy_files(str(copy), f"{remote}/{part.name}", destination_filesystem=store)
    return epochs


def start_backups(settings: Settings, directory: Path, interval_s: float) -> None:
    """Back the store up every `interval_s` seconds and when the process exits."""
    if not _is_remote(settings.table_root):
        return  # a local root: the recovery directory is already next to the table
    _filesystem(settings)  # a bad root fails at start-up, not in the thread
    stop, one_at_a_time = threading.Event(), threading.Lock()  # a late older copy never wins

    def run(final: bool = False) -> None:
        try:
            with one_at_a_time:
                epochs = backup(settings, directory)
            log.debug("backed up recovery partitions at epochs %s", epochs)
        except (OSError, sqlite3.Error) as exc:
            log.warning("recovery backup to %s failed (retried): %s", settings.table_root, exc)
        if final:
            stop.set()

    def loop() -> None:
        while not stop.wait(interval_s):
            run()

    threading.Thread(target=loop, name="waxlake-recovery-backup", daemon=True).start()
    atexit.register(run, True)
