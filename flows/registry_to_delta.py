"""Kafka topics of Avro, Protobuf or JSON Schema values (Confluent wire format, schemas in a
schema registry) -> one Delta table per topic with typed columns.

Each record's schema comes from `WAXLAKE_SCHEMA_REGISTRY_URL` by the id (or GUID) in its
framing; records that cannot be rows go to `<root>/_dead_letters/<topic>`.

Run: `python -m bytewax.run flows.registry_to_delta:flow`.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaSource, decode, destination, registry_values, start

settings = start()

flow = Dataflow("registry_to_delta")
records = op.input("kafka", flow, KafkaSource(settings))
rows = decode("decode", records, registry_values(settings))
op.output("delta", op.key_on("by_table", rows, destination), DeltaSink(settings))
