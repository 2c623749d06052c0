"""Fatal runtime errors, and the one `waxlake: error:` line every fatal error ends with.

Bytewax prints a Python traceback when an operator raises; its last line is Bytewax's own wrapper
(`BytewaxRuntimeError: error calling ...`), which tells a user nothing. `install_excepthook` keeps
that traceback for debugging and then prints one line that says what failed, where (table or topic
and partition) and what to do, like a bad setting does at start-up.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import sys
import traceback
from types import TracebackType

from confluent_kafka import KafkaException

from connectors.config import ConfigError

EXIT_RUNTIME_ERROR = 1
EXIT_CONFIG_ERROR = 2


class WaxlakeError(RuntimeError):
    """A fatal error whose message is the line users see: what, where, and what to do."""


class DataLossError(WaxlakeError):
    """Records were deleted from Kafka before they landed, and WAXLAKE_ON_DATA_LOSS=fail."""


class OffsetsReusedError(WaxlakeError):
    """The log was truncated or the topic recreated: (topic, partition, offset) no longer names
    one record, so no setting may skip past it."""


class KafkaFatalError(WaxlakeError):
    """librdkafka reported an error it will not recover from."""


class ConcurrentWriteError(RuntimeError):
    """Gave up after too many commit conflicts on one table."""


class TableWriteError(WaxlakeError):
    """A commit to a Delta table failed for good (disk, object store, conflicts)."""


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes, outermost first (Bytewax wraps the user's error twice)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def one_line(text: str) -> str:
    """The gist of a multi-line, possibly coloured error text (delta-rs, object_store)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line.strip(" \u21b3") for line in text.splitlines() if line.strip(" \u21b3")]
    return " ".join(lines) if lines else text


def fatal_line(exc: BaseException) -> str:
    """The line to print last for a fatal `exc` (without the `waxlake: error:` prefix)."""
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, WaxlakeError | ConfigError):
            return one_line(str(error))  # a user step's message may span lines
    root = chain[-1]
    if type(root).__name__ == "PanicException" and "thread panic" in str(root):
        return (
            "another process of this Bytewax cluster went away (membership is static, so every "
            "process stops): restart all of them; each resumes where its tables' offsets are"
        )
    failed = _failed_step(chain)
    if failed is not None:
        step, where = failed
        return (
            f"step {step} failed on {where}: {type(root).__name__}: {one_line(str(root))}; fix "
            "the step and restart the job (nothing of this batch or after it was committed)"
        )
    return (
        f"unexpected {type(root).__name__}: {one_line(str(root))} "
        "(the traceback above has the details; the tables are consistent: restart the job)"
    )


_BYTEWAX_STEP = re.compile(r'in step "[^".]+\.([^".]+)')
"""Bytewax names the step that raised, e.g. `in step "flow.count.stateful_flat_map..."`."""


def _failed_step(chain: list[BaseException]) -> tuple[str, str] | None:
    """(step, batch) for an error raised in a user's step that `rows` does not wrap (a plain
    `op.map`, `op.stateful_map`): the step from Bytewax's message, the batch from the innermost
    call of the traceback that held one. None for errors raised in waxlake's own code."""
    from connectors.batch import KafkaBatch  # the batch module imports this one

    step = next((m.group(1) for e in chain if (m := _BYTEWAX_STEP.search(str(e)))), None)
    if step is None:
        return None
    ours = os.path.dirname(__file__)  # waxlake's own failures have lines of their own
    frames = [frame for frame, _ in traceback.walk_tb(chain[-1].__traceback__)]
    if any(frame.f_code.co_filename.startswith(ours) for frame in frames):
        return None
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            held = value[-1] if isinstance(value, tuple) and value else value
            if isinstance(held, KafkaBatch):
                return step, held.describe()
    return None


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    if not _is_setting(exc):  # a bad setting needs no traceback; anything else keeps it
        traceback.print_exception(kind, exc, tb, file=sys.stderr)
    _end(exc)


def _is_setting(exc: BaseException) -> bool:
    return any(isinstance(e, ConfigError) for e in _chain(exc))


def _end(exc: BaseException) -> None:
    print(f"waxlake: error: {fatal_line(exc)}", file=sys.stderr, flush=True)
    logging.shutdown()
    # Leave now: consumers closed during interpreter shutdown would log after our last line.
    # Delta and Kafka commits are atomic, so nothing half-done is left behind.
    os._exit(EXIT_CONFIG_ERROR if _is_setting(exc) else EXIT_RUNTIME_ERROR)


_AT_EXIT: list[BaseException] = []


def fail_at_exit(exc: BaseException) -> None:
    """For an error where raising is not safe: Bytewax closes partitions while it unwinds from
    another error, and a second error there aborts the process (no last line, exit -6). The job
    ends as if it had raised `exc`: its traceback now, its line last and its exit code when
    the interpreter exits, unless another error's line ends the job first."""
    traceback.print_exception(exc, file=sys.stderr)
    if not _AT_EXIT:
        atexit.register(lambda: _end(_AT_EXIT[0]))
    _AT_EXIT.append(exc)


def install_excepthook() -> None:
    sys.excepthook = _excepthook


def is_disk_full(exc: BaseException) -> bool:
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or "No space left on device" in str(e)
        or "os error 28" in str(e)
        for e in _chain(exc)
    )


def commit_failure(topic: str, uri: str, exc: BaseException) -> str:
    """The one line for a commit that failed for good: where, why, what to do."""
    cause = one_line(str(exc))
    if is_disk_full(exc):
        advice = f"the disk under {uri} is full: free space there and restart the job"
    elif isinstance(exc, ConcurrentWriteError):
        advice = (
            "another writer keeps committing to this table (a second job instance on the same "
            "WAXLAKE_TABLE_ROOT?): stop it, then restart this job"
        )
    elif isinstance(exc, KafkaException):
        advice = "the Kafka offset commit failed: check the broker, then restart the job"
    elif "://" in uri and not uri.startswith("file://"):
        advice = (
            "the object store did not accept the commit (after delta-rs's retries): check the "
            "endpoint, credentials and network (WAXLAKE_STORAGE_OPTIONS), then restart the job"
        )
    else:
        advice = "fix the cause, then restart the job"
    return (
        f"committing topic {topic} to {uri} failed: {cause}; {advice}. Rows and offsets commit "
        "atomically, so the table is consistent and the job resumes where it stopped"
    )
