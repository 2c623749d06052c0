"""Settings of a waxlake job, read from the environment (and an optional `.env` file).

Every setting is documented in README.md; the names here are the contract.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from connectors.delta.maintenance import MaintenancePolicy
from connectors.delta.parquet import check_compression

ROOT_SCHEMES = ("file", "s3", "s3a", "gs", "az", "abfs", "abfss", "adl", "azure")
"""Object stores (and file://) a table root may be on: those delta-rs's Python package reads."""


class Guarantee(StrEnum):
    """Delivery guarantee: where the consumer position moves relative to the table write."""

    EXACTLY_ONCE = "exactly-once"
    AT_LEAST_ONCE = "at-least-once"
    AT_MOST_ONCE = "at-most-once"


class OnDataLoss(StrEnum):
    """What to do when Kafka deleted records before they landed (see README)."""

    FAIL = "fail"
    CONTINUE = "continue"


_OFFSET_RESET = {
    "earliest": "earliest",
    "smallest": "earliest",
    "beginning": "earliest",
    "latest": "latest",
    "largest": "latest",
    "end": "latest",
}


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting and the fix."""


class Settings(BaseSettings):
    """Job settings. Field names map to `WAXLAKE_<NAME>` unless an alias says otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="WAXLAKE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    bootstrap_servers: str = Field(
        default="localhost:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    topics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    table_root: str = ""
    guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    on_data_loss: OnDataLoss = OnDataLoss.FAIL
    partition_check_interval_s: float = Field(default=60.0, ge=0)
    stop_at_end: bool = False
    group_id: str = "waxlake"
    kafka_config: dict[str, str] = Field(default_factory=dict)
    storage_options: dict[str, str] = Field(default_factory=dict)
    max_batch_rows: int = Field(default=250_000, gt=0)
    max_batch_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_poll_records: int = Field(default=10_000, gt=0)
    commit_interval_ms: int = Field(default=0, ge=0)
    commit_retries: int = Field(default=20, ge=1)
    recovery_partitions: int = Field(default=1, gt=0)
    max_record_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    parquet_compression: str = Field(
        default="lz4_raw", pattern=r"^(uncompressed|snappy|gzip|brotli|lz4_raw|zstd)(:\d+)?$"
    )
    compact_every_commits: int = Field(default=100, ge=0)
    compact_target_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    vacuum_every_commits: int = Field(default=1000, ge=0)
    vacuum_retention_hours: int = Field(default=168, ge=0)
    checkpoint_interval: int = Field(default=100, gt=0)
    log_retention: str = Field(
        default="interval 1 hours",
        pattern=r"^interval \d+ (seconds?|minutes?|hours?|days?|weeks?)$",
    )
    schema_spec: str = Field(default="", validation_alias="WAXLAKE_SCHEMA")
    schema_registry_url: str = ""
    schema_registry_config: dict[str, Any] = Field(default_factory=dict)
    registry_keys: bool = False
    value_format: Literal["json", "registry"] = "json"
    key_fields: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cdc_format: Literal["", "debezium"] = ""
    key_buckets: int = Field(default=16, gt=0, le=4096)
    state_merge_rows: int = Field(default=2_000_000, gt=0)
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    bytewax_log_level: Literal["ERROR", "WARN", "INFO", "DEBUG", "TRACE"] = "ERROR"

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("key_fields", mode="before")
    @classmethod
    def _split_key_fields(cls, value: Any) -> Any:
        """Each name is a key column: an empty one would key by the Kafka key instead, a
        repeated one would make two columns of one field."""
        if not isinstance(value, str) or not value.strip():
            return [] if isinstance(value, str) else value
        names = [f.strip() for f in value.split(",")]
        if not all(names):
            raise ValueError(f"an empty field name in {value!r} (name them as id,region)")
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"{', '.join(repeated)} is named twice")
        return names

    @field_validator("bootstrap_servers", "group_id")
    @classmethod
    def _named(cls, value: str) -> str:
        """librdkafka aborts the process on an empty group id (no error to catch)."""
        if not value.strip():
            raise ValueError("empty; give a name")
        return value.strip()

    @field_validator("log_level", "bytewax_log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "parquet_compression",
        "guarantee",
        "on_data_loss",
        "log_format",
        "cdc_format",
        "value_format",
        mode="before",
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("table_root")
    @classmethod
    def _strip_root(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].lower() if "://" in value else None
        if scheme is not None and scheme not in ROOT_SCHEMES:
            raise ValueError(
                f"{scheme}:// is not a storage delta-rs writes to; give a local directory or "
                f"a URI of {', '.join(s + '://' for s in ROOT_SCHEMES)}"
            )
        if scheme is None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", value):
            raise ValueError(f"{value} looks like a URI with a '/' missing (e.g. s3://bucket/lake)")
        return value.rstrip("/") if value not in ("", "/") else value

    @field_validator("parquet_compression")
    @classmethod
    def _writable(cls, value: str) -> str:
        check_compression(value)
        return value

    @field_validator("kafka_config", "storage_options", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): _librdkafka_str(v) for k, v in value.items()}
        return value

    def maintenance(self) -> MaintenancePolicy:
        return MaintenancePolicy(
            compact_every_commits=self.compact_every_commits,
            compact_target_bytes=self.compact_target_bytes,
            vacuum_every_commits=self.vacuum_every_commits,
            vacuum_retention_hours=self.vacuum_retention_hours,
            checkpoint_interval=self.checkpoint_interval,
            log_retention=self.log_retention,
            parquet_compression=self.parquet_compression,
        )

    def initial_offset(self) -> str:
        """Where a partition with no position at all starts (a new table): `auto.offset.reset`
        from WAXLAKE_KAFKA_CONFIG, `earliest` or `latest`. Every partition with a position
        reads with `auto.offset.reset=error`, so an out-of-range position reaches waxlake."""
        return _OFFSET_RESET[self.kafka_config.get("auto.offset.reset", "earliest").lower()]

    def table_uri(self, topic: str) -> str:
        """Where the table of `topic` lives: `<root>/<topic>`."""
        return f"{self.table_root}/{topic}"


def check_table_name(name: object, where: str) -> str:
    """A routed table's name is a directory under the root, beside waxlake's own `_...` ones."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name != name.strip()
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or name.startswith("_")
    ):
        raise ConfigError(
            f"{where}: {name!r} is not a table name: give a non-empty name without '/', not "
            "starting with '_' (the root's _dead_letters, _data_loss and _recovery are waxlake's)"
        )
    return name


def _librdkafka_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_names() -> dict[str, str]:
    """Each setting's field -> the environment variable it is read from (its alias, if any)."""
    return {
        name: alias
        if isinstance(alias := field.validation_alias, str)
        else f"WAXLAKE_{name.upper()}"
        for name, field in Settings.model_fields.items()
    }


def _env_name(field: str) -> str:
    """The variable of a field (pydantic names an aliased field by its alias already)."""
    names = env_names()
    return field if field in names.values() else names.get(field, f"WAXLAKE_{field.upper()}")


def read_settings(**overrides: Any) -> Settings:
    """The settings (environment, `.env`, then `overrides`); ConfigError with one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{_env_name(field)}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid setting " + "; ".join(problems)) from None
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        name = _env_name(match.group(1)) if match else "a WAXLAKE_ setting"
        raise ConfigError(
            f"{name}: cannot parse the value (JSON expected for maps): {exc}"
        ) from None


def load_settings() -> Settings:
    """Read and check the job's settings; raise ConfigError with one line per problem."""
    settings = read_settings()
    if not settings.topics:
        raise ConfigError(
            "WAXLAKE_TOPICS is empty: set it to a comma-separated list of Kafka topics to ingest"
        )
    reset = settings.kafka_config.get("auto.offset.reset", "earliest")
    if reset.lower() not in _OFFSET_RESET:
        raise ConfigError(
            f"WAXLAKE_KAFKA_CONFIG: auto.offset.reset={reset} is not supported: waxlake uses it "
            "only where a partition has no position yet (a new table), as earliest or latest; "
            "a known position that is out of range is handled by WAXLAKE_ON_DATA_LOSS"
        )
    if not settings.table_root:
        raise ConfigError(
            "WAXLAKE_TABLE_ROOT is not set: set it to a local directory or an object-store URI "
            "(topic T lands in <root>/T)"
        )
    return settings
