"""The lab's results: one row per guarantee, as a terminal table and as JSON.

records/s is records landed (each once) over the run's wall time, from the first process's
start to the end of the final drain, restarts and replays included: what the job delivered
under the faults, bounded above by the produce rate. CPU per record is user + system time of
every process of the job (all incarnations, zombies and the drain) over records produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.ops.lab.latency import quantile
from connectors.ops.lab.runner import GuaranteeRun

PROMISES = {
    "exactly-once": "0 lost, 0 duplicated",
    "at-least-once": "0 lost",
    "at-most-once": "0 duplicated",
}

FIELDS = (
    "guarantee",
    "promise",
    "promise_kept",
    "produced",
    "rows",
    "unique",
    "lost",
    "duplicated",
    "unknown",
    "produce_errors",
    "records_per_s",
    "cpu_s",
    "cpu_us_per_record",
    "commits",
    "latency_ms_p50",
    "latency_ms_p99",
    "latency_ms_max",
    "wall_s",
    "restarts",
    "drain_exit",
    "processes",
    "faults",
    "notes",
)
"""Every guarantee's JSON object has exactly these keys."""


def promise_kept(guarantee: str, lost: int, duplicated: int, unknown: int) -> bool:
    if unknown:
        return False
    if guarantee == "exactly-once":
        return lost == 0 and duplicated == 0
    if guarantee == "at-least-once":
        return lost == 0
    return duplicated == 0


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def result(run: GuaranteeRun) -> dict[str, Any]:
    """One guarantee's JSON object (keys: FIELDS)."""
    c = run.counts
    ok = run.drain_exit == 0 and promise_kept(run.guarantee, c.lost, c.duplicated, c.unknown)
    out = {
        "guarantee": run.guarantee,
        "promise": PROMISES[run.guarantee],
        "promise_kept": ok,
        "produced": c.produced,
        "rows": c.rows,
        "unique": c.unique,
        "lost": c.lost,
        "duplicated": c.duplicated,
        "unknown": c.unknown,
        "produce_errors": run.produce_errors,
        "records_per_s": _round((c.unique - c.unknown) / run.wall_s if run.wall_s else None),
        "cpu_s": round(run.cpu_s, 3),
        "cpu_us_per_record": _round(run.cpu_s / c.produced * 1e6 if c.produced else None, 2),
        "commits": run.commits,
        "latency_ms_p50": _round(quantile(c.latencies_ms, 0.5)),
        "latency_ms_p99": _round(quantile(c.latencies_ms, 0.99)),
        "latency_ms_max": _round(quantile(c.latencies_ms, 1.0)),
        "wall_s": round(run.wall_s, 2),
        "restarts": run.restarts,
        "drain_exit": run.drain_exit,
        "processes": run.processes,
        "faults": run.faults,
        "notes": run.notes,
    }
    assert tuple(out) == FIELDS
    return out


@dataclass(frozen=True)
class Column:
    title: str
    key: str
    fmt: str = "{:,}"


COLUMNS = (
    Column("guarantee", "guarantee", "{}"),
    Column("produced", "produced"),
    Column("lost", "lost"),
    Column("duplicated", "duplicated"),
    Column("records/s", "records_per_s", "{:,.0f}"),
    Column("CPU µs/rec", "cpu_us_per_record", "{:,.2f}"),
    Column("commits", "commits"),
    Column("p50 ms", "latency_ms_p50", "{:,.0f}"),
    Column("p99 ms", "latency_ms_p99", "{:,.0f}"),
    Column("promise", "promise_kept", "{}"),
)


def _cell(column: Column, row: dict[str, Any]) -> str:
    value = row[column.key]
    if column.key == "promise_kept":
        return f"{'kept' if value else 'BROKEN'} ({row['promise']})"
    return "-" if value is None else column.fmt.format(value)


def table(rows: list[dict[str, Any]], *, markdown: bool = False) -> str:
    """The results as aligned text (or a Markdown table, for the README)."""
    cells = [[c.title for c in COLUMNS]] + [[_cell(c, r) for c in COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells[1:]])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = []
    for n, r in enumerate(cells):
        first = r[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(r[1:-1], widths[1:-1], strict=True)]
        lines.append("  ".join([first, *rest, r[-1]]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def title(settings: dict[str, Any]) -> str:
    """One line naming the settings and the seed (the table's heading and the plot's title)."""
    faults = ", ".join(settings["faults"])
    return (
        f"{settings['records']:,} records x {settings['size']} B, {settings['partitions']} "
        f"partitions, {settings['rate']:,}/s; {settings['kills']} "
        f"{'fault' if settings['kills'] == 1 else 'faults'} ({faults}), seed "
        f"{settings['seed']}; {settings['broker']}"
    )
