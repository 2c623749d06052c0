"""The dataflow both flows share: Kafka source -> batches keyed by table -> Delta sink."""

from __future__ import annotations

import bytewax.operators as op
import pyarrow as pa
from bytewax.dataflow import Dataflow

from connectors.config import ConfigError, Settings
from connectors.decode import METADATA_COLUMNS, JsonDecoder, RawDecoder, decoded_fields, load_schema
from connectors.offsets import open_table
from connectors.records import SCHEMA
from connectors.sink import DecoderFactory, DeltaSink, WriterFactory
from connectors.source import KafkaSource


def _by_table(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    """Key a batch by the table it lands in (its topic); one batch holds one partition."""
    return batch.column(0)[0].as_py(), batch


def build_flow(
    name: str,
    settings: Settings,
    make_decoder: DecoderFactory,
    make_writer: WriterFactory | None = None,
) -> Dataflow:
    flow = Dataflow(name)
    batches = op.input("kafka", flow, KafkaSource(settings))
    keyed = op.map("by_table", batches, _by_table)
    op.output("delta", keyed, DeltaSink(settings, make_decoder, make_writer))
    return flow


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal as Delta stores them (timestamps in µs, no large/view distinction)."""

    def norm(t: pa.DataType) -> str:
        text = str(t)
        for old, new in (
            ("large_", ""),
            ("_view", ""),
            ("string_view", "string"),
            ("element", "item"),
        ):
            text = text.replace(old, new)
        return text.replace("timestamp[ms", "timestamp[us")

    return norm(a) == norm(b)


def check_columns(topic: str, uri: str, table: pa.Schema, wanted: pa.Schema, what: str) -> None:
    for field in wanted:
        if field.name not in table.names:
            problem = f"has no column {field.name!r}"
        elif not _same_type(table.field(field.name).type, field.type):
            problem = (
                f"has {field.name!r} as {table.field(field.name).type}, {what} needs {field.type}"
            )
        else:
            continue
        raise ConfigError(
            f"WAXLAKE_TABLE_ROOT: the existing table of topic {topic} at {uri} does not fit: it "
            f"{problem}; point WAXLAKE_TABLE_ROOT elsewhere or migrate the table"
        )


def existing_schema(settings: Settings, topic: str) -> pa.Schema | None:
    table = open_table(settings.table_uri(topic), settings.storage_options)
    return None if table is None else pa.schema(table.schema().to_arrow())


def raw_decoders(settings: Settings) -> DecoderFactory:
    """Check existing tables against the raw schema; every topic gets a RawDecoder."""
    for topic in settings.topics:
        schema = existing_schema(settings, topic)
        if schema is not None:
            check_columns(topic, settings.table_uri(topic), schema, SCHEMA, "the raw flow")
    return lambda topic: RawDecoder(settings.max_record_bytes)


def json_decoders(settings: Settings) -> DecoderFactory:
    """Check the given schema (WAXLAKE_SCHEMA) and existing tables; decoders start from both."""
    given = load_schema(settings.schema_spec) if settings.schema_spec else pa.schema([])
    metadata = pa.schema([SCHEMA.field(name) for name in METADATA_COLUMNS])
    starts: dict[str, pa.Schema] = {}
    for topic in settings.topics:
        uri = settings.table_uri(topic)
        schema = existing_schema(settings, topic)
        if schema is None:
            starts[topic] = given
            continue
        check_columns(topic, uri, schema, metadata, "the decoded flow")
        fields = decoded_fields(schema)
        for field in given:
            if field.name in fields.names and not _same_type(
                fields.field(field.name).type, field.type
            ):
                raise ConfigError(
                    f"WAXLAKE_SCHEMA: field {field.name!r} is {field.type} but the existing table "
                    f"at {uri} has it as {fields.field(field.name).type}; fix the schema or "
                    "point WAXLAKE_TABLE_ROOT elsewhere"
                )
        starts[topic] = pa.schema([*fields, *(f for f in given if f.name not in fields.names)])
    return lambda topic: JsonDecoder(settings.max_record_bytes, starts.get(topic))
