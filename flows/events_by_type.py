"""Your own dataflow, as README's "Write your own flow" shows it: JSON events -> your step ->
one table per event type.

Run: `python -m bytewax.run flows.events_by_type:flow` (the usual settings; the tables are
`<root>/clicks`, `<root>/views` and `<root>/other_events`).
"""

from __future__ import annotations

import bytewax.operators as op
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow

from connectors import DeltaSink, KafkaSource, decode, destination, json_values, route, rows, start

TABLES = {"click": "clicks", "view": "views"}
OTHERS = "other_events"


def humans_only(events: pa.Table) -> pa.Table:
    """Your step: drop bot traffic and mask the last part of the IP address. It may drop rows
    and change or add columns, and keeps `topic`, `partition` and `offset` as they are."""
    if "is_bot" in events.column_names:
        events = events.filter(pc.invert(pc.fill_null(events["is_bot"], False)))
    if "ip" in events.column_names:
        masked = pc.replace_substring_regex(events["ip"], pattern=r"\.\d+$", replacement=".0")
        events = events.set_column(events.schema.get_field_index("ip"), "ip", masked)
    return events


settings = start()
tables = {topic: [*TABLES.values(), OTHERS] for topic in settings.topics}

flow = Dataflow("events_by_type")
records = op.input("kafka", flow, KafkaSource(settings, tables))
events = decode("decode", records, json_values(settings))
humans = op.map("humans_only", events, rows(humans_only))
by_type = op.flat_map("by_type", humans, route("type", TABLES, default=OTHERS))
op.output("delta", op.key_on("by_table", by_type, destination), DeltaSink(settings, tables))
