"""The sink's rule that an offset already in the dead letters never also lands in the table."""

from __future__ import annotations

from pathlib import Path

from connectors.delta.dead_letters import DEAD_LETTER_SCHEMA, dead_letters, without_dead_letters
from connectors.delta.table_writer import DeltaTableWriter
from tests.test_table_writer import TOPIC, records


def test_rows_already_dead_letters_stay_dead_letters(tmp_path: Path) -> None:
    """A crash between the dead-letter commit and the table commit, then a replay that decodes
    offset 5 differently: it must not land in the table as well."""
    dead = DeltaTableWriter(
        str(tmp_path / "_dead_letters" / TOPIC), TOPIC, schema=DEAD_LETTER_SCHEMA
    )
    earlier = records(0, 5, 5)
    dead.write_exactly_once(dead_letters(earlier, "TypeConflict", "was a conflict"))

    replayed = records(0, 0, 9)
    kept = without_dead_letters([TOPIC], dead.current(), replayed)
    assert kept["offset"].to_pylist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    # Other partitions and offsets above the dead-letter marker are untouched.
    other = records(1, 0, 9)
    assert without_dead_letters([TOPIC], dead.current(), other).num_rows == 10
    assert without_dead_letters([TOPIC], dead.current(), records(0, 6, 9)).num_rows == 4
