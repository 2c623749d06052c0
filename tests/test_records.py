"""One poll's messages become one Arrow batch (connectors/kafka/records.py), the same whichever
way a column is built: nulls, empty values, records without a timestamp, headers and values on
both sides of the small/large threshold all keep their bytes and their row."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Message

from connectors.kafka.records import SCHEMA, binary_array, messages_to_batch

NO_TIMESTAMP = (0, -1)  # what librdkafka reports for a record without one
CREATED = 1


def message(offset: int, key: bytes | None, value: bytes | None, **fields) -> Message:
    stamp = fields.pop("timestamp", (CREATED, 1_700_000_000_000 + offset))
    return Message(
        topic="t", partition=3, offset=offset, key=key, value=value, timestamp=stamp, **fields
    )


@pytest.mark.parametrize("size", [0, 1, 200, 399, 401, 1024, 70_000])
def test_values_keep_their_bytes_and_order_at_every_size(size):
    values = [os.urandom(size) for _ in range(50)]
    batch = messages_to_batch("t", 3, [message(i, b"%d" % i, v) for i, v in enumerate(values)])
    assert batch.schema == SCHEMA
    assert batch.column("value").to_pylist() == values
    assert batch.column("key").to_pylist() == [b"%d" % i for i in range(50)]
    assert batch.column("offset").to_pylist() == list(range(50))
    assert set(batch.column("partition").to_pylist()) == {3}
    assert set(batch.column("topic").to_pylist()) == {"t"}


@pytest.mark.parametrize("size", [10, 5000])
def test_null_keys_and_tombstones_stay_null_where_they_were(size):
    keys = [None if i % 3 == 0 else b"k%d" % i for i in range(30)]
    values = [None if i % 4 == 1 else bytes([i]) * size for i in range(30)]
    batch = messages_to_batch(
        "t", 3, [message(i, k, v) for i, (k, v) in enumerate(zip(keys, values, strict=True))]
    )
    assert batch.column("key").to_pylist() == keys
    assert batch.column("value").to_pylist() == values


def test_a_null_after_large_values_is_kept():
    values: list[bytes | None] = [b"x" * 5000] * 20 + [None]
    assert binary_array(values).to_pylist() == values


def test_records_without_a_timestamp_get_a_null_one():
    stamps = [(CREATED, 1_700_000_000_123), NO_TIMESTAMP, (CREATED, 0)]
    batch = messages_to_batch(
        "t", 3, [message(i, None, b"v", timestamp=s) for i, s in enumerate(stamps)]
    )
    seen = [
        None if t is None else int(t.timestamp() * 1000)
        for t in batch.column("timestamp").to_pylist()
    ]
    assert seen == [1_700_000_000_123, None, 0]
    assert str(batch.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"


def test_headers_are_kept_and_records_without_any_get_an_empty_list():
    headers = [None, [("trace", b"abc"), ("empty", None)], None]
    batch = messages_to_batch(
        "t", 3, [message(i, None, b"v", headers=h) for i, h in enumerate(headers)]
    )
    assert batch.column("headers").to_pylist() == [
        [],
        [{"key": "trace", "value": b"abc"}, {"key": "empty", "value": None}],
        [],
    ]
    assert batch.column("headers").null_count == 0
