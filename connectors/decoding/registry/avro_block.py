"""The block the container decoder (polars-avro) reads: the payloads of one writer schema, each
trimmed to its record, joined as the one block of an in-memory Avro object container file.

polars-avro (0.13) never returns from a block whose bytes do not match its record count: one
payload with bytes after its record, or one cut short, would hang the job. So the container path
first skips each payload's record with fastavro (a reader schema without fields reads nothing
but still walks every field) and keeps only the record's bytes: bytes after it are ignored, as
the direct path (pyruhvro) ignores them, and a payload cut short is undecodable. A zero byte is
read after each payload, so a record cut short reads past its end, where a short read would
otherwise pass unnoticed.
"""

from __future__ import annotations

import io
import json
from typing import Any, cast

import fastavro
import numpy as np
import pyarrow as pa

_PAD = b"\x00"
_SYNC = b"\x9a" * 16


class RecordBounds:
    """Trims the payloads of one writer schema (a record) to their records."""

    def __init__(self, writer: dict[str, Any]) -> None:
        self._writer = fastavro.parse_schema(writer)
        name = cast(dict[str, Any], self._writer)["name"]  # full name: resolution matches it
        self._skip = fastavro.parse_schema({"type": "record", "name": name, "fields": []})

    def trimmed(self, payloads: pa.BinaryArray) -> pa.BinaryArray:
        """`payloads` with only their records' bytes; ValueError naming the first payload whose
        record does not end within it."""
        values = payloads.to_pylist()
        if None in values:
            raise ValueError(f"payload {values.index(None)} is null")
        lengths = [len(v) for v in values]
        stream = io.BytesIO(_PAD.join(values) + _PAD)
        ends: list[int] = []
        start = 0
        for index, length in enumerate(lengths):
            stream.seek(start)
            try:
                fastavro.schemaless_reader(stream, self._writer, self._skip)
            except Exception as exc:  # fastavro raises what the bytes make it raise
                raise ValueError(f"payload {index}: {type(exc).__name__}: {exc}") from None
            end = stream.tell() - start
            if end > length:
                raise ValueError(f"payload {index} ends inside its record ({length} bytes)")
            ends.append(end)
            start += length + len(_PAD)
        if ends == lengths:
            return payloads
        return pa.array([v[:end] for v, end in zip(values, ends, strict=True)], pa.binary())


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_bytes(data: bytes) -> bytes:
    return _zigzag(len(data)) + data


def container(schema: Any, payloads: pa.BinaryArray) -> bytes:
    """An Avro object container file whose one block holds `payloads` (no codec)."""
    meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
    header = b"Obj\x01" + _zigzag(len(meta))
    header += b"".join(_avro_bytes(k.encode()) + _avro_bytes(v) for k, v in meta.items())
    header += b"\x00" + _SYNC
    offsets = np.frombuffer(payloads.buffers()[1], dtype=np.int32)
    first, last = offsets[payloads.offset], offsets[payloads.offset + len(payloads)]
    data = memoryview(payloads.buffers()[2])[first:last] if len(payloads) else memoryview(b"")
    block = _zigzag(len(payloads)) + _zigzag(len(data))
    return b"".join((header, block, data, _SYNC))  # the payloads copied once, not three times
