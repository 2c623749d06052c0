"""Schema ids in a record header instead of the value's prefix, as confluent-kafka's
deserializers read them: magic 0 + 4-byte id or magic 1 + GUID in `__value_schema_id`, the
payload unframed, and for Protobuf the message indexes in the header after the id."""

from __future__ import annotations

from tests.jobs import run_job
from tests.producing import produce
from tests.registry_support import (
    FLOW,
    avro,
    dead_letters,
    order_class,
    protobuf,
    registry_env,
    table_rows,
)
from tests.test_registry_flow import V1

HEADER = "__value_schema_id"
Item = tuple[str, int, bytes, bytes | None, tuple[tuple[str, bytes], ...]]


def test_schema_ids_in_headers_land_and_a_malformed_header_is_a_dead_letter(
    kafka_bootstrap, schema_registry, topic_factory, tmp_path
):
    readings, orders = topic_factory(1), topic_factory(1)
    framed = avro(schema_registry, readings, V1, [{"n": i} for i in range(4)])
    avro_items: list[Item] = [
        (readings, 0, b"k", None, ()),  # a tombstone: the framed values are the non-null ones
        (readings, 0, b"k", framed[0], ()),  # prefix framing, for comparison
        (readings, 0, b"k", framed[1][5:], ((HEADER, framed[1][:5]),)),  # the id in a header
        (readings, 0, b"k", framed[2][5:], ((HEADER, b"\x07" + framed[2][1:5]),)),  # bad magic
        (readings, 0, b"k", framed[3][5:], ((HEADER, b"\x00\x01"),)),  # too short
    ]
    cls = order_class()
    messages = [cls(id=i, item=f"item-{i}") for i in range(3)]
    proto = protobuf(schema_registry, orders, messages)
    assert proto[0][5:7] == b"\x02\x02"  # message indexes [1]: Order is the file's 2nd message
    proto_items: list[Item] = [
        (orders, 0, b"k", proto[0], ()),
        (orders, 0, b"k", proto[1][7:], ((HEADER, proto[1][:7]),)),  # indexes go in the header
        (orders, 0, b"k", proto[2][7:], ((HEADER, proto[2][:7]),)),
    ]
    produce(kafka_bootstrap, avro_items + proto_items)
    root = tmp_path / "lake"
    env = registry_env(kafka_bootstrap, [readings, orders], root, schema_registry)

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    got = [(r["offset"], r["n"]) for r in table_rows(root, readings)]
    assert got == [(0, None), (1, 0), (2, 1)]
    dead = {
        d["offset"]: (d["error_class"], d["error_message"]) for d in dead_letters(root, readings)
    }
    assert {o: c for o, (c, _) in dead.items()} == {3: "BadFraming", 4: "BadFraming"}
    assert f"unknown magic byte 7 in the {HEADER} header" in dead[3][1]
    assert f"{HEADER} header of 2 bytes is too short for its magic byte 0" in dead[4][1]
    assert dead_letters(root, orders) == []
    orders_got = [(r["offset"], r["id"], r["item"]) for r in table_rows(root, orders)]
    assert orders_got == [(i, i, f"item-{i}") for i in range(3)]
