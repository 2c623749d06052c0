"""Kafka topics of Avro, Protobuf or JSON Schema values (Confluent wire format, schemas in a
schema registry) -> one Delta table per topic with typed columns.

Same Kafka metadata columns, guarantees and dead letters as `json_to_delta`; each record's schema
comes from `WAXLAKE_SCHEMA_REGISTRY_URL` by the id (or GUID) in its framing.

Run: `python -m bytewax.run flows.registry_to_delta:flow`.
"""

from __future__ import annotations

from connectors.flow import build_flow
from connectors.registry.rows import registry_decoders
from connectors.startup import start

flow = build_flow("registry_to_delta", *start(registry_decoders))
