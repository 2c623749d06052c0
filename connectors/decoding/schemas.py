"""Schemas given by the user (`WAXLAKE_SCHEMA`) and the schemas of existing tables, checked
against what a flow writes before anything is read."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from connectors.batch import COORDINATES
from connectors.columns import same_type
from connectors.config import ConfigError, Settings
from connectors.decoding.base import METADATA_COLUMNS, TOMBSTONE_COLUMN, VALUE_NAMING
from connectors.decoding.naming import Naming
from connectors.delta.markers import open_table
from connectors.kafka.records import SCHEMA

_TYPE_NAMES: Mapping[str, Callable[[], pa.DataType]] = {
    "string": pa.string,
    "str": pa.string,
    "int": pa.int64,
    "int64": pa.int64,
    "long": pa.int64,
    "int32": pa.int32,
    "integer": pa.int32,
    "float": pa.float64,
    "double": pa.float64,
    "float64": pa.float64,
    "float32": pa.float32,
    "bool": pa.bool_,
    "boolean": pa.bool_,
    "timestamp": lambda: pa.timestamp("us", tz="UTC"),
    "date": pa.date32,
}


def load_schema(spec: str) -> pa.Schema:
    """Fields given by `WAXLAKE_SCHEMA`: a .json/.yaml file {field: type} or `module:attribute`
    naming a polars schema (a `pl.Schema` or a dict of polars dtypes)."""
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            text = path.read_text()
            mapping = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"WAXLAKE_SCHEMA: cannot read {spec}: {exc}") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"WAXLAKE_SCHEMA: {spec} must map field names to types")
        return pa.schema(
            [
                pa.field(str(name), _type_from_name(str(name), value))
                for name, value in mapping.items()
            ]
        )
    import polars as pl  # here, not at the top: the raw flow never needs it (0.1 CPU-s a start)

    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = getattr(importlib.import_module(module_name), attribute)
        arrow = pl.DataFrame(schema=dict(target)).to_arrow().schema
    except Exception as exc:
        raise ConfigError(
            f"WAXLAKE_SCHEMA: {spec!r} is neither a .json/.yaml schema file nor module:attribute "
            f"naming a polars schema ({exc})"
        ) from None
    # polars hands out large strings and lists, which Arrow's JSON reader cannot produce
    return pa.schema([pa.field(f.name, plain_type(f.type)) for f in arrow])


def _type_from_name(field: str, value: Any) -> pa.DataType:
    if isinstance(value, str) and value.lower() in _TYPE_NAMES:
        return _TYPE_NAMES[value.lower()]()
    if isinstance(value, list) and len(value) == 1:
        return pa.list_(_type_from_name(field, value[0]))
    if isinstance(value, dict) and value:
        return pa.struct([pa.field(str(k), _type_from_name(str(k), v)) for k, v in value.items()])
    if isinstance(value, dict):
        raise ConfigError(
            f"WAXLAKE_SCHEMA: field {field!r} is an object without fields, which Parquet cannot "
            "store; give it its fields, or leave it out"
        )
    raise ConfigError(
        f"WAXLAKE_SCHEMA: field {field!r} has unknown type {value!r}; use one of "
        f"{', '.join(sorted(_TYPE_NAMES))}, [type] for a list or {{name: type}} for an object"
    )


def decoded_fields(table_schema: pa.Schema, naming: Naming = VALUE_NAMING) -> pa.Schema:
    """The JSON fields of an existing decoded table: its other columns than the ones the table
    takes for itself, each named back (`naming`)."""
    return pa.schema(
        [
            pa.field(naming.field(f.name), plain_type(f.type))
            for f in table_schema
            if f.name not in naming.taken
        ]
    )


def plain_type(t: pa.DataType) -> pa.DataType:
    """Plain Arrow types the JSON reader accepts (Delta may hand out large/view variants)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, plain_type(f.type)) for f in t])
    return t


def check_columns(topic: str, uri: str, table: pa.Schema, wanted: pa.Schema, what: str) -> None:
    """The columns `wanted` are in `table` with their types. A table of the coordinates only
    was made before its first rows (to hold markers), which add the rest."""
    bare = set(table.names) <= set(COORDINATES)
    for field in wanted:
        if field.name not in table.names and bare:
            continue
        if field.name not in table.names:
            problem = f"has no column {field.name!r}"
        elif not same_type(table.field(field.name).type, field.type):
            problem = (
                f"has {field.name!r} as {table.field(field.name).type}, {what} needs {field.type}"
            )
        else:
            continue
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: the existing table of topic {topic} at {uri} does not fit: it "
            f"{problem}; point WAXLAKE_TABLE_ROOT elsewhere or migrate the table"
        )


def check_decoded(
    topic: str,
    uri: str,
    table: pa.Schema,
    what: str,
    metadata_columns: Sequence[str] = METADATA_COLUMNS,
) -> None:
    """An existing table a decoding flow may write to: its metadata columns fit, and it is not a
    raw table (whose bytes column `value` the decoded columns would be added beside)."""
    if "value" in table.names and TOMBSTONE_COLUMN not in table.names:
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: the existing table of topic {topic} at {uri} is a raw table "
            f"(flows.kafka_to_delta: a 'value' column of bytes, no {TOMBSTONE_COLUMN!r}), which "
            f"{what} does not write; point WAXLAKE_TABLE_ROOT elsewhere or keep the raw flow"
        )
    metadata = pa.schema([SCHEMA.field(name) for name in metadata_columns])
    check_columns(topic, uri, table, metadata, what)


def existing_schema(settings: Settings, topic: str) -> pa.Schema | None:
    table = open_table(settings.table_uri(topic), settings.storage_options)
    return None if table is None else pa.schema(table.schema().to_arrow())
