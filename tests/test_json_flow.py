"""The decoded flow (`flows.json_to_delta`) and dead letters, against a real broker."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.jobs import job_env, landed_keys, read_table, run_job
from tests.producing import produce

JSON_FLOW = "flows.json_to_delta:flow"
Item = tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def run_json(env: dict[str, str], recovery: Path | None) -> subprocess.CompletedProcess[str]:
    result = run_job(env, recovery, flow=JSON_FLOW)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_json_values_become_typed_columns_and_bad_ones_dead_letters(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(2)
    good = [
        {
            "user": "ann",
            "amount": 10,
            "at": "2024-05-01T12:00:00Z",
            "tags": ["a"],
            "geo": {"lat": 1.5},
        },
        {
            "user": "bob",
            "amount": 20,
            "at": "2024-05-02T12:00:00Z",
            "tags": [],
            "geo": {"lat": 2.5},
        },
    ]
    items: list[Item] = [
        (topic, i % 2, f"k{i}".encode(), json.dumps(v).encode(), []) for i, v in enumerate(good)
    ]
    items += [
        (topic, 0, b"bad", b"{not json", []),
        (topic, 1, b"list", b"[1, 2]", []),
        (topic, 0, b"utf8", b'{"user": "\xff"}', [("h", b"1")]),
        (topic, 1, b"tomb", None, []),
        (topic, 0, b"big", json.dumps({"user": "x" * 500}).encode(), []),
    ]
    produced = produce(kafka_bootstrap, items)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, max_record_bytes=300)
    run_json(env, root / "_recovery")

    table = read_table(root / topic).sort("partition", "offset")
    assert (
        table.schema["amount"].is_integer()
        and str(table.schema["at"]) == "Datetime(time_unit='us', time_zone='UTC')"
    )
    rows = table.filter(~table["is_tombstone"]).sort("amount")
    assert rows["user"].to_list() == ["ann", "bob"]
    assert rows["at"].to_list()[0] == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert rows["geo"].struct.field("lat").to_list() == [1.5, 2.5]
    assert table.filter(table["is_tombstone"])["key"].to_list() == [b"tomb"]

    dead = read_table(root / "_dead_letters" / topic)
    reasons = dict(zip(dead["key"].to_list(), dead["error_class"].to_list(), strict=True))
    assert reasons == {
        b"bad": "InvalidJson",
        b"list": "InvalidJson",
        b"utf8": "InvalidJson",
        b"big": "RecordTooLarge",
    }
    assert dead.filter(pl.col("key") == pl.lit(b"utf8"))["headers"].to_list() == [
        [{"key": "h", "value": b"1"}]
    ]
    assert all(dead["error_message"].str.len_chars() > 0)
    assert landed_keys(root, topic) == Counter((r.partition, r.offset) for r in produced)

    # Later: a new field is added to the table; a value that does not fit its column is a
    # dead letter, not a crash and not a cast.
    produced += produce(
        kafka_bootstrap,
        [
            (topic, 0, b"new", json.dumps({"user": "cy", "amount": 30, "vip": True}).encode(), []),
            (topic, 1, b"conflict", json.dumps({"user": "dee", "amount": 2.5}).encode(), []),
            (topic, 1, b"conflict2", json.dumps({"user": 7, "amount": 1}).encode(), []),
        ],
    )
    run_json(env, root / "_recovery")
    table = read_table(root / topic)
    assert table.filter(pl.col("key") == pl.lit(b"new"))["vip"].to_list() == [True]
    assert table["vip"].null_count() == table.height - 1
    dead = read_table(root / "_dead_letters" / topic)
    conflicts = dead.filter(dead["error_class"] == "TypeConflict")
    assert sorted(conflicts["key"].to_list()) == [b"conflict", b"conflict2"]
    assert landed_keys(root, topic) == Counter((r.partition, r.offset) for r in produced)


def test_empty_objects_land_without_a_column_until_they_hold_fields(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Parquet cannot store a struct without fields: an object that is empty so far (nested, in
    a list, in a map-like object) has no column yet, and its record still lands."""
    topic = topic_factory(1)
    docs = [
        {"n": 0, "meta": {}},
        {"n": 1, "items": [{}], "deep": {"inner": {}, "k": 1}},
        {"n": 2, "meta": {"x": 1}},
    ]
    produce(kafka_bootstrap, [(topic, 0, None, json.dumps(d).encode(), ()) for d in docs])
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, max_poll_records=1)

    run_json(env, root / "_recovery")

    table = read_table(root / topic).sort("offset")
    assert table["n"].to_list() == [0, 1, 2]
    assert table["meta"].to_list() == [None, None, {"x": 1}]
    assert table["deep"].to_list() == [None, {"k": 1}, None]
    assert "items" not in table.columns
    assert not (root / "_dead_letters" / topic / "_delta_log").exists()


@pytest.mark.parametrize("depth", [32, 3000])
def test_values_nested_deeper_than_the_limit_are_dead_letters(
    depth, kafka_bootstrap, topic_factory, tmp_path
):
    """A value nested deeper than 32 levels is an InvalidJson dead letter that says so (3000
    levels stopped the job on every restart with a RecursionError, 64 with delta-rs refusing
    the schema); its neighbours land."""
    topic = topic_factory(1)
    deep = b'{"n": 1, "d": ' + b"[" * depth + b"]" * depth + b"}"
    deepest = b'{"n": 2, "d": ' + b"[" * 31 + b"1" + b"]" * 31 + b"}"  # 32 levels: lands
    values = [b'{"n": 0}', deep, deepest]
    produce(kafka_bootstrap, [(topic, 0, None, v, ()) for v in values])
    root = tmp_path / "lake"

    run_json(job_env(kafka_bootstrap, [topic], root), root / "_recovery")

    assert read_table(root / topic).sort("offset")["n"].to_list() == [0, 2]
    dead = read_table(root / "_dead_letters" / topic)
    assert dead.select("offset", "error_class").rows() == [(1, "InvalidJson")]
    assert "nested deeper than 32 levels" in dead["error_message"][0]


def test_given_schema_types_the_columns(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    schema = tmp_path / "schema.yaml"
    schema.write_text("user: string\namount: double\nitems: [int64]\n")
    produce(
        kafka_bootstrap,
        [
            (topic, 0, b"1", b'{"user": "ann", "amount": 1, "items": [1, 2]}', []),
            (topic, 0, b"2", b'{"user": "bob", "amount": "ten"}', []),
        ],
    )
    root = tmp_path / "lake"
    run_json(job_env(kafka_bootstrap, [topic], root, schema=str(schema)), None)
    table = read_table(root / topic)
    assert table["amount"].to_list() == [1.0]
    assert table["items"].to_list() == [[1, 2]]
    assert read_table(root / "_dead_letters" / topic)["key"].to_list() == [b"2"]


def test_a_date_field_takes_iso_dates_and_dead_letters_what_is_not_one(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    schema = tmp_path / "schema.yaml"
    schema.write_text("day: date\nn: int\n")
    values = [b'{"day": "2024-05-06", "n": 1}', b'{"day": "06/05/2024", "n": 2}', b'{"n": 3}']
    produce(kafka_bootstrap, [(topic, 0, str(i).encode(), v, []) for i, v in enumerate(values)])
    root = tmp_path / "lake"

    run_json(job_env(kafka_bootstrap, [topic], root, schema=str(schema)), None)

    table = read_table(root / topic)
    assert table.schema["day"] == pl.Date
    assert table.select("day", "n").rows() == [(date(2024, 5, 6), 1), (None, 3)]
    dead = read_table(root / "_dead_letters" / topic)
    assert dead.select("key", "error_class").rows() == [(b"1", "TypeConflict")]
    assert "06/05/2024" in dead["error_message"][0] and "day" in dead["error_message"][0]


@pytest.mark.parametrize(
    ("schema_text", "expected"),
    [
        ("amount: money\n", "WAXLAKE_SCHEMA: field 'amount' has unknown type 'money'"),
        ("- not a mapping\n", "must map field names to types"),
        ("meta: {}\n", "WAXLAKE_SCHEMA: field 'meta' is an object without fields"),
    ],
)
def test_bad_schema_file_stops_the_job(
    schema_text, expected, kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    schema = tmp_path / "schema.yaml"
    schema.write_text(schema_text)
    env = job_env(kafka_bootstrap, [topic], tmp_path / "lake", schema=str(schema))
    result = run_job(env, None, flow=JSON_FLOW)
    assert result.returncode == 2
    assert expected in result.stderr.splitlines()[-1]


def test_existing_tables_that_do_not_fit_stop_the_job(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, [(topic, 0, None, b'{"amount": 1}', [])])
    root = tmp_path / "lake"
    run_json(job_env(kafka_bootstrap, [topic], root), None)

    # The raw flow cannot write into a decoded table ...
    raw = run_job(job_env(kafka_bootstrap, [topic], root), None)
    assert raw.returncode == 2
    line = raw.stderr.splitlines()[-1]
    assert line.startswith("waxlake: error: WAXLAKE_TABLE_ROOT: the existing table of topic")
    assert "has no column 'value'" in line
    # ... and a given schema that contradicts the table is refused.
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"amount": "string"}))
    clash = run_job(
        job_env(kafka_bootstrap, [topic], root, schema=str(schema)), None, flow=JSON_FLOW
    )
    assert clash.returncode == 2
    assert "WAXLAKE_SCHEMA: field 'amount' is string but the existing table" in clash.stderr


def test_a_raw_table_is_refused_not_rewritten(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, [(topic, 0, None, b'{"amount": 1}', [])])
    root = tmp_path / "lake"
    assert run_job(job_env(kafka_bootstrap, [topic], root), None).returncode == 0  # the raw flow
    before = read_table(root / topic)

    result = run_job(job_env(kafka_bootstrap, [topic], root), None, flow=JSON_FLOW)

    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("waxlake: error: WAXLAKE_TABLE_ROOT: the existing table of topic")
    assert "flows.kafka_to_delta" in line and "point WAXLAKE_TABLE_ROOT elsewhere" in line
    assert read_table(root / topic).equals(before)


header = st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=16)))
record = st.tuples(
    st.integers(0, 1),
    st.one_of(st.none(), st.binary(max_size=64)),
    st.one_of(st.none(), st.binary(max_size=200)),
    st.lists(header, max_size=3),
)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(record, min_size=1, max_size=60))
def test_arbitrary_bytes_land_exactly_once(
    records, kafka_bootstrap, topic_factory, tmp_path_factory
):
    """Keys, values and headers of any bytes: every offset lands once, in the table or (over
    the size limit) in the dead letters, in both flows."""
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, [(topic, p, k, v, h) for p, k, v, h in records])
    want = Counter((r.partition, r.offset) for r in produced)
    for flow in ("flows.kafka_to_delta:flow", JSON_FLOW):
        root = tmp_path_factory.mktemp("lake")
        result = run_job(
            job_env(kafka_bootstrap, [topic], root, max_record_bytes=150), None, flow=flow
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert landed_keys(root, topic) == want
        if flow == JSON_FLOW:
            continue
        # The raw table keeps every byte of the records under the limit.
        table = read_table(root / topic) if (root / topic).exists() else None
        by_key = {(r.partition, r.offset): r for r in produced}
        for p, o, k, v in (
            [] if table is None else table.select("partition", "offset", "key", "value").iter_rows()
        ):
            assert (by_key[(p, o)].key, by_key[(p, o)].value) == (k, v)


def test_a_polars_schema_named_in_python_types_the_columns(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    produce(
        kafka_bootstrap,
        [
            (topic, 0, b"1", b'{"user": "ann", "amount": 1, "items": [1, 2]}', []),
            (topic, 0, b"2", b'{"user": "bob", "amount": "ten"}', []),
        ],
    )
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, schema="tests.test_schema_spec:ORDER")
    run_json(env, None)
    run_json(env, None)  # a restart reads the table's own types back

    table = read_table(root / topic)
    assert table["user"].to_list() == ["ann"] and table["amount"].to_list() == [1.0]
    assert table["items"].to_list() == [[1, 2]]
    assert read_table(root / "_dead_letters" / topic)["key"].to_list() == [b"2"]
