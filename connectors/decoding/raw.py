"""The raw flow: every record is a row as it is; existing tables must hold the record columns."""

from __future__ import annotations

from connectors.config import Settings
from connectors.decoding.schemas import check_columns, existing_schema
from connectors.kafka.records import SCHEMA


def check_record_tables(settings: Settings) -> None:
    """At start-up: an existing table of a topic must have the record columns, typed as waxlake
    writes them (ConfigError naming the table otherwise)."""
    for topic in settings.topics:
        schema = existing_schema(settings, topic)
        if schema is not None:
            check_columns(topic, settings.table_uri(topic), schema, SCHEMA, "the raw flow")
