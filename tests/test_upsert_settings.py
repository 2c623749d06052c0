"""`flows.upsert_to_delta`: settings checked at start-up (key fields, key buckets, the registry)
and value fields named like the columns the state table adds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors.decoding.state_changes import BUCKET, DELETED, key_buckets
from connectors.delta.markers import Mark
from connectors.delta.state_writer import StateTableWriter
from connectors.kafka.topic_ids import broker_topic_ids
from tests.broker_ops import recreate_topic
from tests.jobs import job_env, run_job
from tests.producing import produce
from tests.registry_support import avro, registry_env
from tests.test_upsert_flow import FLOW, debezium_event, state

BUCKETS_PROPERTY = "waxlake.keyBuckets"  # the table property README documents


def error_line(result: Any) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    return str(result.stderr.strip().splitlines()[-1])


def produce_json(bootstrap: str, topic: str, items: list[tuple[bytes | None, Any]]) -> None:
    produce(bootstrap, [(topic, 0, k, json.dumps(v).encode(), ()) for k, v in items])


def test_a_kafka_metadata_column_as_key_field_is_refused(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    result = run_job(
        job_env(kafka_bootstrap, [topic], tmp_path, key_fields="id,offset"), None, flow=FLOW
    )
    line = error_line(result)
    assert line.startswith("waxlake: error: WAXLAKE_KEY_FIELDS=id,offset: offset is a column")
    assert "value_offset" in line


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (",", "WAXLAKE_KEY_FIELDS: an empty field name in ','"),
        ("id,,region", "WAXLAKE_KEY_FIELDS: an empty field name in 'id,,region'"),
        ("id,id", "WAXLAKE_KEY_FIELDS: id is named twice"),
    ],
)
def test_key_fields_with_empty_or_repeated_names_are_refused(
    fields, expected, kafka_bootstrap, topic_factory, tmp_path
):
    """`,` silently keyed by the Kafka key instead; `id,id` was taken as two key columns."""
    topic = topic_factory(1)
    result = run_job(
        job_env(kafka_bootstrap, [topic], tmp_path, key_fields=fields), None, flow=FLOW
    )
    assert expected in error_line(result)


def test_another_bucket_count_than_the_tables_is_refused(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce_json(kafka_bootstrap, topic, [(f"k{i}".encode(), {"n": i}) for i in range(20)])
    root = tmp_path / "lake"
    assert (
        run_job(job_env(kafka_bootstrap, [topic], root, key_buckets=4), None, flow=FLOW).returncode
        == 0
    )
    assert DeltaTable(str(root / topic)).metadata().configuration[BUCKETS_PROPERTY] == "4"

    line = error_line(
        run_job(job_env(kafka_bootstrap, [topic], root, key_buckets=8), None, flow=FLOW)
    )

    assert line.startswith("waxlake: error: WAXLAKE_KEY_BUCKETS=8: the current-state table")
    assert "was built with WAXLAKE_KEY_BUCKETS=4" in line and "Set WAXLAKE_KEY_BUCKETS=4" in line
    assert len(state(root, topic)) == 20


def test_a_table_from_before_the_property_is_checked_by_its_rows(
    kafka_bootstrap, topic_factory, tmp_path
):
    """No `waxlake.keyBuckets`: the stored rows' buckets tell the count they were made with."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    keys = pa.array([f"k{i}".encode() for i in range(50)], pa.binary())
    rows = pa.table(
        {
            "topic": [topic] * 50,
            "partition": pa.array([0] * 50, pa.int32()),
            "offset": pa.array(range(50), pa.int64()),
            "timestamp": pa.array(range(50), pa.timestamp("ms", tz="UTC")),
            "key": keys,
            DELETED: [False] * 50,
            "n": pa.array(range(50), pa.int64()),
        }
    )
    rows = rows.append_column(BUCKET, key_buckets(rows.select(["key"]), 16))
    StateTableWriter(str(root / topic), topic, ["key"]).write_exactly_once(rows, {0: Mark(49, 49)})
    produce_json(kafka_bootstrap, topic, [(f"k{i}".encode(), {"n": i}) for i in range(50)])
    produce_json(kafka_bootstrap, topic, [(b"k1", {"n": 100})])

    line = error_line(
        run_job(job_env(kafka_bootstrap, [topic], root, key_buckets=8), None, flow=FLOW)
    )
    assert "WAXLAKE_KEY_BUCKETS=16" in line

    again = run_job(job_env(kafka_bootstrap, [topic], root, key_buckets=16), None, flow=FLOW)
    assert again.returncode == 0, again.stderr[-3000:]
    assert DeltaTable(str(root / topic)).metadata().configuration[BUCKETS_PROPERTY] == "16"
    got = state(root, topic)
    assert len(got) == 50 and got[b"k1"]["n"] == 100


def test_value_fields_named_like_state_columns_are_renamed(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    produce_json(kafka_bootstrap, topic, [(b"a", {"key_bucket": 99, "__deleted": True, "n": 1})])
    assert run_job(env, None, flow=FLOW).returncode == 0
    produce_json(kafka_bootstrap, topic, [(b"b", {"key_bucket": 7, "__deleted": False, "n": 2})])

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    got = {
        k: (r["value_key_bucket"], r["value___deleted"], r["n"])
        for k, r in state(root, topic).items()
    }
    assert got == {b"a": (99, True, 1), b"b": (7, False, 2)}


def test_debezium_row_fields_named_like_state_columns_are_renamed(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    row = {"id": 1, "key_bucket": 5, "offset": 6, "cdc_lsn": "mine"}
    produce(kafka_bootstrap, [(topic, 0, b"1", debezium_event("c", None, row, 3, False), ())])
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    got = state(root, topic, key="id")[1]
    assert (got["value_key_bucket"], got["value_offset"], got["value_cdc_lsn"]) == (5, 6, "mine")
    assert (got["offset"], got["cdc_lsn"]) == (0, "3")


def test_registry_values_without_a_url_name_this_flow(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    env = job_env(kafka_bootstrap, [topic], tmp_path, value_format="registry")
    line = error_line(run_job(env, None, flow=FLOW))
    assert "flows.upsert_to_delta needs the schema registry's URL" in line


ITEM = {
    "type": "record",
    "name": "Item",
    "namespace": "waxlake.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "v", "type": "string"},
        {"name": "key_bucket", "type": "int"},
    ],
}


def items_updated_across_a_restart(
    env: dict[str, str], send: Callable[[list[dict[str, Any]]], None], table: Path
) -> pa.Table:
    """Items 0-2 sent, a run, item 1 updated, a run again: the state table then."""
    send([{"id": i, "v": f"a{i}", "key_bucket": i} for i in range(3)])
    first = run_job(env, None, flow=FLOW)
    assert first.returncode == 0, first.stderr[-3000:]
    send([{"id": 1, "v": "b1", "key_bucket": 7}])
    second = run_job(env, None, flow=FLOW)
    assert second.returncode == 0, second.stderr[-3000:]
    return DeltaTable(str(table)).to_pyarrow_table()


@pytest.mark.parametrize("key_fields", ["", "id"], ids=["kafka-key", "key-fields"])
def test_a_registry_state_table_runs_again(
    key_fields, kafka_bootstrap, schema_registry, topic_factory, tmp_path: Path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    extra = {"key_fields": key_fields} if key_fields else {}
    env = registry_env(
        kafka_bootstrap, [topic], root, schema_registry, value_format="registry", **extra
    )

    def send(records: list[dict[str, Any]]) -> None:
        values = avro(schema_registry, topic, ITEM, records)
        keys = [str(r["id"]).encode() for r in records]
        produce(kafka_bootstrap, [(topic, 0, k, v, ()) for k, v in zip(keys, values, strict=True)])

    rows = items_updated_across_a_restart(env, send, root / topic).to_pylist()
    got = {r["id"]: (r["v"], r["value_key_bucket"]) for r in rows}
    assert got == {0: ("a0", 0), 1: ("b1", 7), 2: ("a2", 2)}
    assert len(rows) == 3


def test_a_state_table_of_a_recreated_topic_is_refused(log_broker, topic_factory, tmp_path):
    """State tables carry the topic ID too: the new topic's changes at the old offsets would
    otherwise be dropped as replays (or merged as the old topic's)."""
    topic = topic_factory(1, bootstrap=log_broker)
    admin = AdminClient({"bootstrap.servers": log_broker})
    if broker_topic_ids(admin, [topic])[topic] is None:
        pytest.skip("the broker reports no topic IDs")
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root)
    produce_json(log_broker, topic, [(b"k%d" % i, {"n": i}) for i in range(20)])
    assert run_job(env, None, flow=FLOW).returncode == 0
    recreate_topic(log_broker, topic, 1)
    produce_json(log_broker, topic, [(b"k%d" % i, {"n": -i}) for i in range(30)])

    line = error_line(run_job(env, None, flow=FLOW))
    assert line.startswith("waxlake: error: ") and "was deleted and recreated" in line
    assert {r["n"] for r in state(root, topic).values()} == set(range(20))


KEY_RECORD = {  # a registry-framed key whose fields would be named like the table's own columns
    "type": "record",
    "name": "ItemKey",
    "namespace": "waxlake.test",
    "fields": [{"name": "id", "type": "long"}, {"name": "bucket", "type": "int"}],
}


@pytest.mark.parametrize("key_fields", ["", "key_id"], ids=["kafka-key", "decoded-key-field"])
def test_registry_key_fields_named_like_the_bucket_column_keep_their_own_column(
    key_fields, kafka_bootstrap, schema_registry, topic_factory, tmp_path: Path
):
    """Keyed by the Kafka key, or by a field of the decoded registry key (`key_<field>`)."""
    from confluent_kafka.serialization import MessageField

    topic = topic_factory(1)
    root = tmp_path / "lake"
    extra = {"key_fields": key_fields} if key_fields else {}
    env = registry_env(
        kafka_bootstrap,
        [topic],
        root,
        schema_registry,
        value_format="registry",
        registry_keys=1,
        **extra,
    )

    def send(records: list[dict[str, Any]]) -> None:
        values = avro(schema_registry, topic, ITEM, records)
        key_docs = [{"id": r["id"], "bucket": 100 + r["id"]} for r in records]
        keys = avro(schema_registry, topic, KEY_RECORD, key_docs, field=MessageField.KEY)
        produce(kafka_bootstrap, [(topic, 0, k, v, ()) for k, v in zip(keys, values, strict=True)])

    table = items_updated_across_a_restart(env, send, root / topic)
    got = {r["key_id"]: (r["v"], r["key_value_bucket"]) for r in table.to_pylist()}
    assert got == {0: ("a0", 100), 1: ("b1", 101), 2: ("a2", 102)}
    assert table.num_rows == 3
    buckets = key_buckets(table.select([key_fields or "key"]), 16).to_pylist()
    assert table[BUCKET].to_pylist() == buckets


def test_a_key_field_that_is_not_a_scalar_stops_with_one_line(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A MERGE cannot compare struct keys: every commit failed with delta-rs' 'Unable to
    convert expression to string', restart after restart."""
    topic = topic_factory(1)
    produce_json(kafka_bootstrap, topic, [(b"k", {"id": {"a": i}, "v": i}) for i in range(3)])
    env = job_env(kafka_bootstrap, [topic], tmp_path / "lake", key_fields="id")

    line = error_line(run_job(env, None, flow=FLOW))

    assert "WAXLAKE_KEY_FIELDS: field id is struct<a: int64>, which cannot key a row" in line


def test_a_key_field_no_value_has_stops_before_anything_lands(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A misspelt WAXLAKE_KEY_FIELDS made every change a dead letter, and the job went on."""
    topic = topic_factory(1)
    produce_json(kafka_bootstrap, topic, [(None, {"id": i, "r": "x"}) for i in range(6)])
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, key_fields="idd")

    line = error_line(run_job(env, root / "_recovery", flow=FLOW))

    assert line.startswith(f"waxlake: error: WAXLAKE_KEY_FIELDS=idd: no value of topic {topic}")
    assert "has field idd" in line and "id, r" in line
    assert not (root / "_dead_letters").exists() and not (root / topic).exists()
    fixed = run_job({**env, "WAXLAKE_KEY_FIELDS": "id"}, root / "_recovery", flow=FLOW)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert sorted(state(root, topic, key="id")) == list(range(6))


def test_registry_keys_need_registry_values(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    env = job_env(kafka_bootstrap, [topic], tmp_path, registry_keys=1, key_fields="key_id")
    line = error_line(run_job(env, None, flow=FLOW))
    assert "WAXLAKE_REGISTRY_KEYS" in line and "WAXLAKE_VALUE_FORMAT=registry" in line


def test_new_value_fields_of_a_state_table_come_in_their_order(tmp_path):
    """A MERGE that added columns ordered them at random, differently on every run."""
    uri = str(tmp_path / "state")

    def changes(first: int, fields: dict[str, pa.Array]) -> pa.Table:
        count = len(next(iter(fields.values())))
        keys = pa.array([b"k%d" % (first + i) for i in range(count)], pa.binary())
        rows = pa.table(
            {
                "topic": ["t"] * count,
                "partition": pa.array([0] * count, pa.int32()),
                "offset": pa.array(range(first, first + count), pa.int64()),
                "timestamp": pa.array(range(count), pa.timestamp("ms", tz="UTC")),
                "key": keys,
                DELETED: [False] * count,
                **fields,
            }
        )
        return rows.append_column(BUCKET, key_buckets(rows.select(["key"]), 16))

    writer = StateTableWriter(uri, "t", ["key"])
    writer.write_exactly_once(changes(0, {"a": pa.array([1, 2])}))
    later = {name: pa.array([1, 2]) for name in ("m", "b", "z", "c", "y")}
    writer.write_exactly_once(changes(2, later))

    names = pa.schema(DeltaTable(uri).schema().to_arrow()).names
    assert names[names.index("a") :] == ["a", BUCKET, "m", "b", "z", "c", "y"]
