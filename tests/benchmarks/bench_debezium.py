"""Debezium decoding benchmark: CPU per change to turn wrapped JSON events into state changes.

    python tests/benchmarks/bench_debezium.py                 # 20,000 changes, each layout
    python tests/benchmarks/bench_debezium.py --changes 50000

Decodes one batch of Debezium create events, each in Kafka Connect's JSON wrapper (`schema`
and `payload`) with the row of `tests/test_debezium_types.py` (a date, three timestamps, a
decimal, a time of day, a string), through the current-state flow's decoder (`ChangeDecoder`
over `JsonDecoder`, key field `id`): the whole step a poll takes before its MERGE. Three
layouts (`tests.test_debezium_types.event`): `connect`, compact as Kafka Connect's JSON converter
writes it, `python`, as `json.dumps` writes it (both split at their separator), and
`payload-first` (the JSON path's). Reported: the best of five runs, process CPU microseconds per
change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from connectors.decoding.json_values import JsonDecoder  # noqa: E402
from connectors.decoding.state_changes import STATE_NAMING, ChangeDecoder  # noqa: E402
from tests.jobs import raw_records  # noqa: E402
from tests.test_debezium_types import event, row  # noqa: E402


def events(count: int, layout: str) -> list[bytes]:
    return [event("bench", i, row(i), layout=layout)[3] for i in range(count)]


def cpu_per_change(values: list[bytes], runs: int = 5) -> float:
    raw = raw_records(values)
    best = float("inf")
    for _ in range(runs):
        decoder = ChangeDecoder(JsonDecoder(1 << 24, None, STATE_NAMING), ["id"], "debezium", 16)
        started = time.process_time()
        split = decoder.split(raw)
        best = min(best, time.process_time() - started)
        assert split.rows.num_rows == len(values) and not split.dead
    return best / len(values) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000)
    args = parser.parse_args()
    for layout in ("connect", "python", "payload-first"):
        micros = cpu_per_change(events(args.changes, layout))
        print(f"{layout:13} {args.changes:,} changes: {micros:.2f} CPU µs per change")


if __name__ == "__main__":
    main()
