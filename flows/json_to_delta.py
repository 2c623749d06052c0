"""Kafka topics of JSON values -> one Delta table per topic with typed columns.

Same Kafka metadata columns and exactly-once machinery as `kafka_to_delta`; each value is decoded
into columns (schema from `WAXLAKE_SCHEMA`, the existing table, or inferred; new fields are added).
Records that cannot be rows go to `<root>/_dead_letters/<topic>`.

Run: `python -m bytewax.run flows.json_to_delta:flow`.
"""

from __future__ import annotations

from connectors.flow import build_flow, json_decoders
from connectors.startup import start

flow = build_flow("json_to_delta", *start(json_decoders))
