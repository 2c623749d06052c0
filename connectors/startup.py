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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bytewax.tracing import setup_tracing
from pythonjsonlogger.json import JsonFormatter

from connectors import offsets
from connectors.config import ConfigError, Settings, load_settings
from connectors.errors import WaxlakeError, install_excepthook
from connectors.kafka import list_partitions, make_admin, make_consumer
from connectors.partition_watch import watch_partitions
from connectors.recovery import prepare_recovery_dir
from connectors.shutdown import install_signal_handlers
from connectors.topic_ids import check_topic_ids

log = logging.getLogger("waxlake")

T = TypeVar("T")


def _under_bytewax_run() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec is not None and spec.name == "bytewax.run"


def _bytewax_args() -> tuple[Path | None, int, int]:
    """Recovery directory, process id and process count Bytewax will use (flags or env)."""
    if _under_bytewax_run():
        from bytewax.run import _parse_args

        args = _parse_args()  # type: ignore[no-untyped-call]
        processes = len(args.addresses.split(";")) if args.addresses else 1
        return args.recovery_directory, args.process_id or 0, processes
    directory = os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return (Path(directory) if directory else None), 0, 1


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
    recovery_dir, process_id, processes = _bytewax_args()
    if recovery_dir is not None:
        prepare_recovery_dir(
            recovery_dir, settings.recovery_partitions, process_id=process_id, processes=processes
        )
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


def start(check: Callable[[Settings], T]) -> tuple[Settings, T]:
    """Load settings and run the checks, then the flow's own `check` (which returns what the
    flow needs); under `bytewax.run` a ConfigError exits with one line."""
    try:
        settings = load_settings()
        configure_logging(settings)
        partitions = preflight(settings)
        checked = check(settings)
        install_signal_handlers()
        install_excepthook()
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
    return settings, checked
