"""What a flow module does when it is imported: settings, logging and checks before reading.

`python -m bytewax.run` parses its arguments, imports the flow, then runs it; so a bad setting
found here stops the job with one line before any record is read.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import uuid
from pathlib import Path
from typing import TypeVar

from bytewax.tracing import setup_tracing
from pythonjsonlogger.json import JsonFormatter

from connectors.config import ConfigError, Settings, load_settings
from connectors.delta import markers as offsets
from connectors.errors import WaxlakeError, install_excepthook
from connectors.flow_settings import unknown_settings
from connectors.kafka.client import list_partitions, make_admin, make_consumer
from connectors.kafka.partition_watch import watch_partitions
from connectors.kafka.topic_ids import check_topic_ids
from connectors.ops import recovery_backup
from connectors.ops.move_marker import check_moves_reached_the_group
from connectors.ops.recovery import foreign_topics, prepare_recovery_dir, share
from connectors.ops.shutdown import install_signal_handlers

log = logging.getLogger("waxlake")

T = TypeVar("T")


def _under_bytewax_run() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec is not None and spec.name == "bytewax.run"


def _bytewax_args() -> tuple[Path | None, int, int, float]:
    """Recovery directory, process id, process count and snapshot interval (s) Bytewax will use
    (flags or env)."""
    if _under_bytewax_run():
        from bytewax.run import _parse_args

        args = _parse_args()  # type: ignore[no-untyped-call]
        processes = len(args.addresses.split(";")) if args.addresses else 1
        interval = args.snapshot_interval.total_seconds() if args.snapshot_interval else 10.0
        return args.recovery_directory, args.process_id or 0, processes, interval
    directory = os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return (Path(directory) if directory else None), 0, 1, 10.0


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _one_line(exc: OSError) -> str:
    """The gist of a delta-rs / object_store error (multi-line, coloured) on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    code = re.search(r"<Code>([^<]+)</Code>", text)
    lines = [line.strip(" \u21b3") for line in text.splitlines() if line.strip(" \u21b3")]
    return code.group(1) if code else (lines[-1] if lines else type(exc).__name__)


def check_remote_root(settings: Settings) -> None:
    """An object-store root must answer with the storage options given (bucket, endpoint, keys)."""
    for topic in settings.topics:
        uri = settings.table_uri(topic)
        try:
            offsets.open_table(uri, settings.storage_options)
        except OSError as exc:
            raise ConfigError(
                f"WAXLAKE_TABLE_ROOT: cannot read {uri} ({_one_line(exc)}); check the bucket and "
                "WAXLAKE_STORAGE_OPTIONS (endpoint, credentials, region)"
            ) from None


def check_table_root(settings: Settings) -> None:
    """A local table root must be a directory we can write to; a remote one must answer."""
    if not is_local(settings.table_root):
        check_remote_root(settings)
        return
    root = Path(settings.table_root.removeprefix("file://"))
    probe = root / f".waxlake-write-test-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: cannot write to {root} ({exc.strerror}); "
            "point it at a writable directory"
        ) from None


def preflight(settings: Settings) -> dict[str, list[int]]:
    """Every check that can fail before reading: Kafka settings, broker, topics, paths, topic
    identities. Returns the partitions of each topic."""
    make_consumer(settings, what="config check").close()
    admin = make_admin(settings)
    partitions = list_partitions(settings, admin=admin)
    check_table_root(settings)
    check_topic_ids(settings, admin)
    check_moves_reached_the_group(settings, partitions)
    recovery_dir, process_id, processes, interval = _bytewax_args()
    if recovery_dir is not None:
        mine = share(settings.recovery_partitions, process_id, processes)
        recovery_backup.restore(settings, recovery_dir, mine)
        prepare_recovery_dir(
            recovery_dir, settings.recovery_partitions, process_id=process_id, processes=processes
        )
        if foreign := foreign_topics(recovery_dir, settings.topics):
            backup = recovery_backup.backup_uri(settings)
            raise ConfigError(
                f"BYTEWAX_RECOVERY_DIRECTORY: the recovery store in {recovery_dir} holds the "
                f"positions of topic(s) {', '.join(foreign)}, which this job does not read. If "
                "it is another job's store, give this job a recovery directory and "
                "WAXLAKE_GROUP_ID of its own (and leave that store alone); if the topics were "
                f"removed from WAXLAKE_TOPICS, delete {recovery_dir}"
                f"{f' and {backup}' if backup else ''} to start the store afresh (under "
                "exactly-once the tables' markers keep every position)"
            )
        recovery_backup.start_backups(settings, recovery_dir, max(interval, 1.0))
    return partitions


_tracer: object = None  # Bytewax's tracer lives as long as this reference


def configure_logging(settings: Settings) -> None:
    """Python logging as text or JSON lines; Bytewax's own tracing at its level."""
    global _tracer
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    _tracer = setup_tracing(log_level=settings.bytewax_log_level)  # type: ignore[no-untyped-call]


def tune_gc() -> None:
    """Every poll allocates thousands of short-lived message objects; with the default
    thresholds the cyclic GC runs constantly over them (a quarter of the CPU in profiles).
    Freeze what start-up created and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


def start() -> Settings:
    """Load the settings and run every check that can fail before reading (Kafka settings,
    broker, topics, table root, topic identities, recovery store); set up logging, signals and
    the fatal-error line. Under `bytewax.run` a bad setting, here or later while the flow is
    built (a decoder's check of existing tables), exits 2 with one `waxlake: error:` line."""
    install_excepthook()
    try:
        settings = load_settings()
        configure_logging(settings)
        for line in unknown_settings():
            log.warning("%s", line)
        partitions = preflight(settings)
        install_signal_handlers()
        watch_partitions(settings, partitions)
        tune_gc()
    except (ConfigError, WaxlakeError) as exc:
        if _under_bytewax_run():
            print(f"waxlake: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    log.info(
        "waxlake %s: topics %s -> %s (group %s)",
        settings.guarantee.value,
        ",".join(settings.topics),
        settings.table_root,
        settings.group_id,
    )
    return settings
