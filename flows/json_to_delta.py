"""Kafka topics of JSON values -> one Delta table per topic with typed columns.

The Kafka metadata columns, then one column per JSON field (schema from `WAXLAKE_SCHEMA`, the
existing table, or inferred; new fields are added). Records that cannot be rows go to
`<root>/_dead_letters/<topic>`.

Run: `python -m bytewax.run flows.json_to_delta:flow`.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaSource, decode, destination, json_values, start

settings = start()

flow = Dataflow("json_to_delta")
records = op.input("kafka", flow, KafkaSource(settings))
rows = decode("decode", records, json_values(settings))
op.output("delta", op.key_on("by_table", rows, destination), DeltaSink(settings))
