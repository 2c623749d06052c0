"""Kafka Connect's logical types in Debezium's JSON wrapper land as dates, timestamps and
decimals in the current-state table (`flows.upsert_to_delta`, `WAXLAKE_CDC_FORMAT=debezium`)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.jobs import job_env, run_job
from tests.producing import produce
from tests.test_upsert_flow import FLOW

ROW_FIELDS = [
    {"field": "id", "type": "int32", "optional": False},
    {"field": "born", "type": "int32", "optional": True, "name": "io.debezium.time.Date"},
    {"field": "seen", "type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp"},
    {
        "field": "at",
        "type": "int64",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Timestamp",
    },
    {"field": "nanos", "type": "int64", "optional": True, "name": "io.debezium.time.NanoTimestamp"},
    {"field": "opens", "type": "int64", "optional": True, "name": "io.debezium.time.MicroTime"},
    {"field": "payload", "type": "string", "optional": True},
    {
        "field": "price",
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
    },
]
SCHEMA = {
    "type": "struct",
    "fields": [
        {"field": "before", "type": "struct", "optional": True, "fields": ROW_FIELDS},
        {"field": "after", "type": "struct", "optional": True, "fields": ROW_FIELDS},
        {"field": "op", "type": "string", "optional": False},
    ],
}
SEEN_US = 1_700_000_000_123_456  # 2023-11-14 22:13:20.123456 UTC


def unscaled(value: int) -> str:
    """A Connect Decimal as the JSON converter writes it: base64 of the big-endian unscaled."""
    return base64.b64encode(value.to_bytes(8, "big", signed=True).lstrip(b"\0") or b"\0").decode()


def row(i: int, price: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "born": 19_000 + i,
        "seen": SEEN_US + i,
        "at": 1_700_000_000_000 + i,
        "nanos": (SEEN_US + i) * 1000 + 789,
        "opens": 32_400_000_000,
        "payload": "a column named like the wrapper's field",
        "price": price if price is not None else unscaled(-12_345 - i),
    }


def event(
    topic: str, i: int, after: dict[str, Any], wrap: bool = True, layout: str = "connect"
) -> tuple[str, int, bytes, bytes, tuple[()]]:
    """`layout`: `connect` as Kafka Connect's JSON converter writes the wrapper (compact, the
    schema first), `python` as json.dumps does, `payload-first` neither (the JSON path's)."""
    payload = {"before": None, "after": after, "op": "c"}
    value = {"schema": SCHEMA, "payload": payload} if wrap else payload
    if layout == "payload-first":
        value = {"payload": payload, "schema": SCHEMA}
    text = json.dumps(value, separators=(",", ":") if layout == "connect" else None)
    return (topic, 0, json.dumps({"id": i}).encode(), text.encode(), ())


def table_of(root: Path, topic: str) -> pa.Table:
    return DeltaTable(str(root / topic)).to_pyarrow_table().sort_by("id")


@pytest.mark.parametrize("layout", ["connect", "python", "payload-first"])
def test_logical_types_land_typed_and_stay_typed_after_a_restart(
    layout, kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")
    too_wide = unscaled(10**11)  # 12 digits: precision is 10
    changes = [row(1), row(2, "not base64!"), row(4, too_wide)]
    produce(kafka_bootstrap, [event(topic, r["id"], r, layout=layout) for r in changes])
    first = run_job(env, None, flow=FLOW)
    produce(kafka_bootstrap, [event(topic, 3, row(3), layout=layout)])
    again = run_job(env, None, flow=FLOW)

    assert first.returncode == 0, first.stderr[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    table = table_of(root, topic)
    types = {name: table.schema.field(name).type for name in ("born", "seen", "at", "nanos")}
    assert types == {
        "born": pa.date32(),
        "seen": pa.timestamp("us", tz="UTC"),
        "at": pa.timestamp("us", tz="UTC"),
        "nanos": pa.timestamp("us", tz="UTC"),
    }
    assert table.schema.field("price").type == pa.decimal128(10, 2)
    assert table.schema.field("opens").type == pa.int64()  # Delta has no time of day
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 3]
    utc = dt.UTC
    assert rows[0]["born"] == dt.date(2022, 1, 9)
    assert rows[0]["seen"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123457, utc)
    assert rows[0]["at"] == dt.datetime(2023, 11, 14, 22, 13, 20, 1000, utc)
    assert rows[0]["nanos"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123457, utc)
    assert rows[1]["price"] == Decimal("-123.48") and rows[1]["born"] == dt.date(2022, 1, 11)
    dead = DeltaTable(str(root / "_dead_letters" / topic)).to_pyarrow_table().to_pylist()
    dead.sort(key=lambda d: d["offset"])
    assert [(d["offset"], d["error_class"]) for d in dead] == [
        (1, "TypeConflict"),
        (2, "TypeConflict"),
    ]
    assert all("field price does not hold a Kafka Connect" in d["error_message"] for d in dead)


def test_a_table_that_holds_them_as_integers_keeps_them(kafka_bootstrap, topic_factory, tmp_path):
    """A table made from values without the wrapper (or before logical types were read) keeps
    its integer columns: changes with the wrapper still land, none is a dead letter."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")
    produce(kafka_bootstrap, [event(topic, 1, row(1), wrap=False)])
    assert run_job(env, None, flow=FLOW).returncode == 0
    produce(kafka_bootstrap, [event(topic, 2, row(2))])

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    table = table_of(root, topic)
    assert table.schema.field("born").type == pa.int64()
    assert table.schema.field("price").type == pa.string()
    assert table["born"].to_pylist() == [19_001, 19_002]
    assert not (root / "_dead_letters" / topic / "_delta_log").exists()


def test_one_poll_mixing_layouts_lands_every_change(kafka_bootstrap, topic_factory, tmp_path):
    """Each value is unwrapped by its own layout, whatever the others in its poll are."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")
    layouts = ["python", "connect", "payload-first", "connect", "python"]
    produce(
        kafka_bootstrap, [event(topic, i, row(i), layout=kind) for i, kind in enumerate(layouts)]
    )

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    table = table_of(root, topic)
    assert table["id"].to_pylist() == [0, 1, 2, 3, 4]
    assert table["born"].to_pylist() == [dt.date(2022, 1, 8) + dt.timedelta(i) for i in range(5)]
    assert table["price"].to_pylist() == [Decimal(-12_345 - i) / 100 for i in range(5)]
