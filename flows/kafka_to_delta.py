"""Kafka topics -> one Delta Lake table per topic, one row per record, keyed by
(topic, partition, offset): raw keys, values and headers.

Run: `python -m bytewax.run flows.kafka_to_delta:flow` (settings in README.md).
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaSource, check_record_tables, destination, start

settings = start()
check_record_tables(settings)

flow = Dataflow("kafka_to_delta")
records = op.input("kafka", flow, KafkaSource(settings))
op.output("delta", op.key_on("by_table", records, destination), DeltaSink(settings))
