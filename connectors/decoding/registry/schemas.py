"""Schemas fetched from the registry by id or GUID, cached, with their references resolved.

A registry that does not answer is retried with backoff for as long as it takes (and logged):
a transient outage must never turn good records into dead letters. Only an answer that the
schema does not exist makes records undecodable.

A Protobuf schema registered as .proto text (as Java producers register it) comes back as text
unless asked for `format=serialized`, as confluent-kafka's ProtobufDeserializer asks for it; so
such a schema is fetched again that way. Asking for it always is no option: Apicurio answers
HTTP 500 for a schema registered serialized, and its serialized answer (raw, not base64) turns
every byte above 0x7f into U+FFFD, so only an all-ASCII one is taken.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

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


class _Refused(Exception):
    """The registry answered a request for a schema serialized, but not with it."""


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
        self._config = {**_CLIENT_DEFAULTS, **config, "url": url}
        self._serialized_client: Any = None  # for format=serialized: the cache ignores formats
        try:
            self._client = SchemaRegistryClient(self._config)
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
            what = f"schema id {schema_id}"
            schema = self._call(lambda: self._client.get_schema(schema_id), what)
            text = self._text(schema, lambda c: c.get_schema(schema_id, fmt="serialized"), what)
            self._by_id[schema_id] = self._resolve(f"id {schema_id}", schema_id, schema, text)
        return self._by_id[schema_id]

    def by_guid(self, guid: str) -> RegisteredSchema:
        if guid not in self._by_guid:
            what = f"schema {guid}"
            schema = self._call(lambda: self._client.get_schema_by_guid(guid), what)
            text = self._text(schema, lambda c: c.get_schema_by_guid(guid, fmt="serialized"), what)
            self._by_guid[guid] = self._resolve(f"guid {guid}", None, schema, text)
        return self._by_guid[guid]

    def _resolve(self, ref: str, schema_id: int | None, schema: Any, text: str) -> RegisteredSchema:
        references = {}
        for reference in schema.references or []:
            what = f"reference {reference.name}"
            subject, version = reference.subject, reference.version
            registered = self._call(
                functools.partial(self._client.get_version, subject, version), what
            )
            serialized = self._text(
                registered.schema,
                functools.partial(_version_serialized, subject, version),
                what,
            )
            references[reference.name] = self._resolve(
                f"{subject} v{version}", registered.schema_id, registered.schema, serialized
            )
        kind = (schema.schema_type or "AVRO").upper()
        return RegisteredSchema(ref, schema_id, kind, text, references)

    def _text(self, schema: Any, serialized: Callable[[Any], Any], what: str) -> str:
        """The schema's text; for Protobuf given as .proto text, the serialized descriptor
        (base64) if the registry serves it, else the text (an UnsupportedSchema later)."""
        text = str(schema.schema_str)
        if (schema.schema_type or "").upper() != "PROTOBUF" or _descriptor(text) is not None:
            return text
        if self._serialized_client is None:
            self._serialized_client = SchemaRegistryClient(self._config)
        try:
            answer = self._call(
                lambda: serialized(self._serialized_client), f"{what} serialized", refusal=True
            )
        except _Refused as exc:
            log.warning("%s is .proto text and the registry refused it serialized: %s", what, exc)
            return text
        served = str(answer.schema_str)
        if _descriptor(served) is not None:
            return served
        if served.isascii() and _parses(served.encode("ascii")):  # Apicurio's raw answer
            return base64.b64encode(served.encode("ascii")).decode("ascii")
        return text

    def _call(self, fetch: Callable[[], T], what: str, refusal: bool = False) -> T:
        """`fetch()`, retried while the registry does not answer; UnknownSchema on a 404. With
        `refusal`, an answer that is not the schema (a 4xx, a 500 thrice) is _Refused."""
        delay, attempt = 0.5, 0
        while True:
            attempt += 1
            try:
                return fetch()
            except SchemaRegistryError as exc:
                code = exc.http_status_code
                gone = code < 500 and code not in (408, 429)
                refused = gone or (code == 500 and attempt >= 3)
                if refusal and refused:
                    raise _Refused(f"HTTP {code} {exc.error_message}") from None
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


def _version_serialized(subject: str, version: int, client: Any) -> Any:
    return client.get_version(subject, version, fmt="serialized").schema


def _descriptor(text: str) -> bytes | None:
    """The bytes of a base64 serialized descriptor, as Confluent's registry gives them."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if _parses(data) else None


def _parses(data: bytes) -> bool:
    try:
        descriptor_pb2.FileDescriptorProto().ParseFromString(data)
    except DecodeError:
        return False
    return True
