"""The JSON Schema profile: what is refused (keyword and path), what the built types do."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from tfshare.registry import profile
from tfshare.registry.book import shipped
from tfshare.registry.profile import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    ProfileError,
    admission_check,
    build_types,
    normalize,
    parse_document,
)
from tfshare.registry.schema import Schema

Doc = dict[str, Any]
SHIPPED = shipped()
STRING: Doc = {"type": "string"}


def _object(properties: Doc, required: Sequence[str] = ()) -> Doc:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _one(prop: Any, *, required: bool = False) -> Doc:
    """A document whose only property, x, has the schema ``prop``."""
    return _object({"x": prop}, ["x"] if required else [])


def _refused(doc: Doc) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        build_types(doc, name="t.x/1")
    return info.value


def _types(doc: Doc) -> profile.BuiltTypes:
    """Types built from ``doc`` as if read from a file (fresh string objects, not literals)."""
    return build_types(parse_document(json.dumps(doc).encode()), name="t.x/1")


def _variant(tag: str, **properties: Doc) -> Doc:
    return _object({"kind": {"const": tag}, **properties}, ["kind", *properties])


# ---------------------------------------------------------------------------------------------
# Keywords outside the profile: ProfileError naming the keyword and its JSON path

OUTSIDE: list[tuple[str, Doc, str, str]] = [
    ("anyOf", _one({"anyOf": [STRING, {"type": "integer"}]}), "$.properties.x", "anyOf"),
    ("allOf", _one({"allOf": [STRING]}), "$.properties.x", "allOf"),
    ("not", _one({"not": STRING}), "$.properties.x", "not"),
    ("if", _one({"if": STRING, "then": STRING}), "$.properties.x", "if"),
    (
        "patternProperties-root",
        {**_one(STRING), "patternProperties": {"^a$": STRING}},
        "$",
        "patternProperties",
    ),
    (
        "patternProperties-nested",
        _one({**_object({}), "patternProperties": {"^a$": STRING}}),
        "$.properties.x",
        "patternProperties",
    ),
    (
        "additionalProperties-true",
        {**_one(STRING), "additionalProperties": True},
        "$",
        "additionalProperties",
    ),
    (
        "additionalProperties-missing",
        {"type": "object", "properties": {"x": STRING}},
        "$",
        "additionalProperties",
    ),
    (
        "additionalProperties-missing-nested",
        _one({"type": "object", "properties": {}}),
        "$.properties.x",
        "additionalProperties",
    ),
    (
        "additionalProperties-schema",
        _one({"type": "object", "properties": {}, "additionalProperties": STRING}),
        "$.properties.x",
        "additionalProperties",
    ),
    ("type-array", _one({"type": ["string", "null"]}), "$.properties.x", "type"),
    ("type-null", _one({"type": "null"}), "$.properties.x", "type"),
    ("format-email", _one({"type": "string", "format": "email"}), "$.properties.x", "format"),
    ("format-date", _one({"type": "string", "format": "date"}), "$.properties.x", "format"),
    (
        "ref-remote",
        _one({"$ref": "https://example.org/schema.json"}),
        "$.properties.x",
        "$ref",
    ),
    ("ref-pointer", _one({"$ref": "#/properties/y"}), "$.properties.x", "$ref"),
    ("ref-missing-def", _one({"$ref": "#/$defs/nowhere"}), "$.properties.x", "$ref"),
    (
        "ref-in-items",
        _one({"type": "array", "items": {"$ref": "other.json#/x"}}),
        "$.properties.x.items",
        "$ref",
    ),
    ("minProperties", _one({**_object({}), "minProperties": 1}), "$.properties.x", "minProperties"),
    (
        "uniqueItems",
        _one({"type": "array", "items": STRING, "uniqueItems": True}),
        "$.properties.x",
        "uniqueItems",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "keyword"), [c[1:] for c in OUTSIDE], ids=[c[0] for c in OUTSIDE]
)
def test_keyword_outside_the_profile_is_refused_with_keyword_and_path(
    doc: Doc, path: str, keyword: str
) -> None:
    """A keyword the profile does not have is a ProfileError naming it and its JSON path."""
    error = _refused(doc)
    assert (error.path, error.keyword) == (path, keyword)
    assert error.paths == (path,)
    assert path in str(error) and keyword in str(error)


def test_ref_cycle_is_refused() -> None:
    """$defs a -> b -> a is a reference cycle, refused at the $ref that closes it."""
    doc = {
        **_one({"$ref": "#/$defs/a"}),
        "$defs": {
            "a": _object({"y": {"$ref": "#/$defs/b"}}),
            "b": _object({"z": {"$ref": "#/$defs/a"}}),
        },
    }
    error = _refused(doc)
    assert (error.path, error.keyword) == ("$.$defs.b.properties.z", "$ref")
    assert "cycle" in str(error)


def test_ref_to_itself_is_refused() -> None:
    """A definition that is only a $ref to itself is a cycle, not an endless loop."""
    error = _refused({**_one({"$ref": "#/$defs/a"}), "$defs": {"a": {"$ref": "#/$defs/a"}}})
    assert (error.path, error.keyword) == ("$.$defs.a", "$ref")


def test_enum_of_mixed_types_is_refused() -> None:
    """An enum mixing strings and numbers is refused at its enum keyword."""
    error = _refused(_one({"enum": ["a", 1]}))
    assert (error.path, error.keyword) == ("$.properties.x.enum", "enum")


def test_enum_of_numbers_with_type_integer_is_refused() -> None:
    """An enum is a list of strings: "type": "integer" with an enum is refused."""
    error = _refused(_one({"type": "integer", "enum": [1, 2]}))
    assert error.path == "$.properties.x"


def test_duplicate_keys_in_the_json_are_refused() -> None:
    """A key that appears twice in one JSON object is refused, naming the key."""
    with pytest.raises(ProfileError) as info:
        parse_document(b'{"type": "object", "type": "string"}')
    assert info.value.keyword == "type"


def test_nan_is_refused() -> None:
    """NaN is not JSON: refused rather than parsed."""
    with pytest.raises(ProfileError):
        parse_document(b'{"type": "object", "x": NaN}')


def test_ten_megabyte_document_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10 MB document is refused by its size; the JSON parser never runs."""

    def no_parse(*args: object, **kwargs: object) -> object:
        raise AssertionError("parsed a document that is too large")

    monkeypatch.setattr(json, "loads", no_parse)  # the module profile parses with
    data = b'{"description": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    with pytest.raises(ProfileError) as info:
        Schema.from_bytes(data, name="t.x/1")
    assert info.value.keyword == "(document)"
    assert str(MAX_DOCUMENT_BYTES) in str(info.value)


def test_document_nested_ten_thousand_deep_is_refused() -> None:
    """10,000 nested objects: ProfileError, no RecursionError escapes."""
    data = b'{"a":' * 10_000 + b"{}" + b"}" * 10_000
    with pytest.raises(ProfileError) as info:
        Schema.from_bytes(data, name="t.x/1")
    assert info.value.keyword == "(document)"


def test_array_nested_ten_thousand_deep_is_refused() -> None:
    """10,000 nested arrays: ProfileError, no RecursionError escapes."""
    with pytest.raises(ProfileError):
        parse_document(b"[" * 10_000 + b"]" * 10_000)


def test_schema_nested_deeper_than_the_limit_is_refused() -> None:
    """Arrays of arrays more than MAX_DEPTH levels deep are refused as (nesting)."""
    schema: Doc = STRING
    for _ in range(MAX_DEPTH + 1):
        schema = {"type": "array", "items": schema}
    error = _refused(_one(schema))
    assert error.keyword == "(nesting)"


def test_document_that_is_not_an_object_is_refused() -> None:
    """A JSON array is not a schema document."""
    with pytest.raises(ProfileError):
        parse_document(b"[]")


def test_one_of_without_a_common_const_discriminator_is_refused() -> None:
    """Variants without a shared required const property are refused at oneOf."""
    union = {"oneOf": [_object({"a": STRING}, ["a"]), _object({"b": STRING}, ["b"])]}
    error = _refused(_one(union))
    assert (error.path, error.keyword) == ("$.properties.x.oneOf", "oneOf")


def test_one_of_whose_const_is_not_required_is_refused() -> None:
    """A const property that is optional in the variants is no discriminator."""
    union = {"oneOf": [_object({"k": {"const": "a"}}), _object({"k": {"const": "b"}})]}
    assert _refused(_one(union)).keyword == "oneOf"


def test_one_of_with_repeated_discriminator_values_is_refused() -> None:
    """Two variants with the same discriminator value are refused."""
    union = {"oneOf": [_variant("a"), _variant("a", y=STRING)]}
    assert _refused(_one(union)).keyword == "oneOf"


def test_tagged_union_decodes_by_its_discriminator() -> None:
    """A oneOf with a const discriminator builds, and each variant's fields are enforced."""
    union = {"oneOf": [_variant("a", y=STRING), _variant("b", z={"type": "integer"})]}
    types = _types(_one(union, required=True))
    record: Any = msgspec.json.decode(b'{"x": {"kind": "b", "z": 3}}', type=types.publish)
    assert msgspec.json.encode(record) == b'{"x":{"kind":"b","z":3}}'
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"x": {"kind": "a", "z": 3}}', type=types.publish)


def test_required_property_with_a_default_is_refused() -> None:
    """A default on a required property is refused at that property."""
    error = _refused(_one({"type": "string", "default": "a"}, required=True))
    assert (error.path, error.keyword) == ("$.properties.x", "default")


@pytest.mark.parametrize(
    "prop",
    [
        {"type": "string", "maxLength": 2, "default": "abc"},
        {"type": "integer", "default": "3"},
        {"enum": ["a", "b"], "default": "c"},
        {"type": "string", "pattern": "^[a-z]+$", "default": "ABC"},
    ],
    ids=["too-long", "wrong-type", "not-in-enum", "pattern"],
)
def test_default_invalid_for_its_schema_is_refused(prop: Doc) -> None:
    """A default its own property schema would refuse is a ProfileError at that property."""
    error = _refused(_one(prop))
    assert (error.path, error.keyword) == ("$.properties.x", "default")


@pytest.mark.parametrize("name", ["Name", "a-b", "1st", "_x", "é", "a" * 65, ""])
def test_property_name_outside_the_rule_is_refused(name: str) -> None:
    """Property names must match ^[a-z][a-z0-9_]{0,63}$; the path shows the name escaped to
    printable ASCII (a document's control characters never reach a terminal)."""
    error = _refused(_object({name: STRING}))
    shown = "".join(c if c.isascii() and c.isprintable() else f"\\u{ord(c):04x}" for c in name)
    assert (error.path, error.keyword) == (f"$.properties.{shown}", "properties")
    assert error.path.isascii() and error.path.isprintable()


@pytest.mark.parametrize("pattern", ["[a-z]+", "^[a-z]+", "[a-z]+$", "^[a-z]+\\$"])
def test_pattern_not_anchored_is_refused(pattern: str) -> None:
    """A pattern must be anchored ^...$ (an escaped final dollar is not an anchor)."""
    error = _refused(_one({"type": "string", "pattern": pattern}))
    assert (error.path, error.keyword) == ("$.properties.x", "pattern")


def test_pattern_that_is_not_a_regex_is_refused() -> None:
    """An anchored pattern that does not compile is refused at pattern."""
    assert _refused(_one({"type": "string", "pattern": "^[a-$"})).keyword == "pattern"


def test_pattern_together_with_format_is_refused() -> None:
    """format: date-time and pattern cannot be combined."""
    prop = {"type": "string", "pattern": "^a$", "format": "date-time"}
    assert _refused(_one(prop)).keyword == "format"


def test_root_that_is_not_an_object_schema_is_refused() -> None:
    """The root of a document must be "type": "object"."""
    with pytest.raises(ProfileError) as info:
        build_types({"type": "string"}, name="t.x/1")
    assert (info.value.path, info.value.keyword) == ("$", "type")


def test_unknown_schema_dialect_is_refused() -> None:
    """$schema other than draft 2020-12 is refused."""
    doc = {**_one(STRING), "$schema": "http://json-schema.org/draft-07/schema#"}
    assert _refused(doc).keyword == "$schema"


# ---------------------------------------------------------------------------------------------
# Admission check: the built type says what the document says


@pytest.mark.parametrize("name", SHIPPED.names())
def test_shipped_document_passes_admission(name: str) -> None:
    """Each shipped document builds, and its publish type exports the same validation content."""
    schema = SHIPPED.lookup(name)
    assert schema is not None
    doc = schema.document
    types = build_types(doc, name=name)
    exported = msgspec.json.schema(types.publish)
    ours = normalize({k: v for k, v in doc.items() if k != "$defs"}, doc.get("$defs", {}))
    theirs = normalize(exported, exported.get("$defs", {}))
    assert ours == theirs


def test_admission_fails_for_a_type_built_from_another_document() -> None:
    """tf.alert/1's document checked against tf.red_flag/1's type fails admission."""
    alert, red_flag = SHIPPED.lookup("tf.alert/1"), SHIPPED.lookup("tf.red_flag/1")
    assert alert is not None and red_flag is not None
    with pytest.raises(ProfileError) as info:
        admission_check(alert.document, red_flag.types.publish)
    assert info.value.keyword == "(admission)"


def test_admission_catches_a_builder_that_drops_string_constraints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A builder bug that loses minLength/maxLength/pattern is caught by the admission check."""
    monkeypatch.setattr(profile._Builder, "string", lambda self, schema, path: str)
    alert = SHIPPED.lookup("tf.alert/1")
    assert alert is not None
    with pytest.raises(ProfileError) as info:
        build_types(alert.document, name="tf.alert/1")
    assert info.value.keyword == "(admission)"


# ---------------------------------------------------------------------------------------------
# Publish (closed) and receive (tolerant) types

SIMPLE: Doc = _object(
    {
        "a": STRING,
        "b": {"type": "string", "default": "z"},
        "n": {"type": "integer", "default": 3},
        "f": {"type": "boolean", "default": False},
        "l": {"type": "array", "items": STRING, "default": []},
        "e": {"enum": ["AMBER", "RED"], "default": "AMBER"},
        "r": {"type": "integer"},
    },
    ["r"],
)


def test_publish_type_refuses_unknown_fields() -> None:
    """The publish type rejects a property the schema does not declare."""
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"r": 1, "zz": 2}', type=_types(SIMPLE).publish)


def test_receive_type_ignores_unknown_fields() -> None:
    """The receive type ignores a property it does not know (a newer producer's addition)."""
    types = _types(SIMPLE)
    record: Any = msgspec.msgpack.decode(
        msgspec.msgpack.encode({"r": 1, "zz": 2}), type=types.receive
    )
    assert record.r == 1
    assert not hasattr(record, "zz")


def test_absent_optional_property_takes_its_default() -> None:
    """Absent properties with defaults take them, in both types."""
    types = _types(SIMPLE)
    for typ in (types.publish, types.receive):
        record: Any = msgspec.json.decode(b'{"r": 1}', type=typ)
        taken = {name: getattr(record, name) for name in ("b", "n", "f", "l", "e")}
        assert taken == {"b": "z", "n": 3, "f": False, "l": [], "e": "AMBER"}


def test_absent_defaulted_property_is_left_off_the_wire() -> None:
    """A publish record whose optional properties took their defaults encodes none of them."""
    record: Any = msgspec.json.decode(b'{"r": 1}', type=_types(SIMPLE).publish)
    assert msgspec.json.encode(record) == b'{"r":1}'
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(record)) == {"r": 1}


def test_property_given_equal_to_its_default_is_left_off_the_wire() -> None:
    """A value spelled out but equal to its default is not in the body (same record, same
    bytes): Schema.to_body evens out msgspec's identity-based omit_defaults."""
    schema = Schema.from_document(SIMPLE, name="t.simple/1")
    spelled = schema.from_json(b'{"r": 1, "b": "z", "n": 3, "f": false, "l": [], "e": "AMBER"}')
    implied = schema.from_json(b'{"r": 1}')
    assert spelled == implied
    assert schema.to_body(spelled) == schema.to_body(implied)
    assert msgspec.msgpack.decode(schema.to_body(spelled)) == {"r": 1}


def test_non_empty_array_default_is_refused() -> None:
    """Only scalar and [] defaults are in the profile (msgspec cannot export a factory)."""
    doc = _one({"type": "array", "items": STRING, "default": ["q"]})
    with pytest.raises(ProfileError) as info:
        _types(doc)
    assert (info.value.keyword, info.value.path) == ("default", "$.properties.x")


def test_object_default_is_refused() -> None:
    """An object default is outside the profile (it could not stay a typed record)."""
    inner = {**_object({"z": {"type": "boolean", "default": False}}), "default": {}}
    with pytest.raises(ProfileError) as info:
        _types(_one(inner))
    assert info.value.keyword == "default"


def test_optional_property_without_default_stays_unset() -> None:
    """An absent optional property without default is msgspec.UNSET and is not encoded."""
    types = _types(SIMPLE)
    for typ in (types.publish, types.receive):
        record: Any = msgspec.json.decode(b'{"r": 1}', type=typ)
        assert record.a is msgspec.UNSET
        assert b'"a"' not in msgspec.json.encode(record)


def test_optional_property_refuses_null() -> None:
    """Absent is not null: an optional property given null is refused."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"r": 1, "a": null}', type=_types(SIMPLE).publish)


DATES: Doc = _one({"type": "string", "format": "date-time"}, required=True)


@pytest.mark.parametrize(
    "value", ["2026-11-21T18:00:00Z", "2026-11-21T19:00:00.318+01:00", "2026-11-21T18:00:00-05:30"]
)
def test_date_time_accepts_rfc3339(value: str) -> None:
    """RFC 3339 date-times with Z or an offset, with or without fractions, are accepted."""
    record: Any = msgspec.json.decode(json.dumps({"x": value}), type=_types(DATES).publish)
    assert record.x == value


@pytest.mark.parametrize(
    "value",
    ["2026-11-21T18:00:00Z\n", "2026-11-21T18:00:00", "2026-11-21", "2026-11-21 18:00:00Z"],
    ids=["trailing-newline", "no-offset", "date-only", "space"],
)
def test_date_time_refuses_other_strings(value: str) -> None:
    """A trailing newline, a missing offset or a date alone is not an RFC 3339 date-time."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps({"x": value}), type=_types(DATES).publish)


def test_anchored_pattern_refuses_a_trailing_newline() -> None:
    """A pattern's final $ means end of string, as in ECMA-262 (not Python's before-newline)."""
    types = _types(_one({"type": "string", "pattern": "^[a-z]+$"}, required=True))
    record: Any = msgspec.json.decode(b'{"x": "abc"}', type=types.publish)
    assert record.x == "abc"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"x": "abc\\n"}', type=types.publish)


KEYWORDS: Doc = _object(
    {"from": STRING, "class": {"type": "integer", "default": 3}, "import": STRING}, ["from"]
)


def test_keyword_property_names_keep_their_wire_name() -> None:
    """Properties named "from"/"class" decode, and encode under their own names."""
    types = _types(KEYWORDS)
    record: Any = msgspec.json.decode(b'{"from": "a", "class": 4}', type=types.publish)
    assert record.from_ == "a"
    assert record.class_ == 4
    assert msgspec.json.encode(record) == b'{"from":"a","class":4}'
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(record)) == {"from": "a", "class": 4}
    received: Any = msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=types.receive)
    assert received.from_ == "a"


def test_keyword_property_names_are_exported_under_their_wire_name() -> None:
    """The built type's JSON Schema lists "from", not the Python attribute "from_"."""
    exported = msgspec.json.schema(_types(KEYWORDS).publish)
    definition = next(iter(exported["$defs"].values()))
    assert set(definition["properties"]) == {"from", "class", "import"}
    assert definition["required"] == ["from"]


def test_keyword_property_name_is_required_by_its_wire_name() -> None:
    """A body without "from" is refused, and "from_" is an unknown field."""
    types = _types(KEYWORDS)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"from_": "a"}', type=types.publish)
