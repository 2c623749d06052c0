"""JSON Schema payloads of one writer schema: the schema gives the Arrow type, and Arrow's JSON
reader parses the whole batch against it (strict types, as the JSON flow does).

Only the types are checked; other constraints (patterns, ranges) were the producer's to check.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from connectors.decoding.json_values import read_json_objects
from connectors.decoding.registry.avro_schema import UnsupportedSchema
from connectors.decoding.registry.schemas import RegisteredSchema

_SCALARS = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
_FORMATS = {"date-time": pa.timestamp("us", tz="UTC"), "date": pa.date32()}


class JsonSchemaDecoder:
    """Decodes the payloads of one JSON Schema into struct arrays."""

    def __init__(self, schema: RegisteredSchema) -> None:
        self._root = json.loads(schema.text)
        self._references = {name: json.loads(ref.text) for name, ref in _flatten(schema).items()}
        target = self._type(self._root, "the value", frozenset({"#"}))
        if not pa.types.is_struct(target):
            target = pa.struct([pa.field("value", target)])
            self._wrapped = True
        else:
            self._wrapped = False
        self.arrow_type: pa.StructType = target

    def decode(self, payloads: pa.BinaryArray) -> pa.StructArray:
        """Raises ValueError if a payload does not fit (the caller bisects)."""
        values = payloads
        if self._wrapped:
            values = pa.array([b'{"value":' + p + b"}" for p in payloads.to_pylist()], pa.binary())
        try:
            return read_json_objects(values, self.arrow_type, unexpected="ignore")
        except pa.ArrowInvalid as exc:
            if "timestamp" not in str(exc):
                raise ValueError(f"value does not fit its JSON Schema: {exc}") from None
        try:  # date-times finer than microseconds (.NET's, Java's): read as text, then cut
            return read_json_objects(values, self.arrow_type, "ignore", stamps_as_text=True)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"value does not fit its JSON Schema: {exc}") from None

    def _resolve(self, ref: str, document: str) -> tuple[Any, str]:
        """The schema `ref` names and the document it is in: a pointer (`#/...`) is read in
        the document the reference was written in, a name (`defs.json`, optionally with a
        pointer after `#`) in that referenced schema."""
        name, _, pointer = ref.partition("#")
        document = name or document
        node: Any = self._root if not document else self._references.get(document)
        for part in pointer.split("/")[1:] if pointer else []:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise UnsupportedSchema(f"JSON Schema reference {ref!r} is not resolvable")
        return node, document

    def _type(
        self, schema: Any, where: str, refs: frozenset[str] = frozenset(), document: str = ""
    ) -> pa.DataType:
        """`refs`: the references being followed, so a type inside itself is an error, not an
        endless walk (no Delta column holds a recursive type). `document`: the referenced
        schema `schema` is part of ("": the root), where its pointers point."""
        if schema is True or schema == {}:
            raise UnsupportedSchema(f"{where} may be any JSON value; give it a type")
        if "$ref" in schema:
            ref = schema["$ref"]
            target, inside = self._resolve(ref, document)
            seen = f"{inside}#{ref.partition('#')[2]}"
            if seen in refs:
                raise UnsupportedSchema(
                    f"{where} holds a {ref} inside a {ref} (a recursive type), which no Delta "
                    "column can hold: cut the recursion (e.g. a fixed depth)"
                )
            return self._type(target, where, refs | {seen}, inside)
        if "allOf" in schema:
            return self._all_of(schema, where, refs, document)
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                branches = [b for b in schema[combinator] if b.get("type") != "null"]
                if len(branches) != 1:
                    raise UnsupportedSchema(
                        f"{where} is one of several types ({combinator}), which one Delta column "
                        "cannot hold"
                    )
                return self._type(branches[0], where, refs, document)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            if len(kinds) != 1:
                raise UnsupportedSchema(
                    f"{where} has several types ({', '.join(kinds)}), which one Delta column "
                    "cannot hold"
                )
            kind = kinds[0]
        if kind is None and "enum" in schema:
            kind = _enum_type(schema["enum"], where)
        if kind is None and "properties" in schema:
            kind = "object"  # what `properties` constrains
        if kind == "object":
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            if not properties and isinstance(extra, dict):
                return pa.map_(pa.string(), self._type(extra, f"{where}{{}}", refs, document))
            return pa.struct(
                [
                    pa.field(n, self._type(s, f"{where}.{n}", refs, document))
                    for n, s in properties.items()
                ]
            )
        if kind == "array":
            return pa.list_(self._type(schema.get("items", {}), f"{where}[]", refs, document))
        if kind == "string" and schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        if kind in _SCALARS:
            return _SCALARS[kind]
        raise UnsupportedSchema(f"{where} has JSON Schema type {kind!r}, which waxlake cannot map")

    def _all_of(
        self, schema: dict[str, Any], where: str, refs: frozenset[str], document: str
    ) -> pa.DataType:
        """`allOf` of objects (a schema composed of others) is one struct of all their fields;
        of one schema, that schema; anything else has no one type."""
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        parts = [*schema["allOf"], *([rest] if "properties" in rest else [])]
        types = [self._type(part, where, refs, document) for part in parts]
        if len(types) == 1:
            return types[0]
        fields: dict[str, pa.Field] = {}
        for kind in types:
            if not pa.types.is_struct(kind):
                raise UnsupportedSchema(f"{where} is all of a {kind} and others, no one type")
            for field in kind:
                if fields.setdefault(field.name, field).type != field.type:
                    raise UnsupportedSchema(
                        f"{where}.{field.name} is {fields[field.name].type} in one part of its "
                        f"allOf and {field.type} in another"
                    )
        return pa.struct(list(fields.values()))


_JSON_KINDS = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))
"""Python's type of a parsed JSON value -> its JSON type (bool before int: it is one)."""


def _enum_type(values: list[Any], where: str) -> str:
    """The JSON type of an `enum` without `type`: its values' one type."""
    kinds = {
        next((kind for cls, kind in _JSON_KINDS if isinstance(v, cls)), "object")
        for v in values
        if v is not None
    }
    if kinds == {"integer", "number"}:
        return "number"
    if len(kinds) != 1 or kinds == {"object"}:
        raise UnsupportedSchema(
            f"{where} is an enum of {sorted(kinds)}, which one column cannot hold"
        )
    return kinds.pop()


def _flatten(schema: RegisteredSchema) -> dict[str, RegisteredSchema]:
    found = {}
    for name, reference in schema.references.items():
        found.update(_flatten(reference))
        found[name] = reference
    return found
