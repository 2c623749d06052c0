"""`flows.upsert_to_delta`: changes that name no row become dead letters, and flushes left with
no change to apply still move their markers (so a rerun reads nothing again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltalake import DeltaTable

from tests.jobs import job_env, run_job
from tests.producing import produce
from tests.registry_support import dead_letters
from tests.test_upsert_flow import FLOW, debezium_event, state


def run_twice(env: dict[str, str], root: Path, topic: str) -> None:
    """Run the job, then again: the second run must find nothing to read (markers moved)."""
    result = run_job(env, None, flow=FLOW)
    assert result.returncode == 0, result.stderr[-3000:]
    version = DeltaTable(str(root / topic)).version()
    again = run_job(env, None, flow=FLOW)
    assert again.returncode == 0, again.stderr[-3000:]
    assert DeltaTable(str(root / topic)).version() == version


def reasons(root: Path, topic: str) -> dict[int, tuple[str, str]]:
    return {r["offset"]: (r["error_class"], r["error_message"]) for r in dead_letters(root, topic)}


def test_a_null_kafka_key_is_a_dead_letter(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    values = [(b"k1", {"n": 1}), (None, {"n": 2}), (b"k2", {"n": 3})]
    produce(kafka_bootstrap, [(topic, 0, k, json.dumps(v).encode(), ()) for k, v in values])
    root = tmp_path / "lake"

    run_twice(job_env(kafka_bootstrap, [topic], root), root, topic)

    assert {k: r["n"] for k, r in state(root, topic).items()} == {b"k1": 1, b"k2": 3}
    dead = reasons(root, topic)
    assert list(dead) == [1]
    assert dead[1][0] == "MissingKey" and "Kafka key" in dead[1][1]


def test_a_value_without_its_key_field_is_a_dead_letter(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    values: list[dict[str, Any]] = [{"id": 1, "v": "a"}, {"v": "no id"}, {"id": 2, "v": "b"}]
    produce(kafka_bootstrap, [(topic, 0, None, json.dumps(v).encode(), ()) for v in values])
    root = tmp_path / "lake"

    run_twice(job_env(kafka_bootstrap, [topic], root, key_fields="id"), root, topic)

    assert {k: r["v"] for k, r in state(root, topic, key="id").items()} == {1: "a", 2: "b"}
    dead = reasons(root, topic)
    assert list(dead) == [1]
    assert dead[1][0] == "MissingKey" and "id (WAXLAKE_KEY_FIELDS)" in dead[1][1]


def between_two_creates(
    bootstrap: str, topic: str, root: Path, middle: list[dict[str, Any]]
) -> dict[int, tuple[str, str]]:
    """Create rows 1 and 2 around the `middle` events (offsets 1..), run twice: both rows are
    there; the dead letters' reasons by offset."""
    values = [
        debezium_event("c", None, {"id": 1, "name": "one"}, 1, wrap=False),
        *[json.dumps(event).encode() for event in middle],
        debezium_event("c", None, {"id": 2, "name": "two"}, 9, wrap=False),
    ]
    produce(bootstrap, [(topic, 0, None, v, ()) for v in values])
    run_twice(
        job_env(bootstrap, [topic], root, cdc_format="debezium", key_fields="id"), root, topic
    )
    assert {k: r["name"] for k, r in state(root, topic, key="id").items()} == {1: "one", 2: "two"}
    return reasons(root, topic)


def test_events_that_are_not_debezium_are_dead_letters(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    middle: list[dict[str, Any]] = [{"op": "x", "after": {"id": 9}}, {"hello": 1}]

    dead = between_two_creates(kafka_bootstrap, topic, tmp_path / "lake", middle)

    assert {o: c for o, (c, _) in dead.items()} == {1: "NotDebezium", 2: "NotDebezium"}
    assert "op is not one of c, r, u, d" in dead[1][1]


def test_truncates_are_dead_letters_and_messages_are_passed_over(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Debezium's PostgreSQL connector also emits `t` (a table truncated) and `m` (a logical
    decoding message): the first must reach the user, not be called 'not Debezium'; the second
    changes no row, and its offset counts as handled."""
    topic = topic_factory(1)
    message = {"op": "m", "ts_ms": 2, "message": {"prefix": "p", "content": "aGk="}}
    truncate = {"op": "t", "ts_ms": 1, "source": {"connector": "postgresql", "lsn": 3}}

    dead = between_two_creates(kafka_bootstrap, topic, tmp_path / "lake", [message, truncate])

    assert list(dead) == [2] and dead[2][0] == "NotApplied"
    assert "a truncate (op t) is not applied to the state table" in dead[2][1]


def test_a_batch_of_events_without_op_is_all_dead_letters(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(
        kafka_bootstrap, [(topic, 0, b"k", json.dumps({"hello": i}).encode(), ()) for i in (1, 2)]
    )
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium")

    run_twice(env, root, topic)

    assert state(root, topic) == {}
    dead = reasons(root, topic)
    assert dead == {0: ("NotDebezium", "no op field: not a Debezium change event")} | {
        1: ("NotDebezium", "no op field: not a Debezium change event")
    }


def test_a_flush_of_dead_letters_only_moves_the_markers(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(kafka_bootstrap, [(topic, 0, b"k", b"not json", ()), (topic, 0, b"k", b"{", ())])
    root = tmp_path / "lake"

    run_twice(job_env(kafka_bootstrap, [topic], root), root, topic)

    assert state(root, topic) == {}
    assert {o: c for o, (c, _) in reasons(root, topic).items()} == {
        0: "InvalidJson",
        1: "InvalidJson",
    }


def test_a_flush_of_only_a_debezium_tombstone_moves_the_markers(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(1)
    key = json.dumps({"id": 1}).encode()
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")
    produce(
        kafka_bootstrap,
        [
            (topic, 0, key, debezium_event("c", None, {"id": 1, "name": "one"}, 1, False), ()),
            (topic, 0, key, debezium_event("d", {"id": 1, "name": "one"}, None, 2, False), ()),
        ],
    )
    assert run_job(env, None, flow=FLOW).returncode == 0
    produce(kafka_bootstrap, [(topic, 0, key, None, ())])  # Debezium's tombstone, alone

    run_twice(env, root, topic)

    assert state(root, topic, key="id") == {}
    assert dead_letters(root, topic) == []


def test_a_tombstone_deletes_by_the_key_fields_in_its_json_kafka_key(
    kafka_bootstrap, topic_factory, tmp_path
):
    """With WAXLAKE_KEY_FIELDS a tombstone has no fields: they come from its Kafka key when that
    is a JSON object holding them (plain, or Kafka Connect's schema/payload wrapper)."""
    topic = topic_factory(1)
    wrapped = {"schema": {"type": "struct", "fields": []}, "payload": {"id": 2}}
    items: list[tuple[bytes | None, Any]] = [
        (json.dumps({"id": i}).encode(), {"id": i, "v": f"v{i}"}) for i in (1, 2, 3)
    ]
    items += [
        (json.dumps({"id": 1}).encode(), None),
        (json.dumps(wrapped).encode(), None),
        (b"plain-key", None),
        (json.dumps({"other": 3}).encode(), None),
        (None, None),
        (json.dumps({"id": {"x": 3}}).encode(), None),  # not an id: must not spoil the others
    ]
    produce(
        kafka_bootstrap,
        [(topic, 0, k, None if v is None else json.dumps(v).encode(), ()) for k, v in items],
    )
    root = tmp_path / "lake"

    run_twice(job_env(kafka_bootstrap, [topic], root, key_fields="id"), root, topic)

    assert {k: r["v"] for k, r in state(root, topic, key="id").items()} == {3: "v3"}
    dead = reasons(root, topic)
    assert {o: c for o, (c, _) in dead.items()} == {
        5: "MissingKey",
        6: "MissingKey",
        7: "MissingKey",
        8: "MissingKey",
    }
    assert all("tombstone" in message and "JSON object" in message for _, message in dead.values())
