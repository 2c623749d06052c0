"""What `flows.upsert_to_delta` checks and builds at start-up: decoders and MERGE writers."""

from __future__ import annotations

import pyarrow as pa

from connectors.config import ConfigError, Guarantee, Settings
from connectors.decode import JsonDecoder, decoded_fields, load_schema
from connectors.flow import existing_schema
from connectors.sink import DecoderFactory, WriterFactory
from connectors.state.changes import BUCKET, STATE_COLUMNS, ChangeDecoder
from connectors.state.writer import StateTableWriter

CDC_COLUMNS = {"cdc_source_ts", "cdc_lsn", "cdc_scn", "cdc_position"}


def key_columns(settings: Settings) -> list[str]:
    return settings.key_fields or ["key"]


def _value_fields(settings: Settings, topic: str) -> pa.Schema | None:
    """The decoded fields of an existing state table (None: no table yet)."""
    schema = existing_schema(settings, topic)
    if schema is None:
        return None
    uri = settings.table_uri(topic)
    missing = [c for c in (*STATE_COLUMNS, BUCKET, *key_columns(settings)) if c not in schema.names]
    if missing:
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: the table of topic {topic} at {uri} is not a current-state "
            f"table with keys {', '.join(key_columns(settings))} (no column "
            f"{', '.join(missing)}); point WAXLAKE_TABLE_ROOT elsewhere (an append table and a "
            "current-state table of one topic need separate roots)"
        )
    skip = {*STATE_COLUMNS, BUCKET, "key", *CDC_COLUMNS}
    return decoded_fields(pa.schema([f for f in schema if f.name not in skip]))


def upsert_decoders(settings: Settings) -> DecoderFactory:
    if settings.guarantee is not Guarantee.EXACTLY_ONCE:
        raise ConfigError(
            f"WAXLAKE_GUARANTEE={settings.guarantee.value}: a current-state table is kept with "
            "exactly-once MERGEs only; leave WAXLAKE_GUARANTEE unset (exactly-once)"
        )
    starts = {topic: _value_fields(settings, topic) for topic in settings.topics}
    if settings.value_format == "registry":
        from connectors.registry.rows import registry_decoders

        make_values = registry_decoders(settings)
    else:
        given = load_schema(settings.schema_spec) if settings.schema_spec else None

        def make_values(topic: str) -> JsonDecoder:
            return JsonDecoder(settings.max_record_bytes, starts.get(topic) or given)

    def make(topic: str) -> ChangeDecoder:
        return ChangeDecoder(
            make_values(topic), settings.key_fields, settings.cdc_format, settings.key_buckets
        )

    return make


def state_writers(settings: Settings) -> WriterFactory:
    def make(uri: str, topic: str) -> StateTableWriter:
        return StateTableWriter(
            uri,
            topic,
            key_columns(settings),
            settings.storage_options,
            settings.commit_retries,
            maintenance=settings.maintenance(),
            merge_rows=settings.state_merge_rows,
        )

    return make
