"""Start-up checks of the current-state flow, and its change decoders.

Before anything is read: the guarantee, the key fields (not a column waxlake adds), and each
existing state table: its key columns, and the key bucket count it was built with (a key
hashed into another count of buckets would land beside its old row, a second row per key).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from connectors.config import ConfigError, Guarantee, Settings
from connectors.decoding.base import METADATA_COLUMNS, DecoderFactory
from connectors.decoding.json_values import JsonDecoder
from connectors.decoding.schemas import decoded_fields, load_schema
from connectors.decoding.state_changes import (
    BUCKET,
    OWN_COLUMNS,
    ROW_NAMING,
    STATE_COLUMNS,
    STATE_NAMING,
    ChangeDecoder,
    bucket_hashes,
    key_columns,
)
from connectors.delta.markers import open_table
from connectors.flow_settings import reads

BUCKETS_PROPERTY = "waxlake.keyBuckets"
"""Table property: the WAXLAKE_KEY_BUCKETS a state table was created with."""
SAMPLE_ROWS = 1000
"""Rows of a table without the property whose buckets are recomputed to check the setting."""


def check_key_fields(settings: Settings) -> None:
    taken = sorted(f for f in settings.key_fields if STATE_NAMING.clashes(f))
    if taken:
        raise ConfigError(
            f"WAXLAKE_KEY_FIELDS={','.join(settings.key_fields)}: {', '.join(taken)} is a column "
            "waxlake adds (Kafka metadata or the state table's own), not a value field; name "
            "value fields (a value field called that is stored, and keyed, as "
            f"value_{taken[0]})"
        )


def stored_buckets(table: DeltaTable) -> int | None:
    value = table.metadata().configuration.get(BUCKETS_PROPERTY)
    return int(value) if value is not None else None


def fitting_buckets(table: DeltaTable, keys: list[str]) -> list[int]:
    """For a table made before the property: the bucket counts (up to 4096) its first
    `SAMPLE_ROWS` rows fit (a key's bucket is CRC-32 modulo the count). Empty table: all."""
    sample = table.to_pyarrow_dataset().head(SAMPLE_ROWS, columns=[*keys, BUCKET])
    hashes = np.array(bucket_hashes(sample.select(keys)), np.int64)
    stored = sample[BUCKET].to_numpy().astype(np.int64)
    return [n for n in range(1, 4097) if np.array_equal(hashes % n, stored)]


def check_buckets(settings: Settings, topic: str, table: DeltaTable) -> None:
    wanted = settings.key_buckets
    stored = stored_buckets(table)
    if stored is None:
        fits = fitting_buckets(table, key_columns(settings))
        if wanted in fits:
            return
        stored = fits[0] if fits else None
    elif stored == wanted:
        return
    was = (
        f"was built with WAXLAKE_KEY_BUCKETS={stored}"
        if stored
        else "has rows whose buckets fit no count up to 4096"
    )
    fix = f"Set WAXLAKE_KEY_BUCKETS={stored}" if stored else "Set the count it was built with"
    raise ConfigError(
        f"WAXLAKE_KEY_BUCKETS={wanted}: the current-state table of topic {topic} at "
        f"{settings.table_uri(topic)} {was}; keys would land in new buckets beside their old "
        f"rows. {fix}, or rebuild the table from the topic into a new WAXLAKE_TABLE_ROOT to "
        "change the count"
    )


def state_schema(settings: Settings, topic: str) -> pa.Schema | None:
    """An existing state table's columns (None: no table yet), once its key columns and its
    bucket count are checked."""
    uri = settings.table_uri(topic)
    table = open_table(uri, settings.storage_options)
    if table is None:
        return None
    schema = pa.schema(table.schema().to_arrow())
    missing = [c for c in (*STATE_COLUMNS, BUCKET, *key_columns(settings)) if c not in schema.names]
    if missing:
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: the table of topic {topic} at {uri} is not a current-state "
            f"table with keys {', '.join(key_columns(settings))} (no column "
            f"{', '.join(missing)}); point WAXLAKE_TABLE_ROOT elsewhere (an append table and a "
            "current-state table of one topic need separate roots)"
        )
    check_buckets(settings, topic, table)
    return schema


def registry_view(schema: pa.Schema, debezium: bool) -> pa.Schema:
    """A state table as the registry decoder's table: its rows' columns are the value's fields,
    except with Debezium, whose values are envelopes of rows of the table's row type."""
    if debezium:
        return pa.schema([*(f for f in schema if f.name in METADATA_COLUMNS), *_envelope(schema)])
    return schema


def json_start(schema: pa.Schema, debezium: bool) -> pa.Schema:
    """The fields a JSON value decoder starts from: the rows' columns named back, and with
    Debezium the envelope's `before` and `after` of that row type."""
    if not debezium:
        return decoded_fields(schema, STATE_NAMING)
    return pa.schema(_envelope(schema))


def _envelope(schema: pa.Schema) -> list[pa.Field]:
    row = pa.struct(list(decoded_fields(schema, ROW_NAMING)))
    return [pa.field("before", row), pa.field("after", row)]


def changes(settings: Settings) -> DecoderFactory:
    """Change decoders for current-state tables: the values decoded (JSON or registry), then
    keyed; checks the guarantee, the key fields and existing state tables first."""
    reads("value_format", "key_fields", "cdc_format", "key_buckets", "registry_keys")
    if settings.guarantee is not Guarantee.EXACTLY_ONCE:
        raise ConfigError(
            f"WAXLAKE_GUARANTEE={settings.guarantee.value}: a current-state table is kept with "
            "exactly-once MERGEs only; leave WAXLAKE_GUARANTEE unset (exactly-once)"
        )
    check_key_fields(settings)
    if settings.registry_keys and settings.value_format != "registry":
        raise ConfigError(
            "WAXLAKE_REGISTRY_KEYS: keys are decoded through the schema registry together with "
            "the values, so it needs WAXLAKE_VALUE_FORMAT=registry; with JSON values the key "
            "is the Kafka key's bytes, or the WAXLAKE_KEY_FIELDS of the value"
        )
    schemas = {topic: state_schema(settings, topic) for topic in settings.topics}
    debezium = settings.cdc_format == "debezium"
    if settings.value_format == "registry":
        from connectors.decoding.registry.decoder import NAMING
        from connectors.decoding.registry.rows import registry_values

        views = {t: registry_view(s, debezium) for t, s in schemas.items() if s is not None}
        make_values = registry_values(
            settings,
            "flows.upsert_to_delta",
            views.get,
            metadata_columns=STATE_COLUMNS,
            naming=NAMING.with_taken(OWN_COLUMNS),
        )
    else:
        reads("schema_spec")
        given = load_schema(settings.schema_spec) if settings.schema_spec else None
        starts = {t: json_start(s, debezium) for t, s in schemas.items() if s is not None}

        def make_values(topic: str) -> JsonDecoder:
            return JsonDecoder(settings.max_record_bytes, starts.get(topic) or given, STATE_NAMING)

    def make(topic: str) -> ChangeDecoder:
        return ChangeDecoder(
            make_values(topic),
            settings.key_fields,
            settings.cdc_format,
            settings.key_buckets,
            schemas.get(topic),
        )

    return make
