"""How value fields are named as columns (`connectors.decoding.naming`): every field its own
column, named back by the next run, in each kind of decoded table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deltalake import DeltaTable
from hypothesis import given
from hypothesis import strategies as st

from connectors.decoding.base import VALUE_NAMING
from connectors.decoding.naming import Naming
from connectors.decoding.registry.decoder import NAMING as REGISTRY_NAMING
from connectors.decoding.state_changes import OWN_COLUMNS, ROW_NAMING
from tests.jobs import job_env, read_table, run_job
from tests.producing import produce
from tests.registry_support import avro, registry_env
from tests.test_upsert_flow import FLOW as UPSERT_FLOW
from tests.test_upsert_flow import debezium_event, state

JSON_FLOW = "flows.json_to_delta:flow"

NAMINGS = {
    "json": VALUE_NAMING,
    "registry": REGISTRY_NAMING,
    "state": VALUE_NAMING.with_taken(OWN_COLUMNS),
    "debezium-rows": ROW_NAMING,
}
names = st.lists(
    st.sampled_from(
        ["value_", "Value_", "key_", "KEY_", "offset", "Offset", "value", "bucket", "x"]
    ),
    min_size=1,
    max_size=4,
).map("".join)


@pytest.mark.parametrize("naming", NAMINGS.values(), ids=NAMINGS.keys())
@given(fields=st.sets(names, max_size=12))
def test_every_field_gets_its_own_column_and_is_named_back(naming: Naming, fields: set[str]):
    """Own columns as Delta sees them: column names compare ignoring case."""
    distinct = list({f.lower(): f for f in fields}.values())  # fields differing by case only:
    columns = [naming.column(f) for f in distinct]  # dead letters (test below)
    assert len({c.lower() for c in columns}) == len(columns)
    assert [naming.field(c) for c in columns] == distinct
    assert not any(naming.clashes(c) for c in columns)
    assert not any(c.lower().startswith(naming.prefixes) for c in columns if naming.prefixes)


@pytest.mark.parametrize("naming", NAMINGS.values(), ids=NAMINGS.keys())
@given(fields=st.sets(names, max_size=12))
def test_every_decoded_key_field_gets_its_own_key_column(naming: Naming, fields: set[str]):
    """Registry keys are stored as `key_<field>`: never a column the table takes for itself (a
    state table's `key_bucket`), each named back."""
    keys = naming.within("key_")
    distinct = list({f.lower(): f for f in fields}.values())
    columns = ["key_" + keys.column(f) for f in distinct]
    assert len({c.lower() for c in columns}) == len(columns)
    assert [keys.field(c.removeprefix("key_")) for c in columns] == distinct
    assert not any(naming.clashes(c) for c in columns)


def test_fields_named_like_the_metadata_columns_keep_their_own_columns(
    kafka_bootstrap, topic_factory, tmp_path
):
    """A field `offset` lands in `value_offset`; a field that is itself called `value_offset`
    must not share that column (nor be read back as `offset` by the next run)."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    produce(kafka_bootstrap, [(topic, 0, b"1", b'{"value_offset": "a", "n": 1}', [])])
    assert run_job(env, None, flow=JSON_FLOW).returncode == 0
    produce(kafka_bootstrap, [(topic, 0, b"2", b'{"offset": 7, "value_offset": "b", "n": 2}', [])])
    assert (
        run_job(env, None, flow="flows.json_to_delta:flow").returncode == 0
    )  # a restart reads the table's columns back as fields

    table = read_table(root / topic).sort("n")
    assert table["value_value_offset"].to_list() == ["a", "b"]
    assert table["value_offset"].to_list() == [None, 7]
    assert not (root / "_dead_letters").exists()


def test_names_compare_ignoring_case_as_delta_compares_them(
    kafka_bootstrap, topic_factory, tmp_path
):
    """`Timestamp` or `Key` would be the metadata columns to Delta: stored as value_<name>. A
    field that differs from a column only by case cannot be a column: its records are dead
    letters (not a job that fails on every restart)."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    values = [{"Timestamp": "t0", "Key": 1, "OK": 1}, {"ok": 2}, {"OK": 3, "n": 1}]
    produce(
        kafka_bootstrap,
        [(topic, 0, b"%d" % i, json.dumps(v).encode(), []) for i, v in enumerate(values)],
    )
    assert (first := run_job(env, None, flow=JSON_FLOW)).returncode == 0, first.stderr[-3000:]
    produce(
        kafka_bootstrap,
        [(topic, 0, b"3", b'{"ok": 4, "OK": 4}', []), (topic, 0, b"4", b'{"OK": 5}', [])],
    )
    assert (second := run_job(env, None, flow=JSON_FLOW)).returncode == 0, second.stderr[-3000:]

    table = read_table(root / topic).sort("offset")
    assert table["OK"].to_list() == [1, 3, 5]
    assert table["value_Timestamp"].to_list() == ["t0", None, None]
    assert table["value_Key"].to_list() == [1, None, None]
    dead = read_table(root / "_dead_letters" / topic).sort("offset")
    assert dead["key"].to_list() == [b"1", b"3"]
    assert set(dead["error_class"]) == {"FieldNameConflict"}
    assert "field 'ok' differs from 'OK' beside it only by case" in dead["error_message"][0]


def test_nested_fields_that_differ_only_by_case_are_dead_letters(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root)
    first = [{"geo": {"lat": 1}, "items": [{"x": 1}]}]
    later = [{"geo": {"Lat": 2}}, {"items": [{"x": 3}, {"X": 4}]}, {"geo": {"lat": 5}}]
    for values in (first, later):
        sent = [(topic, 0, b"k", json.dumps(v).encode(), ()) for v in values]
        produce(kafka_bootstrap, sent)
        assert (run := run_job(env, None, flow=JSON_FLOW)).returncode == 0, run.stderr[-3000:]

    table = read_table(root / topic).sort("offset")
    assert table["offset"].to_list() == [0, 3]
    assert table["geo"].struct.field("lat").to_list() == [1, 5]
    dead = read_table(root / "_dead_letters" / topic).sort("offset")
    assert dead["offset"].to_list() == [1, 2]
    assert "field 'geo.Lat' differs from 'lat' beside it only by case" in dead["error_message"][0]
    assert "field 'items[].X' differs from 'x'" in dead["error_message"][1]


def test_debezium_rows_with_columns_named_like_the_envelope(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Rows with columns `op`, `after`, `source` (names of the envelope's fields), `offset` and
    `key_bucket` (the state table's own): row columns like any other, also after a restart."""
    topic = topic_factory(1)

    def event(op: str, row: dict[str, Any], lsn: int) -> tuple[str, int, bytes, bytes, tuple[()]]:
        before, after = (row, None) if op == "d" else (None, row)
        key = json.dumps({"id": row["id"]}).encode()
        return (topic, 0, key, debezium_event(op, before, after, lsn, wrap=False), ())

    def row(i: int, op: int) -> dict[str, Any]:
        return {
            "id": i,
            "op": op,
            "after": f"a{op}",
            "source": op * 10,
            "offset": -op,
            "key_bucket": op,
        }

    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")
    produce(kafka_bootstrap, [event("c", row(1, 1), 1), event("c", row(2, 2), 2)])
    assert (first := run_job(env, None, flow=UPSERT_FLOW)).returncode == 0, first.stderr[-3000:]
    produce(kafka_bootstrap, [event("u", row(1, 3), 3), event("d", row(2, 2), 4)])
    assert (second := run_job(env, None, flow=UPSERT_FLOW)).returncode == 0, second.stderr[-3000:]

    got = state(root, topic, key="id")
    assert list(got) == [1]
    columns = ("op", "after", "source", "value_offset", "value_key_bucket", "offset")
    assert {k: got[1][k] for k in columns} == {
        "op": 3,
        "after": "a3",
        "source": 30,
        "value_offset": -3,
        "value_key_bucket": 3,
        "offset": 2,
    }
    assert not (root / "_dead_letters" / topic / "_delta_log").exists()


ROW = {
    "type": "record",
    "name": "Value",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "op", "type": "int"},
        {"name": "after", "type": "string"},
    ],
}
ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "waxlake.test.dbz",
    "fields": [
        {"name": "before", "type": ["null", ROW], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "op", "type": "string"},
        {
            "name": "source",
            "type": {
                "type": "record",
                "name": "Source",
                "fields": [{"name": "ts_ms", "type": "long"}, {"name": "lsn", "type": "long"}],
            },
        },
    ],
}


def test_avro_debezium_rows_named_like_the_envelope_run_again(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    """Registry-framed Debezium envelopes: a second run starts from the envelope, not from the
    table's row columns (`op` an int there, a string in the envelope)."""
    topic = topic_factory(1)
    root = tmp_path / "lake"
    env = registry_env(
        kafka_bootstrap,
        [topic],
        root,
        schema_registry,
        value_format="registry",
        cdc_format="debezium",
        key_fields="id",
    )

    def send(op: str, row: dict[str, Any], lsn: int) -> None:
        before, after = (row, None) if op == "d" else (None, row)
        event = {"before": before, "after": after, "op": op, "source": {"ts_ms": lsn, "lsn": lsn}}
        value = avro(schema_registry, topic, ENVELOPE, [event])[0]
        produce(kafka_bootstrap, [(topic, 0, str(row["id"]).encode(), value, ())])

    send("c", {"id": 1, "op": 1, "after": "a1"}, 1)
    send("c", {"id": 2, "op": 2, "after": "a2"}, 2)
    assert (first := run_job(env, None, flow=UPSERT_FLOW)).returncode == 0, first.stderr[-3000:]
    send("u", {"id": 1, "op": 3, "after": "a3"}, 3)
    send("d", {"id": 2, "op": 2, "after": "a2"}, 4)
    assert (second := run_job(env, None, flow=UPSERT_FLOW)).returncode == 0, second.stderr[-3000:]

    rows = DeltaTable(str(root / topic)).to_pyarrow_table().to_pylist()
    assert [(r["id"], r["op"], r["after"], r["cdc_lsn"]) for r in rows] == [(1, 3, "a3", "3")]
    assert not (root / "_dead_letters" / topic / "_delta_log").exists()
