"""Kafka topics -> one Delta Lake table per topic, keyed by (topic, partition, offset).

Run: `python -m bytewax.run flows.kafka_to_delta:flow` (settings in README.md).
"""

from __future__ import annotations

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Dataflow

from connectors.config import Settings
from connectors.sink import DeltaSink
from connectors.source import KafkaSource
from connectors.startup import start


def _by_table(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    """Key a batch by the table it lands in (its topic); one batch holds one partition."""
    return batch.column(0)[0].as_py(), batch


def build_flow(settings: Settings) -> Dataflow:
    flow = Dataflow("kafka_to_delta")
    batches = op.input("kafka", flow, KafkaSource(settings))
    keyed = op.map("by_table", batches, _by_table)
    op.output("delta", keyed, DeltaSink(settings))
    return flow


flow = build_flow(start())
