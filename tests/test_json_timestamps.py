"""ISO 8601 date-time strings become UTC timestamp columns, in a real Delta table, whatever
their first values look like: with or without fractions of a second, with `Z`, an offset or no
zone at all. (Arrow's reader infers only those without a fraction, so a column's type depended
on whether its first value had one: JavaScript's `toISOString` and Debezium write fractions.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from connectors.decoding.json_values import JsonDecoder
from connectors.delta.table_writer import DeltaTableWriter
from tests.jobs import raw_records

FIRST = {
    "2024-05-06T07:08:09Z": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    "2024-05-06T07:08:09.123Z": datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
    "2024-05-06T07:08:09.123456Z": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    "2024-05-06T09:08:09.5+02:00": datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC),
    "2024-05-06 07:08:09.25": datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC),
}


@pytest.mark.parametrize("first", FIRST)
def test_date_times_land_as_utc_timestamps(first, tmp_path):
    decoder = JsonDecoder(max_record_bytes=1 << 20)
    writer = DeltaTableWriter(str(tmp_path), "t", schema=None)
    later = "2024-05-07T00:00:00.001Z"
    for offset, text in enumerate([first, later]):
        split = decoder.split(raw_records([json.dumps({"at": text}).encode()], offset))
        assert not any(table.num_rows for table in split.dead), text
        writer.write_exactly_once(split.rows)

    table = DeltaTable(str(tmp_path)).to_pyarrow_table().sort_by("offset")
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table["at"].to_pylist() == [FIRST[first], datetime(2024, 5, 7, 0, 0, 0, 1000, UTC)]


def test_strings_that_only_look_like_date_times_stay_strings(tmp_path):
    decoder = JsonDecoder(max_record_bytes=1 << 20)
    values = ["2024-05-06T07:08:09.123Z", "2024-05-06T07:08:09", "soon"]
    split = decoder.split(raw_records([json.dumps({"at": v}).encode() for v in values]))
    assert split.rows.schema.field("at").type == pa.string()
    assert split.rows["at"].to_pylist() == values
