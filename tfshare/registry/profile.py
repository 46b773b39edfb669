"""The JSON Schema profile of docs/SCHEMA-PROFILE.md, turned into msgspec types at run time.

Owns: parsing a schema document safely (size, depth, duplicate keys), checking that it stays
inside the profile (every refusal names the keyword and its JSON path), building two msgspec
types from it -- a closed *publish* type (unknown fields refused, defaults left off the wire)
and a tolerant *receive* type (unknown fields ignored) -- and the admission check that the
built type's own JSON Schema says exactly what the document says.

Never: fall back to an untyped dict; touch disk or network.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from tfshare.errors import ValidationError
from tfshare.registry.regex import PatternError, check_pattern, python_form

MAX_DOCUMENT_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 32
MAX_PROPERTIES: Final = 256
MAX_ENUM: Final = 1024
# RFC 3339 date-time, what "format": "date-time" means in this profile: ASCII digits only,
# fields in range (day 31 is not checked against the month). Strings stay strings on the wire
# (no msgpack timestamp extension), so every peer reads them the same way.
DATE_TIME_PATTERN: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
PROPERTY_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
DEF_REF: Final = re.compile(r"^#/\$defs/([A-Za-z0-9_.-]{1,64})\Z")
SCHEMA_URI: Final = "https://json-schema.org/draft/2020-12/schema"

ANNOTATIONS: Final = frozenset({"title", "description", "examples", "$comment"})
ROOT_KEYWORDS: Final = frozenset({"$schema", "$id", "$defs"})
KEYWORDS_BY_TYPE: Final = {
    "object": frozenset({"type", "properties", "required", "additionalProperties"}),
    "string": frozenset({"type", "minLength", "maxLength", "pattern", "format"}),
    "integer": frozenset({"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset({"type"}),
    "array": frozenset({"type", "items", "minItems", "maxItems"}),
}
_BOUNDS: Final = {
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
}


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c.isascii() else f"\\u{ord(c):04x}" for c in text)


class ProfileError(ValidationError):
    """A schema document outside the profile; ``path`` and ``keyword`` say where."""

    def __init__(self, path: str, keyword: str, why: str) -> None:
        # Paths and keywords can come from the submitted document: never let its control
        # characters (terminal escape sequences) reach a screen.
        path, keyword = _printable(path), _printable(keyword)
        super().__init__(
            f"schema {path}: {keyword}: {why}",
            hint="see docs/SCHEMA-PROFILE.md for what a tfshare schema may contain",
            paths=(path,),
        )
        self.path = path
        self.keyword = keyword


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProfileError("$", key, "a key appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ProfileError("$", name, "NaN and Infinity are not JSON")


def _portable_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ProfileError("$", text[:20], "a number too large for every JSON implementation")
    return value


def _portable_int(text: str) -> int:
    value = int(text)
    if abs(value) > 2**53 - 1:
        raise ProfileError("$", text[:20], "an integer outside +-(2^53-1), not portable")
    return value


def parse_document(data: bytes) -> dict[str, Any]:
    """Parse a schema document: at most 1 MiB, strict JSON, no duplicate keys, an object."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ProfileError("$", "(document)", f"larger than the {MAX_DOCUMENT_BYTES}-byte limit")
    try:
        doc = json.loads(
            data,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=_portable_float,
            parse_int=_portable_int,
        )
    except RecursionError:
        raise ProfileError("$", "(document)", "nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError("$", "(document)", f"not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ProfileError("$", "(document)", "a schema document is a JSON object")
    return doc


python_pattern = python_form  # the Python form of a checked pattern (see regex.py)


def _struct_name(path_name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", path_name)
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or "Record"


@dataclass(frozen=True)
class BuiltTypes:
    """The two msgspec types of one schema document."""

    publish: type[msgspec.Struct]
    receive: type[msgspec.Struct]


class _Builder:
    """Walks a document once per flavour (publish or receive), building msgspec types."""

    def __init__(self, doc: dict[str, Any], *, name: str, strict: bool) -> None:
        defs = doc.get("$defs", {})
        if not isinstance(defs, dict):
            raise ProfileError("$.$defs", "$defs", "must be an object of named schemas")
        self.defs: dict[str, Any] = defs
        self.name = name
        self.strict = strict
        self.def_types: dict[str, Any] = {}
        self.variants: dict[tuple[str, str, str], type[msgspec.Struct]] = {}
        self.resolving: list[str] = []
        self.struct_names: set[str] = set()

    # -- entry points ------------------------------------------------------------------------

    def root(self, doc: dict[str, Any]) -> type[msgspec.Struct]:
        for key in doc:
            if key in ROOT_KEYWORDS:
                continue
            if key not in ANNOTATIONS and key not in KEYWORDS_BY_TYPE["object"]:
                raise ProfileError("$", key, "not allowed at the root of a schema")
        if "$schema" in doc and doc["$schema"] != SCHEMA_URI:
            raise ProfileError("$", "$schema", f"must be {SCHEMA_URI!r}")
        if "$id" in doc and not isinstance(doc["$id"], str):
            raise ProfileError("$", "$id", "must be a string")
        body = {k: v for k, v in doc.items() if k not in ROOT_KEYWORDS}
        if body.get("type") != "object":
            raise ProfileError("$", "type", 'the root must be "type": "object"')
        built = self.struct(body, "$", _struct_name(self.name), depth=0)
        # Definitions nobody references are part of the document others read: check them too.
        for name in self.defs:
            if name not in self.def_types and not any(
                k[0] == f"$.$defs.{name}" for k in self.variants
            ):
                self.ref(f"#/$defs/{name}", f"$.$defs.{name}", depth=0)
        return built

    # -- schemas -----------------------------------------------------------------------------

    def type_of(self, schema: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProfileError(path, "(nesting)", f"deeper than {MAX_DEPTH} levels")
        if not isinstance(schema, dict):
            raise ProfileError(path, "(schema)", "a schema must be a JSON object")
        for key in schema:
            if key == "default":
                continue  # checked by the property that carries it
            if key in ANNOTATIONS:
                continue
            if key in ("$ref", "oneOf", "enum", "const"):
                continue
            if key not in set().union(*KEYWORDS_BY_TYPE.values()):
                raise ProfileError(path, key, "not in the tfshare profile")
        if "$ref" in schema:
            self._only(schema, path, {"$ref"}, "$ref")
            return self.ref(schema["$ref"], path, depth)
        if "oneOf" in schema:
            self._only(schema, path, {"oneOf"}, "oneOf")
            return self.union(schema["oneOf"], f"{path}.oneOf", depth)
        if "enum" in schema:
            self._only(schema, path, {"enum", "type"}, "enum")
            if schema.get("type", "string") != "string":
                raise ProfileError(path, "type", "an enum is a list of strings")
            return self.enum(schema["enum"], f"{path}.enum")
        if "const" in schema:
            self._only(schema, path, {"const"}, "const")
            if not isinstance(schema["const"], str):
                raise ProfileError(path, "const", "must be a string")
            return Literal[schema["const"]]
        kind = schema.get("type")
        if not isinstance(kind, str) or kind not in KEYWORDS_BY_TYPE:
            raise ProfileError(path, "type", "must be one of " + ", ".join(KEYWORDS_BY_TYPE))
        self._only(schema, path, KEYWORDS_BY_TYPE[kind], f'"type": "{kind}"')
        if kind == "object":
            return self.struct(schema, path, _struct_name(path), depth)
        if kind == "string":
            return self.string(schema, path)
        if kind in ("integer", "number"):
            return self.number(schema, path, kind)
        if kind == "boolean":
            return bool
        return self.array(schema, path, depth)

    def _only(
        self, schema: dict[str, Any], path: str, allowed: set[str] | frozenset[str], what: str
    ) -> None:
        for key in schema:
            if key not in allowed and key not in ANNOTATIONS and key != "default":
                raise ProfileError(path, key, f"cannot be combined with {what}")

    def ref(self, ref: Any, path: str, depth: int) -> Any:
        match = DEF_REF.match(ref) if isinstance(ref, str) else None
        if match is None:
            raise ProfileError(path, "$ref", 'only local references "#/$defs/<name>" are allowed')
        name = match.group(1)
        if name not in self.defs:
            raise ProfileError(path, "$ref", f"no definition {name!r} in $defs")
        if name in self.def_types:
            return self.def_types[name]
        if name in self.resolving:
            raise ProfileError(path, "$ref", f"reference cycle through {name!r}")
        self.resolving.append(name)
        schema = self.defs[name]
        def_path = f"$.$defs.{name}"
        if isinstance(schema, dict) and schema.get("type") == "object":
            built: Any = self.struct(schema, def_path, _struct_name(name), depth + 1)
        else:
            built = self.type_of(schema, def_path, depth + 1)
        self.resolving.pop()
        self.def_types[name] = built
        return built

    def enum(self, values: Any, path: str) -> Any:
        if not isinstance(values, list) or not values or len(values) > MAX_ENUM:
            raise ProfileError(path, "enum", f"must be a list of 1 to {MAX_ENUM} strings")
        if not all(isinstance(v, str) for v in values):
            raise ProfileError(path, "enum", "every value must be a string (no mixed types)")
        if len(set(values)) != len(values):
            raise ProfileError(path, "enum", "values must be unique")
        return Literal[tuple(values)]

    def string(self, schema: dict[str, Any], path: str) -> Any:
        meta: dict[str, Any] = {}
        for key, arg in (("minLength", "min_length"), ("maxLength", "max_length")):
            if key in schema:
                meta[arg] = self._count(schema[key], path, key)
        if "pattern" in schema and "format" in schema:
            raise ProfileError(path, "format", "cannot be combined with pattern")
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise ProfileError(path, "pattern", "must be a string")
            try:
                check_pattern(pattern)
                re.compile(python_form(pattern))
            except (PatternError, re.error) as exc:
                raise ProfileError(path, "pattern", str(exc)) from None
            meta["pattern"] = python_form(pattern)
        if "format" in schema:
            if schema["format"] != "date-time":
                raise ProfileError(path, "format", 'only "date-time" is in the profile')
            meta["pattern"] = DATE_TIME_PATTERN
        return Annotated[str, msgspec.Meta(**meta)] if meta else str

    def number(self, schema: dict[str, Any], path: str, kind: str) -> Any:
        meta: dict[str, Any] = {}
        for key, arg in _BOUNDS.items():
            if key not in schema:
                continue
            value = schema[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProfileError(path, key, "must be a number")
            if kind == "integer" and not isinstance(value, int):
                raise ProfileError(path, key, "an integer's bound must be an integer")
            meta[arg] = value
        base: Any = int if kind == "integer" else float
        return Annotated[base, msgspec.Meta(**meta)] if meta else base

    def array(self, schema: dict[str, Any], path: str, depth: int) -> Any:
        if "items" not in schema:
            raise ProfileError(path, "items", "an array needs an items schema")
        item = self.type_of(schema["items"], f"{path}.items", depth + 1)
        meta: dict[str, Any] = {}
        for key, arg in (("minItems", "min_length"), ("maxItems", "max_length")):
            if key in schema:
                meta[arg] = self._count(schema[key], path, key)
        return Annotated[list[item], msgspec.Meta(**meta)] if meta else list[item]  # type: ignore[valid-type]

    def _count(self, value: Any, path: str, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProfileError(path, key, "must be a non-negative integer")
        return value

    def union(self, variants: Any, path: str, depth: int) -> Any:
        if not isinstance(variants, list) or len(variants) < 2:
            raise ProfileError(path, "oneOf", "a tagged union lists at least two variants")
        resolved = []
        for i, variant in enumerate(variants):
            vpath = f"{path}[{i}]"
            target, tpath = variant, vpath
            if isinstance(variant, dict) and "$ref" in variant:
                match = DEF_REF.match(str(variant["$ref"]))
                if match is None or match.group(1) not in self.defs:
                    raise ProfileError(vpath, "$ref", "must name a definition in $defs")
                target, tpath = self.defs[match.group(1)], f"$.$defs.{match.group(1)}"
            if not isinstance(target, dict) or target.get("type") != "object":
                raise ProfileError(vpath, "oneOf", "every variant must be an object schema")
            resolved.append((target, tpath))
        field = self._discriminator([t for t, _ in resolved], path)
        members = []
        for target, tpath in resolved:
            tag = target["properties"][field]["const"]
            key = (tpath, field, tag)
            if key not in self.variants:  # a variant used in several unions is built once
                self.variants[key] = self.struct(
                    target, tpath, _struct_name(tpath), depth + 1, tag=(field, tag)
                )
            members.append(self.variants[key])
        return Union[tuple(members)]  # noqa: UP007 - built at run time

    def _discriminator(self, variants: list[dict[str, Any]], path: str) -> str:
        def consts(v: dict[str, Any]) -> set[str]:
            props = v.get("properties", {})
            required = set(v.get("required", []))
            return {
                name
                for name, s in props.items()
                if isinstance(s, dict) and isinstance(s.get("const"), str) and name in required
            }

        common = set.intersection(*(consts(v) for v in variants))
        if len(common) != 1:
            raise ProfileError(
                path, "oneOf", "variants need exactly one common required const property"
            )
        field = common.pop()
        tags = [v["properties"][field]["const"] for v in variants]
        if len(set(tags)) != len(tags):
            raise ProfileError(path, "oneOf", f"discriminator {field!r} values must differ")
        return field

    def struct(
        self,
        schema: dict[str, Any],
        path: str,
        name: str,
        depth: int,
        tag: tuple[str, str] | None = None,
    ) -> type[msgspec.Struct]:
        self._only(schema, path, KEYWORDS_BY_TYPE["object"], '"type": "object"')
        if schema.get("additionalProperties") is not False:
            raise ProfileError(path, "additionalProperties", "must be false for every object")
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict) or len(properties) > MAX_PROPERTIES:
            raise ProfileError(path, "properties", f"an object of at most {MAX_PROPERTIES}")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ProfileError(path, "required", "must be a list of property names")
        if len(set(required)) != len(required):
            raise ProfileError(path, "required", "names must be unique")
        for name_ in required:
            if name_ not in properties:
                raise ProfileError(path, "required", f"{name_!r} is not a property")
        fields: list[Any] = []
        for prop, sub in properties.items():
            ppath = f"{path}.properties.{prop}"
            if not PROPERTY_NAME.match(prop):
                raise ProfileError(ppath, "properties", "names match ^[a-z][a-z0-9_]{0,63}$")
            if tag is not None and prop == tag[0]:
                # The discriminator is the Struct's tag, not a field: exactly a const.
                if not isinstance(sub, dict) or set(sub) - ANNOTATIONS != {"const"}:
                    raise ProfileError(ppath, "const", 'a discriminator is just {"const": ...}')
                continue
            typ = self.type_of(sub, ppath, depth + 1)
            attr = f"{prop}_" if keyword.iskeyword(prop) else prop
            wire = {"name": prop} if attr != prop else {}
            if prop in required:
                if isinstance(sub, dict) and "default" in sub:
                    raise ProfileError(ppath, "default", "a required property has no default")
                fields.append((attr, typ, msgspec.field(**wire)) if wire else (attr, typ))
            elif isinstance(sub, dict) and "default" in sub:
                default = self._default(sub["default"], typ, ppath)
                fields.append((attr, typ, msgspec.field(**default, **wire)))
            else:
                fields.append(
                    (attr, msgspec.UnsetType | typ, msgspec.field(default=msgspec.UNSET, **wire))
                )
        unique = name
        while unique in self.struct_names:  # msgspec's exported $defs are keyed by name
            unique = f"{name}_{len(self.struct_names)}"
        self.struct_names.add(unique)
        return msgspec.defstruct(
            unique,
            fields,
            kw_only=True,
            forbid_unknown_fields=self.strict,
            omit_defaults=self.strict,
            tag_field=tag[0] if tag else None,
            tag=tag[1] if tag else None,
            module="tfshare.registry.types",
        )

    def _default(self, value: Any, typ: Any, path: str) -> dict[str, Any]:
        # Defaults are scalars or the empty array: msgspec neither exports a default factory
        # nor types a dict default, so anything else could not pass admission faithfully.
        if isinstance(value, dict) or (isinstance(value, list) and value):
            raise ProfileError(path, "default", "only a string, number, boolean or [] default")
        try:
            msgspec.convert(value, typ)
        except msgspec.ValidationError:
            raise ProfileError(path, "default", "is not valid for the property's schema") from None
        return {"default": value}


def build_types(doc: dict[str, Any], *, name: str) -> BuiltTypes:
    """Check ``doc`` against the profile and build its publish and receive types."""
    publish = _Builder(doc, name=name, strict=True).root(doc)
    receive = _Builder(doc, name=name, strict=False).root(doc)
    admission_check(doc, publish)
    return BuiltTypes(publish=publish, receive=receive)


# ---------------------------------------------------------------------------------------------
# Admission: the built type's exported schema must say what the document says


MAX_NORMALIZED_NODES: Final = 200_000


def normalize(schema: Any, defs: dict[str, Any]) -> Any:
    """The validation content of a schema: references inlined, annotations dropped,
    ``const`` as a one-value ``enum``, enums sorted, ``oneOf`` as ``anyOf``, ``format:
    date-time`` and patterns in their Python form, ``required`` sorted.

    Inlining can grow exponentially (a definition used twice by one used twice ...), so the
    work is bounded: a schema that expands past MAX_NORMALIZED_NODES is refused.
    """
    budget = [MAX_NORMALIZED_NODES]

    def walk(node: Any, seen: tuple[str, ...], top: bool) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ProfileError("$", "(size)", "the schema expands to too many nodes")
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            match = DEF_REF.match(str(node["$ref"]))
            if match is None or match.group(1) in seen:
                return {"$ref": node["$ref"]}
            name = match.group(1)
            resolved = walk(defs.get(name, {}), (*seen, name), False)
            if "default" in node and isinstance(resolved, dict):
                resolved = {**resolved, "default": node["default"]}  # the property's default
            return resolved
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ANNOTATIONS or key == "discriminator" or (top and key in ROOT_KEYWORDS):
                continue
            if key == "properties":
                out[key] = {k: walk(v, seen, False) for k, v in value.items()}
            elif key == "items":
                out[key] = walk(value, seen, False)
            elif key in ("oneOf", "anyOf"):
                out["anyOf"] = [walk(v, seen, False) for v in value]
            elif key == "const":
                out["enum"] = [value]
            elif key == "enum":
                out[key] = sorted(value)  # order does not change what validates
            elif key == "format" and value == "date-time":
                out["pattern"] = DATE_TIME_PATTERN
            elif key == "pattern":
                out[key] = python_pattern(value)
            elif key == "required":
                out[key] = sorted(value)
            else:
                out[key] = value
        if "enum" in out and out.get("type") == "string":
            del out["type"]
        if out.get("type") == "object":
            out.setdefault("properties", {})
            out.setdefault("required", [])
        return out

    return walk(schema, (), True)


def admission_check(doc: dict[str, Any], built: type[msgspec.Struct]) -> None:
    """Refuse a document whose built type would validate differently from what it says."""
    exported = msgspec.json.schema(built)
    ours = normalize(doc, doc.get("$defs", {}))
    theirs = normalize(exported, exported.get("$defs", {}))
    if ours != theirs:
        raise ProfileError(
            "$", "(admission)", "the built type does not validate exactly what the schema says"
        )
