"""Schema: one registered version -- name, fingerprint, strict publish, tolerant receive.

Also the shipped message types (formerly tests/unit/test_messages.py): examples validate,
errors name every failing path and never echo a value, each grading system's codes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
import rfc8785
from tfkit import EXAMPLES, REPO, example_dict

from tfshare.encoding import DECODE_ERRORS, safe_reason
from tfshare.errors import ExitCode, ValidationError
from tfshare.registry.book import Registry, shipped
from tfshare.registry.profile import ProfileError
from tfshare.registry.schema import Schema, fingerprint_of, split_name

SHIPPED = shipped()
SHIPPED_FILES = sorted((REPO / "schemas").glob("*/*.json"))
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
EXAMPLE_SCHEMA = {
    "alert": "tf.alert/1",
    "red_flag": "tf.red_flag/1",
    "tip_summary": "tf.tip_summary/1",
}
MARKER = "Victim-Jane-Doe-7731"


def _schema(name: str) -> Schema:
    schema = SHIPPED.lookup(name)
    assert schema is not None
    return schema


ALERT = _schema("tf.alert/1")


def _alert_with(**changes: object) -> bytes:
    value = example_dict("tf.alert/1")
    value.update(changes)
    return json.dumps(value).encode()


def _alert_error(body: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        ALERT.from_json(body)
    return info.value


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def _no_marker(error: ValidationError) -> None:
    for text in (str(error), error.hint, repr(error), *error.paths):
        assert MARKER not in text


# ---------------------------------------------------------------------------------------------
# Names and identity


def test_name_comes_from_id() -> None:
    """from_document takes subject/version from $id urn:tfshare:schema:<subject>/<version>."""
    schema = Schema.from_document(copy.deepcopy(ALERT.document))
    assert (schema.name, schema.subject, schema.version) == ("tf.alert/1", "tf.alert", 1)


def test_given_name_that_matches_id_is_accepted() -> None:
    """A name equal to the one in $id is fine."""
    assert Schema.from_document(ALERT.document, name="tf.alert/1").name == "tf.alert/1"


def test_id_that_disagrees_with_the_name_is_refused() -> None:
    """$id tf.alert/1 registered as tf.alert/2 is a ProfileError at $id."""
    with pytest.raises(ProfileError) as info:
        Schema.from_document(ALERT.document, name="tf.alert/2")
    assert (info.value.path, info.value.keyword) == ("$", "$id")


def test_document_without_id_or_name_is_refused() -> None:
    """Without $id and without a name there is nothing to register it as."""
    doc = {k: v for k, v in ALERT.document.items() if k != "$id"}
    with pytest.raises(ProfileError) as info:
        Schema.from_document(doc)
    assert info.value.keyword == "$id"


def test_document_without_id_takes_the_given_name() -> None:
    """A draft without $id can still be built under an explicit name."""
    doc = {k: v for k, v in ALERT.document.items() if k != "$id"}
    assert Schema.from_document(doc, name="draft/1").name == "draft/1"


@pytest.mark.parametrize("name", ["tf.alert", "tf.alert/0", "Tf.alert/1", "tf.alert/1/2", "/1"])
def test_malformed_schema_name_is_refused(name: str) -> None:
    """Names are <subject>/<version> with a lower-case subject and a version from 1."""
    with pytest.raises(ValidationError):
        split_name(name)


def test_fingerprint_is_sha256_of_rfc8785() -> None:
    """The fingerprint is SHA-256 of the document's RFC 8785 canonical JSON."""
    expected = hashlib.sha256(rfc8785.dumps(ALERT.document)).digest()
    assert ALERT.fingerprint == expected == fingerprint_of(ALERT.document)
    assert ALERT.canonical == rfc8785.dumps(ALERT.document)


def test_fingerprint_ignores_key_order_and_whitespace() -> None:
    """The same content written with other key order and spacing has the same fingerprint."""
    pretty = json.dumps(ALERT.document, indent=4).encode()
    compact = json.dumps(_reordered(ALERT.document), separators=(",", ":")).encode()
    assert pretty != compact
    assert Schema.from_bytes(pretty).fingerprint == ALERT.fingerprint
    assert Schema.from_bytes(compact).fingerprint == ALERT.fingerprint


def test_fingerprint_changes_with_any_content() -> None:
    """Editing only a description gives another fingerprint."""
    doc = copy.deepcopy(ALERT.document)
    doc["description"] += "!"
    assert Schema.from_document(doc).fingerprint != ALERT.fingerprint


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.parent.name)
def test_fingerprint_is_stable_across_loads(path: Path) -> None:
    """Loading a shipped file again gives the fingerprint shipped() computed."""
    name = f"{path.parent.name}/{path.stem}"
    assert Schema.from_bytes(path.read_bytes()).fingerprint == _schema(name).fingerprint
    assert len(_schema(name).fingerprint) == 32


def test_fingerprints_differ_between_types() -> None:
    """No two shipped types share a fingerprint."""
    fingerprints = {_schema(name).fingerprint for name in SHIPPED.names()}
    assert len(fingerprints) == len(SHIPPED.names())


def test_shipped_names() -> None:
    """The four shipped types are listed by name, and nothing else."""
    assert SHIPPED.names() == ["tf.alert/1", "tf.receipt/1", "tf.red_flag/1", "tf.tip_summary/1"]


def test_lookup_unknown_is_none() -> None:
    """An unknown name and an unknown fingerprint have no schema."""
    assert SHIPPED.lookup("tf.alert/2") is None
    assert SHIPPED.by_fingerprint(bytes(32)) is None


def test_lookup_by_fingerprint() -> None:
    """Each shipped schema is found by its fingerprint."""
    for name in SHIPPED.names():
        assert SHIPPED.by_fingerprint(_schema(name).fingerprint) is _schema(name)


def test_registry_with_schema_leaves_the_original_unchanged() -> None:
    """with_schema returns a new Registry; shipped() still knows only its four."""
    doc = copy.deepcopy(ALERT.document)
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    extended: Registry = SHIPPED.with_schema(Schema.from_document(doc))
    assert [s.version for s in extended.history("tf.alert")] == [1, 2]
    assert SHIPPED.lookup("tf.alert/2") is None


# ---------------------------------------------------------------------------------------------
# Examples


@pytest.mark.parametrize("name", SHIPPED.names())
def test_every_shipped_example_validates(name: str) -> None:
    """Each example in a shipped document decodes strictly with its own schema."""
    schema = _schema(name)
    assert schema.example_errors() == []
    examples = schema.document["examples"]
    assert examples
    for example in examples:
        schema.from_json(json.dumps(example).encode())


def test_every_example_file_has_a_schema() -> None:
    """Each examples/*.json maps to a shipped schema (no example goes untested)."""
    assert EXAMPLE_FILES
    assert {p.stem for p in EXAMPLE_FILES} <= set(EXAMPLE_SCHEMA)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_file_validates_against_its_schema(path: Path) -> None:
    """examples/<name>.json decodes into the publish type of its schema."""
    schema = _schema(EXAMPLE_SCHEMA[path.stem])
    record = schema.from_json(path.read_bytes())
    assert isinstance(record, schema.types.publish)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_round_trips_through_the_body(path: Path) -> None:
    """to_body/from_body give back the same content (as the tolerant receive type)."""
    schema = _schema(EXAMPLE_SCHEMA[path.stem])
    record = schema.from_json(path.read_bytes())
    received = schema.from_body(schema.to_body(record))
    assert isinstance(received, schema.types.receive)
    assert schema.from_json(msgspec.json.encode(received)) == record


def test_example_with_an_invalid_example_is_reported() -> None:
    """example_errors names the example that does not validate."""
    doc = copy.deepcopy(ALERT.document)
    doc["examples"].append({"title": "only a title"})
    assert [e.split(":")[0] for e in Schema.from_document(doc).example_errors()] == [
        "$.examples[1]"
    ]


def test_document_without_examples_is_reported() -> None:
    """A schema carries at least one example."""
    doc = {k: v for k, v in ALERT.document.items() if k != "examples"}
    assert Schema.from_document(doc).example_errors() != []


# ---------------------------------------------------------------------------------------------
# from_json: strict, every failing path, never a value


def test_every_failing_path_is_reported() -> None:
    """A body with three distinct errors lists all three paths."""
    entities = [{"kind": "phone", "value": "1"}, {"kind": "pigeon", "value": "2"}]
    error = _alert_error(
        _alert_with(severity="apocalyptic", where={"country": "nl"}, entities=entities)
    )
    assert sorted(error.paths) == ["$.entities[1].kind", "$.severity", "$.where.country"]
    for path in error.paths:
        assert path in str(error)


def test_invalid_enum_value_path() -> None:
    """An unknown severity fails with exactly "$.severity" in .paths."""
    assert _alert_error(_alert_with(severity="apocalyptic")).paths == ("$.severity",)


def test_invalid_nested_field_path() -> None:
    """A bad nested field is named by its full path."""
    assert _alert_error(_alert_with(where={"country": "nl"})).paths == ("$.where.country",)


def test_invalid_list_item_path() -> None:
    """A bad list element is named with its index."""
    entities = [{"kind": "phone", "value": "1"}, {"kind": "pigeon", "value": "2"}]
    assert _alert_error(_alert_with(entities=entities)).paths == ("$.entities[1].kind",)


def test_missing_required_field_is_named() -> None:
    """A body without a required field is refused, naming the field."""
    value = example_dict("tf.alert/1")
    del value["severity"]
    error = _alert_error(json.dumps(value).encode())
    assert "severity" in str(error)
    assert error.paths == ("$",)


def test_unknown_field_is_refused_on_publish() -> None:
    """Producers are closed: a field the schema does not declare is refused."""
    assert _alert_error(_alert_with(extra="x")).paths == ("$",)


def test_error_never_echoes_a_value() -> None:
    """A marker in an invalid enum value and in an unknown field name appears nowhere."""
    body = _alert_with(severity=MARKER, **{MARKER: "x", f"x_{MARKER}": MARKER})
    error = _alert_error(body)
    assert "$.severity" in error.paths
    _no_marker(error)


def test_error_does_not_echo_an_enum_value_containing_a_quote() -> None:
    """An invalid enum value with an apostrophe is not repeated either."""
    error = _alert_error(_alert_with(severity=f"O'Brien-{MARKER}"))
    assert "Brien" not in str(error)
    _no_marker(error)


def test_error_does_not_echo_an_invalid_string_or_number() -> None:
    """Values failing a pattern, a length or a bound are not repeated."""
    where = {"country": MARKER, "lat": 91.123456789}
    error = _alert_error(_alert_with(where=where, title=MARKER * 20))
    assert sorted(error.paths) == ["$.title", "$.where.country", "$.where.lat"]
    _no_marker(error)
    assert "91.123456789" not in str(error)


def test_error_names_the_type_and_is_a_validation_error() -> None:
    """The message says which type the body failed; the exit code is 5 (validation)."""
    error = _alert_error(_alert_with(severity="apocalyptic"))
    assert "tf.alert/1" in str(error)
    assert error.exit_code is ExitCode.VALIDATION


def test_invalid_json_is_a_validation_error_without_paths() -> None:
    """Bytes that are not JSON raise ValidationError with no path."""
    error = _alert_error(b"{not json")
    assert "not valid JSON" in str(error)
    assert error.paths == ()


def test_json_that_is_not_an_object_is_refused() -> None:
    """A JSON array is not an alert."""
    assert _alert_error(b"[]").paths == ("$",)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"title":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"where":' * 10_000 + b"{}" + b"}" * 10_000,
    ],
    ids=["array", "in-a-field", "objects"],
)
def test_body_nested_ten_thousand_deep_is_a_validation_error(body: bytes) -> None:
    """JSON nested 10,000 deep is a ValidationError (exit 5), never a RecursionError."""
    error = _alert_error(body)
    assert error.exit_code is ExitCode.VALIDATION


@pytest.mark.parametrize(
    "body",
    [
        b"\x91" * 10_000 + b"\x90",
        b"\x81\xa5where" * 10_000 + b"\x80",
        b"\x81\xa1x" * 10_000 + b"\xc0",
        b"\x82\xa5title\xa1t\xa1x" + b"\x81\xa1x" * 10_000 + b"\xc0",
    ],
    ids=["arrays", "where-in-where", "unknown-maps", "unknown-field-deep"],
)
def test_msgpack_body_nested_ten_thousand_deep_raises_only_decode_errors(body: bytes) -> None:
    """from_body of msgpack nested 10,000 deep raises one of DECODE_ERRORS, nothing else."""
    with pytest.raises(DECODE_ERRORS):
        ALERT.from_body(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"\xc1", b"\x80", b"\xa3abc", b"\x81\xa5title\xa2\xff\xfe"],
    ids=["empty", "reserved", "empty-map", "string", "bad-utf8"],
)
def test_malformed_msgpack_body_raises_only_decode_errors(body: bytes) -> None:
    """Garbage bodies raise one of DECODE_ERRORS."""
    with pytest.raises(DECODE_ERRORS):
        ALERT.from_body(body)


def test_receive_ignores_a_newer_producers_field() -> None:
    """Consumers are tolerant: a body with an extra field decodes, the field dropped."""
    value = example_dict("tf.alert/1")
    body = msgspec.msgpack.encode({**value, "added_in_v2": {"any": ["thing"]}})
    received = ALERT.from_body(body)
    assert not hasattr(received, "added_in_v2")
    assert ALERT.to_builtins(received)["title"] == value["title"]


def test_receive_still_enforces_declared_fields() -> None:
    """Tolerance covers unknown fields only: a bad known field is refused on receive."""
    body = msgspec.msgpack.encode({**example_dict("tf.alert/1"), "severity": "apocalyptic"})
    with pytest.raises(msgspec.ValidationError):
        ALERT.from_body(body)


class _Severity(msgspec.Struct):
    severity: Literal["low", "high"]


def test_safe_reason_drops_the_enum_value() -> None:
    """safe_reason removes the echoed value and keeps the path."""
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"severity": MARKER}, _Severity)
    reason = safe_reason(info.value)
    assert MARKER not in reason
    assert reason.endswith(" - at `$.severity`")


# ---------------------------------------------------------------------------------------------
# Grading: a tagged union on "system"


def _grading(**grading: str) -> bytes:
    return _alert_with(grading=grading)


@pytest.mark.parametrize(
    "grading",
    [
        {"system": "admiralty-6x6", "source": "F", "information": "6"},
        {"system": "admiralty-6x6", "source": "G", "information": "1"},
        {"system": "europol-4x4", "source": "X", "information": "4"},
        {"system": "europol-4x4", "source": "A", "information": "1"},
        {"system": "uk-3x5x2", "source": "3", "intelligence": "E", "handling": "P"},
        {"system": "uk-3x5x2", "source": "1", "intelligence": "A", "handling": "C"},
    ],
    ids=lambda g: "-".join(g.values()),
)
def test_valid_grading_codes_are_accepted(grading: dict[str, str]) -> None:
    """Codes each system defines are accepted, and come back unchanged."""
    record = ALERT.from_json(_grading(**grading))
    assert ALERT.to_builtins(record)["grading"] == grading


@pytest.mark.parametrize(
    ("grading", "path"),
    [
        ({"system": "admiralty-6x6", "source": "Z", "information": "2"}, "$.grading.source"),
        ({"system": "admiralty-6x6", "source": "A", "information": "7"}, "$.grading.information"),
        ({"system": "europol-4x4", "source": "D", "information": "1"}, "$.grading.source"),
        ({"system": "europol-4x4", "source": "A", "information": "5"}, "$.grading.information"),
        (
            {"system": "uk-3x5x2", "source": "A", "intelligence": "B", "handling": "P"},
            "$.grading.source",
        ),
        (
            {"system": "uk-3x5x2", "source": "1", "intelligence": "A", "handling": "X"},
            "$.grading.handling",
        ),
    ],
    ids=lambda g: "-".join(g.values()) if isinstance(g, dict) else g,
)
def test_codes_outside_the_named_system_are_refused(grading: dict[str, str], path: str) -> None:
    """Each system enforces its own codes, naming the failing field."""
    assert _alert_error(_grading(**grading)).paths == (path,)


def test_uk_grading_needs_intelligence_and_handling() -> None:
    """uk-3x5x2 without intelligence and handling is refused at $.grading."""
    error = _alert_error(_grading(system="uk-3x5x2", source="1"))
    assert error.paths == ("$.grading",)  # one path, however many problems it has
    assert "intelligence" in str(error) and "handling" in str(error)


def test_uk_grading_without_handling_is_refused() -> None:
    """uk-3x5x2 with intelligence but no handling code is refused."""
    error = _alert_error(_grading(system="uk-3x5x2", source="1", intelligence="A"))
    assert error.paths == ("$.grading",)
    assert "handling" in str(error)


def test_uk_grading_with_information_instead_of_intelligence_is_refused() -> None:
    """uk-3x5x2 names its second code "intelligence"; "information" is unknown there."""
    with pytest.raises(ValidationError):
        ALERT.from_json(_grading(system="uk-3x5x2", source="1", information="A", handling="P"))


def test_admiralty_grading_refuses_a_handling_code() -> None:
    """admiralty-6x6 has no handling code: giving one is refused at $.grading."""
    error = _alert_error(
        _grading(system="admiralty-6x6", source="A", information="1", handling="P")
    )
    assert error.paths == ("$.grading",)


def test_unknown_grading_system_is_refused() -> None:
    """A grading system not in the union is refused at $.grading."""
    error = _alert_error(_grading(system="nato-9x9", source="A", information="1"))
    assert error.paths == ("$.grading",)


def test_grading_without_system_is_refused() -> None:
    """Without the discriminator no variant applies."""
    assert _alert_error(_grading(source="A", information="1")).paths == ("$.grading",)
