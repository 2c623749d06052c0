"""`decode`: the dataflow step that turns a batch's raw records into typed rows and dead letters.

Each table's decoder lives on one worker (the step is keyed by destination, like a stateful
step), so a table's inferred columns evolve in one place even when many workers read its topic.
"""

from __future__ import annotations

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Stream, operator

from connectors.batch import KafkaBatch, destination
from connectors.decoding.base import Decoder, DecoderFactory
from connectors.decoding.case_clashes import CaseCheck


@operator
def decode(step_id: str, up: Stream[KafkaBatch], decoders: DecoderFactory) -> Stream[KafkaBatch]:
    """Decode the rows of every batch with its table's decoder (`connectors.json_values`,
    `registry_values`, `changes`): rows become typed rows, bad records dead letters."""
    made: dict[str, tuple[Decoder, CaseCheck]] = {}

    def step(_state: None, batch: KafkaBatch) -> tuple[None, KafkaBatch]:
        if batch.rows.num_rows == 0:
            return None, batch
        name = batch.destination
        if name not in made:
            made[name] = decoders(name), CaseCheck()
        decoder, case_check = made[name]
        split = decoder.split(batch.rows)
        case_check.reject(split, batch.rows)
        dead = [t for t in (batch.dead, split.dead_table()) if t is not None and t.num_rows]
        return None, batch.with_rows(split.rows, dead=pa.concat_tables(dead) if dead else None)

    keyed = op.key_on("by_table", up, destination)
    decoded = op.stateful_map("decode", keyed, step)
    return op.map("batches", decoded, lambda item: item[1])
