"""Kafka topics -> one Delta Lake table per topic, keyed by (topic, partition, offset).

Run: `python -m bytewax.run flows.kafka_to_delta:flow` (settings in README.md).
"""

from __future__ import annotations

from connectors.flow import build_flow, raw_decoders
from connectors.startup import start

flow = build_flow("kafka_to_delta", *start(raw_decoders))
