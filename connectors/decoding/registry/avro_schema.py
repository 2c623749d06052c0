"""Avro writer schemas as waxlake reads them: made self-contained (references inlined), named
types expanded, and mapped to the Arrow types a Delta table holds (README, "Type mapping")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from connectors.decoding.registry.avro_logical import valid_logical, without_invalid_logical
from connectors.decoding.registry.schemas import RegisteredSchema

_PRIMITIVES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


class UnsupportedSchema(Exception):
    """A writer schema with a type no Delta column can hold (named in the message)."""


def writer_schema(registered: RegisteredSchema) -> Any:
    """The schema as one self-contained document: each referenced named type defined inline
    where it is first used (a container file's header cannot refer to other schemas), and
    invalid logical types removed (the Avro spec has readers ignore them)."""
    named = {}
    for reference in _all_references(registered):
        named[reference.ref] = json.loads(reference.text)
    by_name = {}
    for schema in named.values():
        if isinstance(schema, dict) and "name" in schema:
            by_name[_fullname(schema, None)] = schema
    defined: set[str] = set()
    return without_invalid_logical(_inline(json.loads(registered.text), None, by_name, defined))


def _all_references(registered: RegisteredSchema) -> list[RegisteredSchema]:
    found = []
    for reference in registered.references.values():
        found += [*_all_references(reference), reference]
    return found


def _fullname(schema: dict[str, Any], namespace: str | None) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _inline(schema: Any, namespace: str | None, by_name: dict[str, Any], defined: set[str]) -> Any:
    if isinstance(schema, str):
        for candidate in _candidates(schema, namespace):
            if candidate in by_name and candidate not in defined:
                return _inline(by_name[candidate], None, by_name, defined)
        return schema
    if isinstance(schema, list):
        return [_inline(branch, namespace, by_name, defined) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    full, namespace = _scope(schema, namespace)
    if full is not None:
        defined.add(full)
    return _with_children(schema, lambda child, _: _inline(child, namespace, by_name, defined))


def _candidates(name: str, namespace: str | None) -> tuple[str, str]:
    """The full names a reference may mean, in Avro's order: a full name as it is, a short one
    in the enclosing namespace, then in none."""
    return (name if "." in name or not namespace else f"{namespace}.{name}", name)


def _scope(schema: dict[str, Any], namespace: str | None) -> tuple[str | None, str | None]:
    """A named type's full name (None for other types), and the namespace its children's names
    resolve in."""
    if schema.get("type") in ("record", "error", "enum", "fixed") and "name" in schema:
        full = _fullname(schema, namespace)
        return full, full.rpartition(".")[0] or None
    return None, namespace


def _with_children(schema: dict[str, Any], walk: Callable[[Any, str], Any]) -> dict[str, Any]:
    """A copy of `schema` whose nested schemas are `walk(child, step)`: the step is the field's
    name, "[]" into an array's items, "{}" into a map's values, "" into a nested type."""
    out = dict(schema)
    if "fields" in schema:
        out["fields"] = [{**f, "type": walk(f["type"], f["name"])} for f in schema["fields"]]
    for key, step in (("items", "[]"), ("values", "{}")):
        if key in schema:
            out[key] = walk(schema[key], step)
    if isinstance(schema.get("type"), dict | list):
        out["type"] = walk(schema["type"], "")
    return out


def _what(path: str) -> str:
    return f"field {path}" if path else "the value"


def arrow_type(schema: Any, path: str = "") -> pa.DataType:
    """The Arrow (and so Delta) type of an `expanded` Avro schema; UnsupportedSchema where there
    is none."""
    where = _what(path)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        raise UnsupportedSchema(f"{where} refers to unknown type {schema!r}")
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1:
            kinds = ", ".join(b if isinstance(b, str) else str(b.get("type")) for b in branches)
            raise UnsupportedSchema(
                f"{where} is a union of several types ({kinds}), which one Delta "
                'column cannot hold; make it ["null", T] or split it into fields'
            )
        return arrow_type(branches[0], path)
    kind = schema.get("type")
    logical = schema.get("logicalType") if valid_logical(schema) else None
    if isinstance(kind, dict | list):
        return arrow_type(kind, path)
    if kind in ("record", "error"):
        if not schema["fields"]:
            raise UnsupportedSchema(
                f"{where} is a record without fields ({schema.get('name')}), which the Avro "
                "decoders cannot read (nor Parquet store): give it a field, or leave it out"
            )
        return pa.struct(
            [
                pa.field(f["name"], arrow_type(f["type"], f"{path}.{f['name']}".lstrip(".")))
                for f in schema["fields"]
            ]
        )
    if logical == "decimal":
        return _decimal(schema, where)
    if logical == "uuid":
        return pa.string()
    if logical in ("timestamp-millis", "timestamp-micros"):
        return pa.timestamp("us", tz="UTC")
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return pa.timestamp("us")
    if logical == "date":
        return pa.date32()
    if logical in ("time-millis", "time-micros"):
        return pa.int64()  # microseconds since midnight: Delta has no time type
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary()
    if kind == "array":
        return pa.list_(arrow_type(schema["items"], f"{path}[]"))
    if kind == "map":
        return pa.map_(pa.string(), arrow_type(schema["values"], f"{path}{{}}"))
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise UnsupportedSchema(f"{where} has unknown Avro type {kind!r}")


def _decimal(schema: dict[str, Any], where: str) -> pa.DataType:
    precision, scale = schema["precision"], schema.get("scale", 0)  # `valid_logical`
    if precision > 38:
        raise UnsupportedSchema(
            f"{where} is decimal({precision}, {scale}), wider than a Delta decimal can be "
            "(precision up to 38)"
        )
    return pa.decimal128(precision, scale)


def expanded(schema: Any) -> Any:
    """`schema` (self-contained) with every use of a named type by name replaced by the type,
    so that walking it takes no name lookups. Names resolve as Avro says: a full name as it is,
    a short one in the enclosing namespace, then in none. A record inside itself (a linked list,
    a tree) would be a column of endless depth: UnsupportedSchema."""
    names: dict[str, tuple[Any, str | None]] = {}

    def walk(schema: Any, namespace: str | None, inside: frozenset[str], path: str) -> Any:
        if isinstance(schema, str):
            if schema in _PRIMITIVES or schema == "null":
                return schema
            name = next((n for n in _candidates(schema, namespace) if n in names), None)
            if name is None:
                raise UnsupportedSchema(f"{_what(path)} refers to unknown type {schema!r}")
            if name in inside:
                short = name.rpartition(".")[2]
                raise UnsupportedSchema(
                    f"{_what(path)} holds a {short} inside a {short} (a recursive type), which no "
                    "Delta column can hold: cut the recursion (e.g. a fixed depth, or the nested "
                    "part as a string of JSON)"
                )
            definition, space = names[name]
            return walk(definition, space, inside, path)
        if isinstance(schema, list):
            return [walk(branch, namespace, inside, path) for branch in schema]
        if not isinstance(schema, dict):
            return schema
        full, scope = _scope(schema, namespace)
        if full is not None:
            names.setdefault(full, (schema, namespace))
            if schema.get("type") in ("record", "error"):
                inside = inside | {full}

        def child(nested: Any, step: str) -> Any:
            deeper = path + step if step in ("", "[]", "{}") else f"{path}.{step}".lstrip(".")
            return walk(nested, scope, inside, deeper)

        return _with_children(schema, child)

    return walk(schema, None, frozenset(), "")


def as_record(writer: Any) -> Any:
    """`writer` itself if it is a record, else a record of one field `value` of that type: both
    decoders read only records, and a one-field record's binary encoding is exactly its field's."""
    if isinstance(writer, dict) and writer.get("type") in ("record", "error"):
        return writer
    return {
        "type": "record",
        "name": "waxlake_value",
        "fields": [{"name": "value", "type": writer}],
    }


def plain_bytes(writer: Any) -> bool:
    """A value schema of plain `bytes`, which Confluent's serializers write as the bytes
    themselves, with no Avro length before them."""
    return bool(writer == "bytes" or writer == {"type": "bytes"})
