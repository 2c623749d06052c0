"""The Confluent wire format, read for a whole column of values at once.

- magic byte 0, then a 4-byte big-endian schema id, then the payload;
- magic byte 1, then a 16-byte schema GUID, then the payload;
- no prefix, and the id (magic 0 + 4 bytes) or GUID (magic 1 + 16 bytes) in the
  `__value_schema_id` (or `__key_schema_id`) header instead, as confluent-kafka's header
  serializer writes it and its deserializers read it. A malformed header is a framing problem,
  never a reason to read the value's first bytes as a prefix.

Protobuf payloads start with message indexes; `connectors.decoding.registry.protobuf` reads those.
With header framing they follow the id in the header, so they are put back before the payload.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import take

ID_PREFIX = 5
GUID_PREFIX = 17


@dataclass(frozen=True)
class Group:
    """The rows whose framing names one schema (`kind` "id" or "guid"), with one prefix length."""

    kind: str
    ref: int | str
    rows: np.ndarray
    prefix: int


@dataclass(frozen=True)
class Framing:
    """The values grouped by the schema they name; `problems` says why a row's framing is bad."""

    groups: list[Group]
    problems: dict[int, str]
    values: pa.BinaryArray
    """The values the groups' rows and prefixes refer to (header framing's message indexes
    put back in front of their payloads)."""


def _buffers(values: pa.BinaryArray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
        values.offset : values.offset + len(values) + 1
    ]
    data_buffer = values.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.zeros(0, np.uint8)
    )
    return offsets, data


def read_framing(
    values: pa.Array, headers: pa.Array, header_key: str, what: str = "value"
) -> Framing:
    """Group the (non-null) `values` (the record's `what`: value or key) by the schema their
    framing names."""
    values = values.cast(pa.binary())
    offsets, data = _buffers(values)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)

    def byte(i: int) -> np.ndarray:
        """Byte i of every value (0 past a short value's end; its length rules it out)."""
        at = starts + i
        inside = at < len(data)
        return np.where(inside, data[np.where(inside, at, 0)] if len(data) else 0, 0)

    magic = np.where(lengths > 0, byte(0), 255)
    ids = (
        (byte(1).astype(np.int64) << 24)
        | (byte(2).astype(np.int64) << 16)
        | (byte(3).astype(np.int64) << 8)
        | byte(4).astype(np.int64)
    )
    in_header, bad_headers = _header_frames(headers, header_key)
    header_rows = np.zeros(len(values), bool)
    header_rows[list(in_header) + list(bad_headers)] = True
    by_id = (magic == 0) & (lengths >= ID_PREFIX) & ~header_rows
    by_guid = (magic == 1) & (lengths >= GUID_PREFIX) & ~header_rows
    groups = [
        Group("id", int(schema_id), np.nonzero(by_id & (ids == schema_id))[0], ID_PREFIX)
        for schema_id in np.unique(ids[by_id])
    ]
    by_ref: dict[tuple[str, int | str, int], list[int]] = {}
    for found in np.nonzero(by_guid)[0]:
        row = int(found)
        start = int(starts[row])
        guid = str(uuid.UUID(bytes=data[start + 1 : start + GUID_PREFIX].tobytes()))
        by_ref.setdefault(("guid", guid, GUID_PREFIX), []).append(row)
    for row, (kind, ref, _) in in_header.items():
        by_ref.setdefault((kind, ref, 0), []).append(row)
    groups += [Group(k, r, np.array(rows), n) for (k, r, n), rows in by_ref.items()]
    # In the order their first records were read: on a new table the first schema by offset
    # makes the columns, not the lowest id (else where polls fall decides the dead letters).
    groups.sort(key=lambda group: int(group.rows[0]))
    problems = {
        int(row): _problem(int(magic[row]), int(lengths[row]), what)
        for row in np.nonzero(~(by_id | by_guid | header_rows))[0]
    }
    problems.update(bad_headers)
    return Framing(groups, problems, _with_header_tails(values, in_header))


def _problem(magic: int, length: int, what: str = "value") -> str:
    if length == 0:
        return f"empty {what}: no Confluent wire-format prefix"
    if magic in (0, 1):
        return f"{what} of {length} bytes is too short for its magic byte {magic}"
    return (
        f"unknown magic byte {magic} in the {what}: not the Confluent wire format (magic 0 + "
        "4-byte schema id, or magic 1 + 16-byte schema GUID)"
    )


def _header_frames(
    headers: pa.Array, header_key: str
) -> tuple[dict[int, tuple[str, int | str, bytes]], dict[int, str]]:
    """Rows whose schema travels in a header (rare: checked columnar first): per row its kind,
    id or GUID and what follows them (Protobuf's message indexes); and rows whose header is bad."""
    keys = pc.list_flatten(headers).field("key") if len(headers) else pa.array([], pa.string())
    if not len(keys) or not pc.any(pc.equal(keys, header_key)).as_py():
        return {}, {}
    found: dict[int, tuple[str, int | str, bytes]] = {}
    bad: dict[int, str] = {}
    for i, row in enumerate(headers.to_pylist()):
        value = next((h["value"] for h in row or [] if h["key"] == header_key), None)
        if value is None:
            continue
        magic = value[0] if value else 255
        if magic == 0 and len(value) >= ID_PREFIX:
            found[i] = ("id", int.from_bytes(value[1:ID_PREFIX], "big"), value[ID_PREFIX:])
        elif magic == 1 and len(value) >= GUID_PREFIX:
            found[i] = ("guid", str(uuid.UUID(bytes=value[1:GUID_PREFIX])), value[GUID_PREFIX:])
        else:
            bad[i] = _problem(magic, len(value), f"{header_key} header")
    return found, bad


def _with_header_tails(
    values: pa.BinaryArray, in_header: dict[int, tuple[str, int | str, bytes]]
) -> pa.BinaryArray:
    if not any(tail for _, _, tail in in_header.values()):
        return values
    rows = values.to_pylist()
    for row, (_, _, tail) in in_header.items():
        rows[row] = tail + rows[row]
    return pa.array(rows, pa.binary())


def payloads(values: pa.Array, rows: np.ndarray, prefix: int) -> pa.BinaryArray:
    """The payloads of `rows` (all with the same prefix length), one binary array."""
    chosen = take(values, rows).cast(pa.binary())
    return pc.binary_slice(chosen, prefix, 2**31 - 1)  # no stop: pyarrow 26 mis-sizes it
