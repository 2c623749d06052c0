"""Keyed Kafka topics (or Debezium change events) -> one current-state Delta table per topic.

One row per live key with the fields of its latest change; tombstones and Debezium deletes
remove the key. Exactly-once by MERGEs that carry the partitions' markers.

Run: `python -m bytewax.run flows.upsert_to_delta:flow` (settings in README, "Current-state
tables").
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaSource, changes, decode, destination, start, state_tables

settings = start()

flow = Dataflow("upsert_to_delta")
records = op.input("kafka", flow, KafkaSource(settings))
keyed_changes = decode("decode", records, changes(settings))
sink = DeltaSink(settings, make_writer=state_tables(settings))
op.output("delta", op.key_on("by_table", keyed_changes, destination), sink)
