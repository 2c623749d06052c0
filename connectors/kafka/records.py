"""The table schema and the conversion of one Kafka poll into one Arrow batch.

One batch per poll keeps the rest of the pipeline columnar: the only per-record Python is
reading the fields off confluent-kafka's message objects, which nothing can avoid.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import pyarrow as pa
from confluent_kafka import Message

HEADER_TYPE = pa.struct([("key", pa.string()), ("value", pa.binary())])

SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(HEADER_TYPE)),
    ]
)
"""One row per Kafka record; (topic, partition, offset) is unique in a table."""

PARTITION_COLUMNS = ["partition"]
"""Tables are partitioned by Kafka partition, so per-partition checks and MERGE scans prune."""

_NO_HEADERS: list[tuple[str, bytes | None]] = []
_EMPTY_HEADERS = pa.array([], HEADER_TYPE)
_SMALL_VALUE_BYTES = 400
"""Below this size `pa.array` builds a binary column faster than joining the bytes first."""
_SAMPLED = 16
"""How many values `binary_array` looks at to tell small values from large ones."""
_TIMESTAMP = SCHEMA.field("timestamp").type
_timestamp_ms = itemgetter(1)


def messages_to_batch(topic: str, partition: int, messages: Sequence[Message]) -> pa.RecordBatch:
    """Build one Arrow batch from data messages of one partition (no error messages)."""
    n = len(messages)
    offsets = list(map(Message.offset, messages))
    stamps = np.fromiter(map(_timestamp_ms, map(Message.timestamp, messages)), np.int64, n)
    keys = list(map(Message.key, messages))
    values = list(map(Message.value, messages))
    headers = list(map(Message.headers, messages))

    # librdkafka reports -1 when a record carries no timestamp.
    missing = stamps < 0
    timestamp = pa.array(stamps, _TIMESTAMP, mask=missing if missing.any() else None)
    return pa.RecordBatch.from_arrays(
        [
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(offsets, type=pa.int64()),
            timestamp,
            binary_array(keys),
            binary_array(values),
            _header_array(headers),
        ],
        schema=SCHEMA,
    )


def _header_array(headers: Sequence[object]) -> pa.Array:
    """Never null: Kafka has no null headers, only none. Most topics have none at all."""
    if any(headers):
        return pa.array([h or _NO_HEADERS for h in headers], type=pa.list_(HEADER_TYPE))
    return pa.ListArray.from_arrays(np.zeros(len(headers) + 1, np.int32), _EMPTY_HEADERS)


def binary_array(items: list[bytes | None]) -> pa.Array:
    """An Arrow binary array of `items`, built the cheaper of two ways for their size.

    `pa.array` grows its data buffer record by record (realloc and copy: a third of the CPU of
    a poll of 1 KB records); joining first copies each byte once, but costs more per item, so
    small values (keys, 200 B records) go through `pa.array`. A few items tell which is which:
    measuring all of them cost as much as building a small column. With nulls, `pa.array` it is.
    """
    n = len(items)
    if not n or _looks_small(items[:: max(1, n // _SAMPLED)]) or None in items:
        return pa.array(items, type=pa.binary())
    ends = np.cumsum(np.fromiter(map(len, items), np.int64, n))  # type: ignore[arg-type]
    if ends[-1] <= _SMALL_VALUE_BYTES * n or ends[-1] >= 2**31:
        return pa.array(items, type=pa.binary())
    offsets = np.zeros(n + 1, np.int32)
    offsets[1:] = ends
    data = pa.py_buffer(b"".join(items))  # type: ignore[arg-type]
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), data])


def _looks_small(sample: list[bytes | None]) -> bool:
    present = [len(item) for item in sample if item is not None]
    return not present or sum(present) <= _SMALL_VALUE_BYTES * len(present)
