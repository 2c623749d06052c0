"""What the source does when the offset it needs is no longer in Kafka.

Every partition with a known position reads with `auto.offset.reset=error`, so librdkafka never
jumps silently; an out-of-range fetch reaches `PartitionGuard.out_of_range`, which compares the
offset needed with the partition's watermarks:

- needed below the log start: records were deleted before they landed (retention, DeleteRecords).
  `WAXLAKE_ON_DATA_LOSS=fail` stops before anything past the gap is written, unless all of it is
  recorded already (accepted by an earlier `continue`); `continue` records the gap
  (`connectors.delta.gaps`), counts it, warns, and reads on from the log start.
- needed above the log end: the log was truncated or the topic recreated, so offsets are reused
  and (topic, partition, offset) would name two records. No setting skips that: the job stops.

`check_fingerprint` catches reuse that watermarks cannot show (the log refilled past the table's
marker): the record at the marker must be the one that landed there, judged by its timestamp.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from deltalake.exceptions import CommitFailedError, DeltaError

from connectors.config import Guarantee, OnDataLoss, Settings
from connectors.delta.dead_letters import dead_letter_uri
from connectors.delta.gaps import Gap, GapLog, gap_uri
from connectors.delta.markers import highest_landed
from connectors.errors import (
    ConcurrentWriteError,
    DataLossError,
    OffsetsReusedError,
    TableWriteError,
    commit_failure,
)
from connectors.ops import metrics

log = logging.getLogger(__name__)

README_SECTION = "README 'When Kafka loses records'"


def _ms(stamp: int) -> str:
    return datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="milliseconds")


class PartitionGuard:
    """Decides, for one partition, what an out-of-range position means (see the module doc)."""

    def __init__(
        self, settings: Settings, topic: str, partition: int, tables: Sequence[str] = ()
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._partition = partition
        self._tables = list(tables) or [topic]
        self._gaps: GapLog | None = None
        self._where = f"topic {topic} partition {partition}"

    def out_of_range(self, needed: int, low: int, high: int, landed: int) -> int:
        """The offset to read on from after `needed` was out of range (`landed`: the table's
        marker, -1 for none); raises where it must stop."""
        if landed < 0 and self._settings.guarantee is not Guarantee.EXACTLY_ONCE:
            landed = self._landed_by_rows()
            needed = max(needed, landed + 1)
        if needed > high:
            raise self.reused(needed, high, landed)
        if needed >= low:
            return needed  # the log start moved past an offset we only re-read: nothing lost
        gap = Gap(
            self._topic,
            self._partition,
            needed,
            low - 1,
            f"deleted from Kafka before it landed: offset {needed} was needed, the log starts at "
            f"{low} (retention or DeleteRecords outran the job)",
        )
        where = f"{self._where}: offsets {gap.first}-{gap.last} ({gap.records} records)"
        unrecorded = self._gap_log().unrecorded(gap)
        if self._settings.on_data_loss is OnDataLoss.FAIL and unrecorded:
            new = ", ".join(f"{first}-{last}" for first, last in unrecorded)
            accepted = "" if unrecorded == [(gap.first, gap.last)] else f" (new: {new})"
            raise DataLossError(
                f"{where}{accepted} were deleted from Kafka before they landed (the log now "
                f"starts at {low}; retention or DeleteRecords outran the job); nothing past them "
                "was written. To land what is still in Kafka and record the loss in "
                f"{gap_uri(self._settings.table_root, self._topic)}, restart with "
                "WAXLAKE_ON_DATA_LOSS=continue"
            )
        # `continue`, or `fail` with the whole gap recorded already (the loss was accepted).
        recorded = self._record(gap)
        metrics.RECORDS_LOST.labels(self._topic, str(self._partition)).inc(recorded)
        log.warning(
            "%s were deleted from Kafka before they landed (the log starts at %d); %s, reading on "
            "from offset %d",
            where,
            low,
            f"WAXLAKE_ON_DATA_LOSS=continue: recorded in {self._gap_log().uri}"
            if recorded
            else f"already recorded in {self._gap_log().uri}",
            low,
        )
        return low

    def reused(self, needed: int, end: int, landed: int) -> OffsetsReusedError:
        """The error for a position beyond the log's end: offsets before it will be reused."""
        so_far = (
            f"the table's marker was {landed} when the job started"
            if landed >= 0
            else "nothing of it had landed when the job started"
        )
        return OffsetsReusedError(
            f"{self._where}: the job's next offset is {needed} ({so_far}) but the broker's "
            f"log ends at offset {end}: the log was truncated or the topic was "
            "recreated, so offsets are being reused and (topic, partition, offset) would no "
            "longer name one record; WAXLAKE_ON_DATA_LOSS cannot skip this. Land into a new "
            f"WAXLAKE_TABLE_ROOT, or see {README_SECTION} for `waxlake move-marker`"
        )

    def check_fingerprint(self, offset: int, landed_ms: int, kafka_ms: int, end: int) -> None:
        """The record at the table's marker must be the record that landed there (`end`: the
        broker's log end, for the message)."""
        if landed_ms < 0 or kafka_ms < 0 or landed_ms == kafka_ms:
            return
        ends = f" (the broker's log ends at offset {end})" if end >= 0 else ""
        raise OffsetsReusedError(
            f"{self._where}: the record at offset {offset}, the last one landed (the table's "
            f"marker), had timestamp {_ms(landed_ms)} when it landed but the broker's record at "
            f"that offset has {_ms(kafka_ms)}{ends}: the log "
            "was truncated and refilled or the topic was recreated, so "
            "offsets are being reused; WAXLAKE_ON_DATA_LOSS cannot skip this. Land into a new "
            f"WAXLAKE_TABLE_ROOT, or see {README_SECTION} for `waxlake move-marker`"
        )

    def _record(self, gap: Gap) -> int:
        """Record the gap; a write that fails for good ends the job with the usual one line."""
        gaps = self._gap_log()
        try:
            return gaps.record(gap, self._settings.guarantee.value)
        except CommitFailedError as exc:
            cause = ConcurrentWriteError(f"gave up after repeated commit conflicts: {exc}")
            raise TableWriteError(commit_failure(self._topic, gaps.uri, cause)) from exc
        except (DeltaError, OSError) as exc:
            raise TableWriteError(commit_failure(self._topic, gaps.uri, exc)) from exc

    def _landed_by_rows(self) -> int:
        """Without exactly-once the tables hold no markers, and the group offset may trail the
        rows (at-least-once's crash window): the highest offset landed in every table of the
        topic (rows or dead letters), -1 where one has none. A scan, so only when needed."""
        settings, partition = self._settings, self._partition

        def highest(uri: str) -> int:
            return highest_landed(uri, settings.storage_options, [partition]).get(partition, -1)

        dead = highest(dead_letter_uri(settings.table_root, self._topic))
        return min(max(highest(settings.table_uri(name)), dead) for name in self._tables)

    def _gap_log(self) -> GapLog:
        if self._gaps is None:
            settings = self._settings
            self._gaps = GapLog(settings.table_root, self._topic, settings.storage_options)
        return self._gaps
