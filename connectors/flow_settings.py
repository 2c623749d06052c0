"""Warnings about settings that would be ignored in silence: a `WAXLAKE_*` name no setting reads
(a typo), and a setting only some flows read given to a flow that does not read it
(`WAXLAKE_KEY_FIELDS` for `flows.json_to_delta`, `WAXLAKE_SCHEMA` for the raw flow), the table
then neither keyed nor typed by it.

The decoders and writers that read flow settings say so (`reads`); the sink, built last, warns
(`warn_unread`)."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping

from dotenv import dotenv_values

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


TOOL_VARIABLES = {
    "WAXLAKE_TEST_BROKER",
    "WAXLAKE_REQUIRE_BROKER",
    "WAXLAKE_REQUIRE_REGISTRY",
    "WAXLAKE_KAFKA_CACHE",
    "WAXLAKE_REGISTRY_CACHE",
    "WAXLAKE_REGISTRY_JAVA",
    "WAXLAKE_REGISTRY_MVN",
    "WAXLAKE_CRASH_SEED",
    "WAXLAKE_TEST_STEP",
    "WAXLAKE_TEST_BUYS",
}
"""Variables of the local brokers and the tests (README, "Tests"), not job settings."""


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per `WAXLAKE_*` variable no setting reads, in the environment or `.env`: a
    misspelt name would otherwise be ignored silently (`WAXLAKE_GUARANTE=at-most-once` runs
    exactly-once)."""
    if environ is None:
        environ = {**{k: v or "" for k, v in dotenv_values(".env").items()}, **os.environ}
    known = set(env_names().values())
    lines = []
    for name in sorted(environ):
        if not name.startswith("WAXLAKE_") or name in known or name in TOOL_VARIABLES:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{name} is not a waxlake setting{hint}; it is ignored")
    return lines
