"""What every commit reports: metrics, progress, and one log line."""

from __future__ import annotations

import logging

from connectors.delta.buffer import Flush
from connectors.delta.dead_letters import reasons
from connectors.delta.table_writer import CommitResult
from connectors.ops import metrics
from connectors.ops.progress import PROGRESS

log = logging.getLogger("connectors.delta.sink")  # the commit line's logger, as documented


def report_commit(
    topic: str,
    uri: str,
    dead_uri: str,
    flush: Flush,
    result: CommitResult,
    dead_result: CommitResult | None,
    elapsed: float,
) -> None:
    # The committed offsets first: whoever sees the counters below move sees them too.
    for partition, mark in flush.marks.items():
        metrics.LAG.set_committed(topic, partition, mark.last_offset)
    metrics.BUFFERED_ROWS.labels(topic).set(0)
    metrics.COMMITS.labels(topic).inc()
    metrics.COMMIT_SECONDS.labels(topic).observe(elapsed)
    metrics.RECORDS_WRITTEN.labels(topic).inc(result.rows_written)
    metrics.RECORDS_SKIPPED.labels(topic).inc(result.rows_skipped)
    if flush.rows.num_rows:
        metrics.BYTES_WRITTEN.labels(topic).inc(
            flush.bytes * result.rows_written // flush.rows.num_rows
        )
    if dead_result is not None:
        metrics.DEAD_LETTERS.labels(topic).inc(dead_result.rows_written)
        log.warning(
            "%d record(s) of %s went to %s: %s",
            dead_result.rows_written,
            topic,
            dead_uri,
            reasons(flush.dead),
        )
    PROGRESS.landed(flush.records)
    if result.superseded is None:
        what = f"{result.rows_written} rows written, {result.rows_skipped} already there"
    else:  # a current-state table: changes, most of them replaced by later ones of their key
        replayed = result.rows_skipped - result.superseded
        what = (
            f"{result.rows_written} changes merged, {result.superseded} superseded in the "
            f"flush, {replayed} replayed"
        )
    if result.version is None:  # every record went to the dead letters (or was filtered out)
        version = "no table yet (nothing landed in it)"
    else:
        version = f"version {result.version}"
    log.info(
        "committed %s: %s, %s, offsets %s, %.0f ms",
        uri,
        version,
        what,
        " ".join(f"{p}:{flush.firsts[p]}-{m.last_offset}" for p, m in sorted(flush.marks.items())),
        elapsed * 1000,
    )
