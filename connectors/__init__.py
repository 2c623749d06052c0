"""waxlake: land Kafka topics in Delta Lake tables with Bytewax, exactly once.

The public API, for your own dataflows (README, "Write your own flow"):

    import bytewax.operators as op
    import pyarrow.compute as pc
    from bytewax.dataflow import Dataflow
    from connectors import DeltaSink, KafkaSource, decode, destination, json_values, rows, start

    settings = start()
    flow = Dataflow("orders")
    records = op.input("kafka", flow, KafkaSource(settings))
    orders = decode("decode", records, json_values(settings))
    big = op.map("big_orders", orders, rows(lambda t: t.filter(pc.field("amount") > 100)))
    op.output("delta", op.key_on("by_table", big, destination), DeltaSink(settings))

Names are imported on first use, so `python -m connectors.local_broker` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "start": "connectors.ops.startup",
    "Settings": "connectors.config",
    "load_settings": "connectors.config",
    "KafkaSource": "connectors.kafka.source",
    "DeltaSink": "connectors.delta.sink",
    "KafkaBatch": "connectors.batch",
    "destination": "connectors.batch",
    "check_rule": "connectors.batch",
    "decode": "connectors.decoding.step",
    "json_values": "connectors.decoding.json_values",
    "registry_values": "connectors.decoding.registry.rows",
    "changes": "connectors.decoding.state_startup",
    "state_tables": "connectors.delta.state_writer",
    "check_record_tables": "connectors.decoding.raw",
    "rows": "connectors.steps",
    "frames": "connectors.steps",
    "route": "connectors.steps",
    "StepError": "connectors.steps",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'connectors' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
