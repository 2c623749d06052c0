"""Schemas fetched from the registry by id or GUID, cached, with their references resolved.

A registry that does not answer is retried with backoff for as long as it takes (and logged):
a transient outage must never turn good records into dead letters. Only an answer that the
schema does not exist makes records undecodable.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors.config import ConfigError
from connectors.errors import WaxlakeError
from connectors.ops.shutdown import STOP

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_BACKOFF_S = 30.0
_UNKNOWN_FOR_S = 60.0
_HTTP_LOGGERS = ("httpx", "httpx2", "httpcore")  # the client's HTTP library logs as these
_CLIENT_DEFAULTS: dict[str, Any] = {"timeout": 10, "max.retries": 2, "retries.wait.ms": 200}


class UnknownSchema(Exception):
    """The registry answered that no schema has this id or GUID."""


@dataclass(frozen=True)
class RegisteredSchema:
    """One writer schema: its type (AVRO, PROTOBUF, JSON), text and referenced schemas."""

    ref: str  # "id 7" or "guid 8f0c...": how records name it
    schema_id: int | None
    kind: str
    text: str
    references: Mapping[str, RegisteredSchema] = field(default_factory=dict)


class SchemaSource:
    """The registry client of one job; schemas are immutable, so each is fetched once."""

    def __init__(self, url: str, config: Mapping[str, Any]) -> None:
        self.url = url
        for each in url.split(","):  # the client takes several, comma-separated
            parts = urlsplit(each.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"WAXLAKE_SCHEMA_REGISTRY_URL: {each.strip()!r} is not an http(s) URL; "
                    "give the scheme too, e.g. http://registry:8081"
                )
        for name in _HTTP_LOGGERS:  # one INFO line per schema fetched is noise
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            self._client = SchemaRegistryClient({**_CLIENT_DEFAULTS, **config, "url": url})
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"WAXLAKE_SCHEMA_REGISTRY_CONFIG: the registry client rejected it: {exc}"
            ) from None
        self._by_id: dict[int, RegisteredSchema] = {}
        self._by_guid: dict[str, RegisteredSchema] = {}
        self._unknown: dict[str, tuple[float, str]] = {}  # ref -> (until, message)

    def check_reachable(self) -> None:
        """At start-up: the registry answers (one line naming the setting if not)."""
        try:
            self._client.get_subjects()
        except Exception as exc:
            raise ConfigError(
                f"WAXLAKE_SCHEMA_REGISTRY_URL: no schema registry answered at {self.url} "
                f"({type(exc).__name__}: {exc}); check the URL and WAXLAKE_SCHEMA_REGISTRY_CONFIG"
            ) from None

    def by_id(self, schema_id: int) -> RegisteredSchema:
        if schema_id not in self._by_id:
            schema = self._call(
                lambda: self._client.get_schema(schema_id), f"schema id {schema_id}"
            )
            self._by_id[schema_id] = self._resolve(f"id {schema_id}", schema_id, schema)
        return self._by_id[schema_id]

    def by_guid(self, guid: str) -> RegisteredSchema:
        if guid not in self._by_guid:
            schema = self._call(lambda: self._client.get_schema_by_guid(guid), f"schema {guid}")
            self._by_guid[guid] = self._resolve(f"guid {guid}", None, schema)
        return self._by_guid[guid]

    def _resolve(self, ref: str, schema_id: int | None, schema: Any) -> RegisteredSchema:
        references = {}
        for reference in schema.references or []:
            registered = self._call(
                functools.partial(self._client.get_version, reference.subject, reference.version),
                f"reference {reference.name}",
            )
            references[reference.name] = self._resolve(
                f"{reference.subject} v{reference.version}", registered.schema_id, registered.schema
            )
        return RegisteredSchema(
            ref, schema_id, (schema.schema_type or "AVRO").upper(), schema.schema_str, references
        )

    def _call(self, fetch: Callable[[], T], what: str) -> T:
        """`fetch()`, retried while the registry does not answer; UnknownSchema on a 404."""
        delay, attempt = 0.5, 0
        while True:
            attempt += 1
            try:
                return fetch()
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    raise UnknownSchema(
                        f"the registry has no {what}: {exc.error_message}"
                    ) from None
                if exc.http_status_code < 500 and exc.http_status_code not in (408, 429):
                    raise WaxlakeError(
                        f"schema registry at {self.url} refused the request for {what}: HTTP "
                        f"{exc.http_status_code} {exc.error_message}; check "
                        "WAXLAKE_SCHEMA_REGISTRY_CONFIG (credentials), then restart the job"
                    ) from exc
                problem = f"HTTP {exc.http_status_code} {exc.error_message}"
            except Exception as exc:  # transport: refused, reset, timed out, TLS
                problem = f"{type(exc).__name__}: {exc}"
            if STOP.is_set():
                raise WaxlakeError(
                    f"schema registry at {self.url} did not answer for {what} ({problem}) while "
                    "the job was stopping; nothing was lost: restart the job once it is back"
                )
            log.warning(
                "schema registry at %s did not answer for %s (attempt %d, %s); retrying in %.1f s",
                self.url,
                what,
                attempt,
                problem,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
