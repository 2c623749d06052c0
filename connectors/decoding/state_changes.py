"""Decoded records -> changes to a current-state table: a key, the fields, upsert or delete.

The key is the Kafka record key (column `key`), or the decoded fields `WAXLAKE_KEY_FIELDS`
names. A tombstone (null value) deletes its key (with key fields: those of its Kafka key, if that
is a JSON object; `kafka_keys`). With `WAXLAKE_CDC_FORMAT=debezium` values are
Debezium envelopes: `c`/`r`/`u` upsert `after`, `d` deletes (its key from `before`), and
Debezium's own tombstone after a delete is ignored (its offset still counts as handled).

Order (README, "Ordering"): changes to a key in one partition apply in offset order; between
partitions (a key that moved after the topic was repartitioned) the later Kafka timestamp wins,
and on equal timestamps the higher partition. `latest_per_key` and the MERGE use the same rule.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import any_null, one_array, only_value
from connectors.config import ConfigError, Settings
from connectors.decoding import connect_types, debezium
from connectors.decoding.base import METADATA_COLUMNS, TOMBSTONE_COLUMN, VALUE_NAMING, Decoder
from connectors.decoding.json_values import JsonDecoder
from connectors.decoding.kafka_keys import fill_from_kafka_key
from connectors.decoding.naming import Naming
from connectors.delta.dead_letters import Split, reject_decoded

DELETED = "__deleted"
BUCKET = "key_bucket"
STATE_COLUMNS = ["topic", "partition", "offset", "timestamp"]
"""Kafka coordinates of the change a row holds (the last one applied to its key)."""


def bucket_hashes(keys: pa.Table) -> list[int]:
    """CRC-32 of each key's canonical bytes (its bucket is this modulo the bucket count).

    CRC-32 is fixed forever (zlib), so a key always maps to the bucket it was stored in."""
    columns = [keys.column(i).to_pylist() for i in range(keys.num_columns)]
    out = []
    for parts in zip(*columns, strict=True):
        text = b"\x1f".join(p if isinstance(p, bytes) else repr(p).encode() for p in parts)
        out.append(zlib.crc32(text))
    return out


def key_buckets(keys: pa.Table, buckets: int) -> pa.Array:
    """Each key's bucket (the state table's partition column)."""
    return pa.array([h % buckets for h in bucket_hashes(keys)], pa.int32())


class ChangeDecoder:
    """Wraps the flow's value decoder (JSON or registry) and turns its rows into changes."""

    evolves_schema = True

    def __init__(
        self,
        values: Decoder,
        key_fields: Sequence[str],
        cdc: str,
        buckets: int,
        table: pa.Schema | None = None,
    ) -> None:
        self._values = values
        self._table = table  # the state table at start: its columns keep their types
        self.key_columns = list(key_fields) or ["key"]
        self._by_fields = bool(key_fields)
        self._cdc = cdc
        self._buckets = buckets

    def split(self, raw: pa.Table) -> Split:
        values, logical = debezium.unwrap(raw) if self._cdc == "debezium" else (raw, {})
        if logical and isinstance(self._values, JsonDecoder):
            self._values.fields = connect_types.wire_fields(self._values.fields, logical)
        split = self._values.split(values)
        rows = split.rows
        if self._cdc == "debezium":
            rows = debezium.changes(
                rows,
                lambda table, mask, c, t: reject_decoded(split, raw, table, mask, c, t),
                ROW_NAMING,
                logical,
                self._table,
            )
        else:  # the value decoder named the fields (its naming takes OWN_COLUMNS too)
            rows = rows.append_column(DELETED, rows[TOMBSTONE_COLUMN])
            rows = rows.drop_columns([TOMBSTONE_COLUMN])
        rows = self._keyed(rows, split, raw)
        drop = ["headers", *(["key"] if self._by_fields else [])]
        rows = rows.drop_columns([c for c in drop if c in rows.column_names])
        buckets = key_buckets(rows.select(self.key_columns), self._buckets)
        split.rows = rows.append_column(BUCKET, buckets)
        return split

    def _keyed(self, rows: pa.Table, split: Split, raw: pa.Table) -> pa.Table:
        """Changes without a whole key go to the dead letters: no row can be told apart."""
        self._check_key_fields_exist(rows)
        for column in self.key_columns:
            if column not in rows.column_names:
                rows = rows.append_column(column, pa.nulls(rows.num_rows))
            elif pa.types.is_nested(kind := rows.schema.field(column).type):
                raise ConfigError(
                    f"WAXLAKE_KEY_FIELDS: field {column} is {kind}, which cannot key a row (a "
                    "MERGE compares scalars): name fields of strings, numbers, booleans, dates, "
                    "timestamps or bytes"
                )
        fields = ", ".join(self.key_columns)
        if self._by_fields:
            deleted = one_array(rows[DELETED])
            rows = fill_from_kafka_key(rows, self.key_columns, deleted)
            rows = reject_decoded(
                split,
                raw,
                rows,
                pc.and_(pc.fill_null(rows[DELETED], False), any_null(rows, self.key_columns)),
                "MissingKey",
                f"the delete has no key field(s) {fields} (WAXLAKE_KEY_FIELDS) in its value (a "
                "tombstone has none) nor in its Kafka key, which is not a JSON object holding "
                "them, so it names no row of the state table",
            )
        what = f"key field(s) {fields} (WAXLAKE_KEY_FIELDS)" if self._by_fields else "Kafka key"
        return reject_decoded(
            split,
            raw,
            rows,
            any_null(rows, self.key_columns),
            "MissingKey",
            f"the change has no {what}, so it names no row of the state table",
        )

    def _check_key_fields_exist(self, rows: pa.Table) -> None:
        """A key field that no value so far has (nor the table, nor WAXLAKE_SCHEMA) is misspelt,
        far more likely than absent from every change: stop before all of them become
        dead letters."""
        missing = [c for c in self.key_columns if c not in rows.column_names]
        if not self._by_fields or not missing or pc.all(rows[DELETED]).as_py() is not False:
            return
        fields = [c for c in rows.column_names if c not in (*METADATA_COLUMNS, *OWN_COLUMNS)]
        topic = only_value(rows["topic"])
        raise ConfigError(
            f"WAXLAKE_KEY_FIELDS={','.join(self.key_columns)}: no value of topic {topic} so far "
            f"has field {', '.join(missing)} (they have {', '.join(fields[:20]) or 'no fields'}); "
            "nothing was written. Fix the name, or, if the first changes lack it on purpose, "
            "declare it in WAXLAKE_SCHEMA (then they are MissingKey dead letters)"
        )


def latest_per_key(changes: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """The one change per key a flush applies: per partition the highest offset, then between
    partitions the latest timestamp (then the higher partition)."""
    frame = pl.from_arrow(changes)
    assert isinstance(frame, pl.DataFrame)
    keys = list(key_columns)
    last_in_partition = frame.sort("offset").unique([*keys, "partition"], keep="last")
    ranked = last_in_partition.sort(
        [pl.col("timestamp").fill_null(pl.datetime(1970, 1, 1, time_zone="UTC")), "partition"]
    )
    return ranked.unique(keys, keep="last").sort("partition", "offset").to_arrow()


CDC_COLUMNS = set(debezium.CDC_COLUMNS)
OWN_COLUMNS = {BUCKET, DELETED}
"""Columns the state table adds: a value field of that name becomes `value_<name>`."""
STATE_NAMING = VALUE_NAMING.with_taken(OWN_COLUMNS)
"""How a JSON value's fields are named as columns of its state table."""
ROW_NAMING = Naming(frozenset({*METADATA_COLUMNS, *CDC_COLUMNS, *OWN_COLUMNS}))
"""How a Debezium row's fields are named as columns of its state table."""


def key_columns(settings: Settings) -> list[str]:
    return settings.key_fields or ["key"]
