"""Keyed Kafka topics (or Debezium change events) -> one current-state Delta table per topic.

One row per live key with the fields of its latest change; tombstones and Debezium deletes
remove the key. Exactly-once by MERGEs that carry the partitions' markers.

Run: `python -m bytewax.run flows.upsert_to_delta:flow` (settings in README, "Current-state
tables").
"""

from __future__ import annotations

from connectors.flow import build_flow
from connectors.startup import start
from connectors.state.setup import state_writers, upsert_decoders

settings, make_decoder = start(upsert_decoders)
flow = build_flow("upsert_to_delta", settings, make_decoder, state_writers(settings))
