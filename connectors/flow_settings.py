"""Settings only some flows read, and one warning when such a setting is given to a flow that
does not read it: `WAXLAKE_KEY_FIELDS` for `flows.json_to_delta`, or `WAXLAKE_SCHEMA` for the raw
flow, would be ignored in silence, the table neither keyed nor typed by them.

The decoders and writers that read them say so (`reads`); the sink, built last, warns (`warn_unread`)."""

from __future__ import annotations

import logging

from connectors.config import Settings, env_names

log = logging.getLogger("waxlake")

FLOW_SETTINGS = frozenset(
    {
        "schema_spec",
        "schema_registry_url",
        "schema_registry_config",
        "registry_keys",
        "value_format",
        "key_fields",
        "cdc_format",
        "key_buckets",
        "state_merge_rows",
    }
)
_read: set[str] = set()


def reads(*fields: str) -> None:
    """The flow being built reads these settings."""
    _read.update(fields)


def warn_unread(settings: Settings) -> None:
    names = env_names()
    for field in sorted((FLOW_SETTINGS & settings.model_fields_set) - _read):
        log.warning(
            "%s is set, but this flow does not read it (it belongs to another flow); it is ignored",
            names[field],
        )
