"""What `waxlake status` reports per table, and how it prints it for people."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PartitionStatus:
    partition: int
    committed_offset: int | None
    end_offset: int | None = None
    lag: int | None = None  # offsets after `committed_offset` still to land (recorded gaps not)
    committed_by: str | None = None  # "marker" (exactly-once) or "group <id>" (the others)


@dataclass
class GapStatus:
    """Offsets Kafka lost before they landed, as recorded under `_data_loss/`."""

    partition: int
    first_offset: int
    last_offset: int
    records: int
    detected_at: str
    reason: str


@dataclass
class TableStatus:
    table: str
    topic: str  # the Kafka topic it holds (a routed table is named otherwise)
    uri: str
    version: int
    rows: int | None
    last_commit: str | None
    dead_letters: int
    partitions: list[PartitionStatus] = field(default_factory=list)
    lost_records: int = 0
    gaps: list[GapStatus] = field(default_factory=list)


def _show(n: int | None) -> str:
    return "?" if n is None else str(n)


def print_human(root: str, tables: list[TableStatus]) -> None:
    print(f"root {root}")
    for t in tables:
        name = t.table if t.table == t.topic else f"{t.table} (topic {t.topic})"
        print(f"\n{name}  version {t.version}  rows {_show(t.rows)}  dead letters {t.dead_letters}")
        print(f"  last commit {t.last_commit or '?'}  {t.uri}")
        rows = [("partition", "committed", "end", "lag")]
        for p in t.partitions:
            committed = "-" if p.committed_offset is None else str(p.committed_offset)
            if p.committed_by and p.committed_by != "marker":
                committed += f" ({p.committed_by})"
            rows.append((str(p.partition), committed, _show(p.end_offset), _show(p.lag)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if t.gaps:
            count = len(t.gaps)
            print(f"  lost {t.lost_records} records in {count} gap{'s' if count > 1 else ''}:")
            for g in t.gaps:
                print(
                    f"    {g.partition}: {g.first_offset}-{g.last_offset} ({g.records} records) "
                    f"at {g.detected_at}: {g.reason}"
                )
