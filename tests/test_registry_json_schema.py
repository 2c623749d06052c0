"""`flows.registry_to_delta` on JSON Schema values of the shapes README's type table maps beyond
objects of scalars: a value that is not an object, maps and dates (with a bad one), through a
restart; against a real broker and a real schema registry."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from tests.jobs import run_job
from tests.registry_support import (
    FLOW,
    dead_letters,
    json_schema,
    produce_values,
    registry_env,
    table_rows,
)

DRAFT_7 = "http://json-schema.org/draft-07/schema#"  # Apicurio tells JSON Schema by it
INTEGER = {"$schema": DRAFT_7, "type": "integer"}
DOC = {
    "$schema": DRAFT_7,
    "title": "Doc",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "day": {"type": "string", "format": "date"},
        "attrs": {"type": "object", "additionalProperties": {"type": "string"}},
        "visits": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "on": {"type": "string", "format": "date"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
        },
    },
    "required": ["id"],
}


def doc(i: int, day: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "day": day or f"2024-05-{i + 1:02d}",
        "attrs": {"colour": f"c{i}", "size": "L"} if i % 2 else {},
        "visits": [{"on": "2024-01-31", "counts": {"a": i}}],
    }


def test_json_schema_values_that_are_not_objects_maps_and_dates(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    ints, docs = topic_factory(1), topic_factory(1)
    produce_values(kafka_bootstrap, ints, json_schema(schema_registry, ints, INTEGER, [5, 6]))
    first = [doc(0), doc(1), doc(2, day="not a date"), doc(3)]
    produce_values(kafka_bootstrap, docs, json_schema(schema_registry, docs, DOC, first))
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [ints, docs], root, schema_registry)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["value_value"] for r in table_rows(root, ints)] == [5, 6]
    assert dead_letters(root, ints) == []
    dead = dead_letters(root, docs)
    assert [(d["offset"], d["error_class"]) for d in dead] == [(2, "InvalidPayload")]
    assert "not a date" in dead[0]["error_message"]
    schema = pa.schema(DeltaTable(str(root / docs)).schema().to_arrow())
    assert schema.field("day").type == pa.date32()
    assert pa.types.is_map(schema.field("attrs").type)

    produce_values(kafka_bootstrap, docs, json_schema(schema_registry, docs, DOC, [doc(4)]))
    assert run_job(env, None, flow=FLOW).returncode == 0  # a restart reads the map column back

    rows = table_rows(root, docs)
    assert [(r["id"], r["day"], r["attrs"], r["visits"]) for r in rows] == [
        (
            d["id"],
            dt.date.fromisoformat(d["day"]),
            list(d["attrs"].items()),
            [{"on": dt.date(2024, 1, 31), "counts": [("a", d["id"])]}],
        )
        for d in [doc(0), doc(1), doc(3), doc(4)]
    ]


TREE = {  # a node inside a node, through a definition and through the root itself
    "$schema": DRAFT_7,
    "title": "Tree",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "child": {"$ref": "#/definitions/node"},
    },
    "definitions": {
        "node": {
            "type": "object",
            "properties": {
                "v": {"type": "integer"},
                "kids": {"type": "array", "items": {"$ref": "#/definitions/node"}},
            },
        }
    },
}
LOOP = {**TREE, "title": "Loop", "properties": {"id": {"type": "integer"}, "again": {"$ref": "#"}}}


def test_a_recursive_json_schema_is_a_dead_letter_and_the_job_goes_on(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    trees, loops = topic_factory(1), topic_factory(1)
    produce_values(
        kafka_bootstrap,
        trees,
        json_schema(schema_registry, trees, TREE, [{"id": 1, "child": {"v": 2, "kids": []}}]),
    )
    produce_values(kafka_bootstrap, loops, json_schema(schema_registry, loops, LOOP, [{"id": 1}]))
    root = tmp_path / "lake"

    result = run_job(
        registry_env(kafka_bootstrap, [trees, loops], root, schema_registry), None, flow=FLOW
    )

    assert result.returncode == 0, result.stderr[-3000:]
    messages = [r["error_message"] for t in (trees, loops) for r in dead_letters(root, t)]
    assert len(messages) == 2, messages
    assert (
        "the value.child.kids[] holds a #/definitions/node inside a #/definitions/node"
        in messages[0]
    )
    assert "the value.again holds a # inside a #" in messages[1]
