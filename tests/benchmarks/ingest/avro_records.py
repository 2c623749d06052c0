"""The Avro contender's records: Confluent-framed Avro values, produced with confluent-kafka's
own AvroSerializer against a local schema registry.

Ten fields, one of each kind: string, long, int, double, boolean, nullable string,
timestamp-millis, enum, array of strings, nested record. Serializing a million records with the
Python serializer would take longer than landing them, so a pool of `POOL` distinct records is
serialized once (the serializer registers the schema, subject named by topic) and cycled
through. Only the `id` field, the first in the schema, is re-encoded for every record (a zigzag
varint spliced in after the 5-byte framing), so each record has its own id and a payload that
decodes as the serializer wrote it. The string field `description` is padded so that a framed
value is about the size asked for (200 B: about 80 characters of it).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.benchmarks.ingest.produce import produce_values

POOL = 10_000
_HEADER = 5  # magic byte 0 + 4-byte schema id
_STATUSES = ["NEW", "PAID", "SHIPPED", "CANCELLED"]
SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "waxlake.bench",
    "fields": [
        {"name": "id", "type": "long"},  # first: re-encoded per record, see the module doc
        {"name": "description", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "paid", "type": "boolean"},
        {"name": "coupon", "type": ["null", "string"], "default": None},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": _STATUSES}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [
                    {"name": "street", "type": "string"},
                    {"name": "city", "type": "string"},
                    {"name": "zip", "type": "string"},
                ],
            },
        },
    ],
}


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_lowercase + " ", k=n))


def _record(rng: random.Random, i: int, description_len: int) -> dict[str, Any]:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "id": i,
        "description": _text(rng, max(0, description_len + rng.randint(-8, 8))),
        "quantity": rng.randint(1, 500),
        "price": round(rng.uniform(0.5, 5000.0), 2),
        "paid": rng.random() < 0.7,
        "coupon": None if rng.random() < 0.5 else f"SAVE{rng.randint(1, 99):02d}-{_text(rng, 5)}",
        "placed_at": epoch + timedelta(milliseconds=rng.randint(0, 10**10)),
        "status": rng.choice(_STATUSES),
        "tags": [_text(rng, rng.randint(4, 10)) for _ in range(rng.randint(1, 4))],
        "address": {
            "street": f"{rng.randint(1, 999)} {_text(rng, rng.randint(6, 16))} st",
            "city": _text(rng, rng.randint(4, 12)),
            "zip": f"{rng.randint(0, 99999):05d}",
        },
    }


def _zigzag_varint(n: int) -> bytes:
    """Avro's encoding of a long (n >= 0 here)."""
    n <<= 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _skip_varint(body: bytes) -> int:
    """Length of the varint that starts `body`."""
    i = 0
    while body[i] & 0x80:
        i += 1
    return i + 1


class AvroPool:
    """`POOL` records serialized once; `value(i)` is record i % POOL with id i, framed."""

    def __init__(self, registry_url: str, topic: str, size: int, seed: int = 7) -> None:
        client = SchemaRegistryClient({"url": registry_url, "timeout": 10})
        conf = {"subject.name.strategy.type": "TOPIC"}
        serializer = AvroSerializer(client, json.dumps(SCHEMA), conf=conf)
        ctx = SerializationContext(topic, MessageField.VALUE)

        def framed(records: list[dict[str, Any]]) -> list[bytes]:
            return [serializer(r, ctx) or b"" for r in records]

        # The mean size with an empty description (a 1-byte length); 64+ characters take 2.
        trial_rng = random.Random(seed + 1)
        trial = framed([_record(trial_rng, 100_000 + i, -8) for i in range(200)])
        room = size - sum(map(len, trial)) / len(trial)
        description_len = max(8, round(room) - (room >= 64))
        rng = random.Random(seed)
        payloads = framed([_record(rng, i, description_len) for i in range(POOL)])
        self.header = payloads[0][:_HEADER]
        self.rests = [p[_HEADER + _skip_varint(p[_HEADER:]) :] for p in payloads]
        self.mean_size = sum(map(len, payloads)) / len(payloads)

    def value(self, i: int) -> bytes:
        return self.header + _zigzag_varint(i) + self.rests[i % POOL]


def produce_avro(
    bootstrap: str, registry_url: str, topic: str, partitions: int, records: int, size: int
) -> tuple[float, float]:
    """Produce `records` Avro values of about `size` bytes to `topic`; (rec/s, mean bytes)."""
    pool = AvroPool(registry_url, topic, size)
    value: Callable[[int], bytes] = pool.value
    return produce_values(bootstrap, topic, partitions, records, value), pool.mean_size
