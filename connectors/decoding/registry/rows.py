"""Raw batches -> rows of the registry flow's table (the `Decoder` the sink calls per flush).

Columns: the Kafka metadata columns, `is_tombstone`, `schema_id`, then one column per field of
the value (a value whose schema is not a record: one column `value`, named `value_value`); with
`WAXLAKE_REGISTRY_KEYS`, decoded keys add `key_<field>` columns (`key_value` for a key that is not
a record; a key field whose `key_<field>` the table takes for itself, as a state table takes
`key_bucket`, gets the value fields' escape: `key_value_bucket`) and `key` keeps the raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import one_array, only_value
from connectors.config import ConfigError, Settings
from connectors.decoding.base import METADATA_COLUMNS, TOMBSTONE_COLUMN, DecoderFactory
from connectors.decoding.naming import Naming
from connectors.decoding.registry.decoder import (
    KEY_HEADER,
    KEY_PREFIX,
    NAMING,
    SCHEMA_ID_COLUMN,
    VALUE_HEADER,
    ColumnDecoder,
)
from connectors.decoding.registry.schemas import SchemaSource
from connectors.decoding.schemas import check_decoded, decoded_fields, existing_schema, plain_type
from connectors.delta.dead_letters import Split, reject_oversized
from connectors.flow_settings import reads


class RegistryDecoder:
    """One per table: its value (and key) fields evolve additively, batch by batch."""

    evolves_schema = True

    def __init__(
        self,
        source: SchemaSource,
        max_record_bytes: int,
        value_fields: pa.Schema,
        key_fields: pa.Schema | None,
        naming: Naming = NAMING,
    ) -> None:
        self._max = max_record_bytes
        self._naming = naming
        self._key_naming = naming.within(KEY_PREFIX)
        self._values = ColumnDecoder(source, "value", VALUE_HEADER, value_fields)
        self._keys = (
            None if key_fields is None else ColumnDecoder(source, "key", KEY_HEADER, key_fields)
        )

    @property
    def fields(self) -> pa.Schema:
        return self._values.fields

    def split(self, raw: pa.Table) -> Split:
        split = Split(rows=raw)
        rest = reject_oversized(split, raw, self._max)
        rows, values, ids = self._values.decode(rest, split)
        rows = rows.append_column("__values", values).append_column("__ids", ids)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        if self._keys is not None:
            rows, keys, _ = self._keys.decode(rows, split)
            for field in self._keys.fields:
                columns[KEY_PREFIX + self._key_naming.column(field.name)] = keys.field(field.name)
        values = one_array(rows["__values"])
        table = pa.table(
            {
                **{name: rows[name] for name in METADATA_COLUMNS},
                TOMBSTONE_COLUMN: pc.is_null(rows["value"]),
                SCHEMA_ID_COLUMN: rows["__ids"],
                **columns,
                **{self._naming.column(f.name): values.field(f.name) for f in self._values.fields},
            }
        )
        return Split(
            rows=table
            if _in_order(table)
            else table.sort_by([("partition", "ascending"), ("offset", "ascending")]),
            dead=split.dead,
        )


def _in_order(table: pa.Table) -> bool:
    """One partition, offsets increasing: the rows of a one-schema poll need no sort."""
    if table.num_rows < 2:
        return True
    offsets = one_array(table["offset"])
    steps = pc.pairwise_diff(offsets).slice(1)
    one_partition = only_value(table["partition"]) is not None
    return bool(one_partition and pc.all(pc.greater(steps, 0)).as_py())


def _split_fields(schema: pa.Schema, naming: Naming) -> tuple[pa.Schema, pa.Schema]:
    """An existing table's value fields (each column named back) and key fields (columns
    `key_<field>`)."""
    keys = [c for c in schema if c.name.startswith(KEY_PREFIX) and not naming.clashes(c.name)]
    values = decoded_fields(pa.schema([c for c in schema if c not in keys]), naming)
    key_naming = naming.within(KEY_PREFIX)
    return values, pa.schema(
        [pa.field(key_naming.field(c.name[len(KEY_PREFIX) :]), plain_type(c.type)) for c in keys]
    )


def registry_values(
    settings: Settings,
    flow: str = "flows.registry_to_delta",
    tables: Callable[[str], pa.Schema | None] | None = None,
    metadata_columns: Sequence[str] = METADATA_COLUMNS,
    naming: Naming = NAMING,
) -> DecoderFactory:
    """Check the registry answers and existing tables fit; decoders start from the tables.

    `flow` names the flow in errors; `tables` gives a topic's existing table schema as this
    flow's tables have it (default: the table itself), holding at least `metadata_columns`;
    `naming` names the value's fields as columns."""
    reads("schema_registry_url", "schema_registry_config", "registry_keys")
    if not settings.schema_registry_url:
        raise ConfigError(
            f"WAXLAKE_SCHEMA_REGISTRY_URL is not set: {flow} needs the schema "
            "registry's URL (e.g. http://registry:8081)"
        )
    source = SchemaSource(settings.schema_registry_url, settings.schema_registry_config)
    source.check_reachable()
    starts: dict[str, tuple[pa.Schema, pa.Schema]] = {}
    for topic in settings.topics:
        schema = existing_schema(settings, topic) if tables is None else tables(topic)
        if schema is not None:
            uri = settings.table_uri(topic)
            check_decoded(topic, uri, schema, flow, metadata_columns)
            starts[topic] = _split_fields(schema, naming)

    def make(topic: str) -> RegistryDecoder:
        values, keys = starts.get(topic, (pa.schema([]), pa.schema([])))
        return RegistryDecoder(
            source,
            settings.max_record_bytes,
            values,
            keys if settings.registry_keys else None,
            naming,
        )

    return make
