"""A routed JSON flow for the routing tests: `type` -> clicks, views, or other_events.

- `WAXLAKE_TEST_BUYS=1`: `buy` goes to a table of its own, buys (a table added later);
- `WAXLAKE_TEST_STEP=retype_views`: views' rows past offset 149 get `n` as a string, so the
  views commit fails while the other tables commit;
- `WAXLAKE_TEST_STEP=letters`: a step after the route dead-letters every batch that has rows,
  so every table's sink writes dead letters of the same partitions.
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
    route,
    rows,
    start,
)

TABLES = {"click": "clicks", "view": "views"}
if os.environ.get("WAXLAKE_TEST_BUYS"):
    TABLES["buy"] = "buys"
OTHERS = "other_events"
STEP = os.environ.get("WAXLAKE_TEST_STEP", "")


def retype_views(batch: KafkaBatch) -> KafkaBatch:
    if batch.destination != "views" or not batch.rows.num_rows or batch.last_offset < 150:
        return batch
    column = batch.rows.schema.get_field_index("n")
    return batch.with_rows(
        batch.rows.set_column(column, "n", pc.cast(batch.rows["n"], pa.string()))
    )


def refuse(table: pa.Table) -> pa.Table:
    raise ValueError("refused")


settings = start()
tables = {topic: [*TABLES.values(), OTHERS] for topic in settings.topics}

flow = Dataflow("routed")
records = op.input("kafka", flow, KafkaSource(settings, tables))
events = decode("decode", records, json_values(settings))
by_type = op.flat_map("by_type", events, route("type", TABLES, default=OTHERS))
if STEP == "retype_views":
    by_type = op.map("retype_views", by_type, retype_views)
if STEP == "letters":
    by_type = op.map("letters", by_type, rows(refuse, on_error="dead_letter"))
op.output("delta", op.key_on("by_table", by_type, destination), DeltaSink(settings, tables))
