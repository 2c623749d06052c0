"""A JSON flow with one user step chosen by WAXLAKE_TEST_STEP, for the step-rule and
step-failure tests:

- `drop_offset`: drops the `offset` column (breaks the rule);
- `invent`: adds 1000 to every offset (breaks the rule);
- `fail`: raises on a batch holding the value `{"n": 13}`;
- `fail_to_dead_letters`: the same, with `on_error="dead_letter"`;
- `drop_all`: filters every row out (the markers must still move);
- `twin_column`: adds a column `N` beside `n` (Delta compares names ignoring case);
- `retype`: turns `n` into strings in batches past offset 9 (one column, two types);
- `keep`: changes nothing (the fixed step);
- `split`: gives each batch as two, odd and even `n` (both for the topic's table);
- `twice`: gives each batch twice;
- `fail_stateful`: an `op.stateful_map` step (no `rows`) that raises like `fail`.
"""

from __future__ import annotations

import os

import bytewax.operators as op
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow

from connectors import (
    DeltaSink,
    KafkaBatch,
    KafkaSource,
    decode,
    destination,
    json_values,
    rows,
    start,
)


def drop_offset(table: pa.Table) -> pa.Table:
    return table.drop_columns(["offset"])


def invent(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("offset")
    return table.set_column(index, "offset", pc.add(table["offset"], 1000))


def unlucky(table: pa.Table) -> pa.Table:
    if pc.any(pc.equal(table["n"], 13)).as_py():
        raise ValueError("13 is unlucky")
    return table


def drop_all(table: pa.Table) -> pa.Table:
    return table.slice(0, 0)


def twin_column(table: pa.Table) -> pa.Table:
    return table.append_column("N", table["n"])


def retype(table: pa.Table) -> pa.Table:
    if pc.min(table["offset"]).as_py() < 10:
        return table
    index = table.schema.get_field_index("n")
    return table.set_column(index, "n", pc.cast(table["n"], pa.string()))


def halves(batch: KafkaBatch) -> list[KafkaBatch]:
    odd = pc.equal(pc.bit_wise_and(batch.rows["n"], 1), 1)
    return [
        batch.with_rows(batch.rows.filter(odd)),
        batch.with_rows(batch.rows.filter(pc.invert(odd))),
    ]


def count_unlucky(seen: int | None, batch: KafkaBatch) -> tuple[int, KafkaBatch]:
    unlucky(batch.rows)
    return (seen or 0) + 1, batch


SPLITTING = {"split": halves, "twice": lambda batch: [batch, batch]}

STEPS = {
    "drop_offset": rows(drop_offset),
    "invent": rows(invent),
    "fail": rows(unlucky),
    "fail_to_dead_letters": rows(unlucky, on_error="dead_letter"),
    "drop_all": rows(drop_all),
    "twin_column": rows(twin_column),
    "retype": rows(retype),
    "keep": rows(lambda table: table),
}

settings = start()
flow = Dataflow("misbehaving")
records = op.input("kafka", flow, KafkaSource(settings))
decoded = decode("decode", records, json_values(settings))
step = os.environ["WAXLAKE_TEST_STEP"]
if step == "fail_stateful":
    keyed = op.key_on("by_topic", decoded, lambda batch: batch.topic)
    counted = op.stateful_map("user_step", keyed, count_unlucky)
    stepped = op.map("unkey", counted, lambda item: item[1])
elif step in SPLITTING:
    stepped = op.flat_map("user_step", decoded, SPLITTING[step])
else:
    stepped = op.map("user_step", decoded, STEPS[step])
op.output("delta", op.key_on("by_table", stepped, destination), DeltaSink(settings))
