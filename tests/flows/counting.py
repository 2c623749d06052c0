"""A flow with a stateful step of its own: each row gets `seen`, how many records of its topic
the job had seen before it (kept only in Bytewax's recovery store), for the backup test."""

from __future__ import annotations

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaBatch, KafkaSource, destination, start


def count(seen: int | None, batch: KafkaBatch) -> tuple[int, KafkaBatch]:
    before = seen or 0
    numbers = pa.array(range(before, before + batch.rows.num_rows), pa.int64())
    return before + batch.rows.num_rows, batch.with_rows(batch.rows.append_column("seen", numbers))


settings = start()
flow = Dataflow("counting")
records = op.input("kafka", flow, KafkaSource(settings))
keyed = op.key_on("by_topic", records, lambda batch: batch.topic)
counted = op.map("batches", op.stateful_map("count", keyed, count), lambda item: item[1])
op.output("delta", op.key_on("by_table", counted, destination), DeltaSink(settings))
