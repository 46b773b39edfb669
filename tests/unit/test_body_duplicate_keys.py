"""A body with one key twice is refused (issue 11, item 8; PROTOCOL.md 9): on receipt E_BODY,
when sending a validation error (exit 5) that names the key's path. msgspec alone keeps the
last of two equal keys; another decoder may keep the first, and the two would read one signed
message differently."""

from __future__ import annotations

import json

import msgspec
import pytest
from tfkit import build_taskforce, example_dict

from tfshare.encoding import DECODE_ERRORS, NonCanonical, check_body_form, safe_reason
from tfshare.errors import ExitCode, RejectCode, ValidationError
from tfshare.protocol import Delivered, Rejection
from tfshare.registry.book import shipped
from tfshare.registry.schema import Schema, duplicate_key_path
from tfshare.workflows.bodies import apply_fields, body_json, parse_object


def _alert_schema() -> Schema:
    schema = shipped().lookup("tf.alert/1")
    assert isinstance(schema, Schema)
    return schema


ALERT = _alert_schema()


def _entry(key: str, value: object) -> bytes:
    return msgspec.msgpack.encode(key) + msgspec.msgpack.encode(value)


def _map(*entries: bytes) -> bytes:
    assert len(entries) < 16
    return bytes([0x80 | len(entries)]) + b"".join(entries)


def _alert_body_with(*extra: bytes) -> bytes:
    """The example alert as msgpack, with raw ``extra`` entries appended to its top map."""
    body = example_dict("tf.alert/1")
    return _map(*(_entry(k, v) for k, v in body.items()), *extra)


def test_the_example_alert_body_passes() -> None:
    """Control: the example alert, encoded by hand in the same way, is accepted."""
    record = ALERT.from_body(_alert_body_with())
    assert msgspec.to_builtins(record)["severity"] == "critical"


def test_top_level_key_twice_is_refused_even_though_msgspec_would_take_the_last() -> None:
    body = _alert_body_with(_entry("severity", "low"))
    assert msgspec.msgpack.decode(body)["severity"] == "low"  # what "last wins" would read
    with pytest.raises(NonCanonical):
        ALERT.from_body(body)


def test_key_twice_with_the_same_value_is_refused() -> None:
    with pytest.raises(NonCanonical):
        ALERT.from_body(_alert_body_with(_entry("severity", "critical")))


def test_unknown_key_twice_is_refused_although_the_receiver_ignores_it() -> None:
    """A newer producer's optional field is ignored, but not given twice."""
    body = _alert_body_with(_entry("later_field", 1), _entry("later_field", 2))
    with pytest.raises(NonCanonical):
        ALERT.from_body(body)


def test_nested_key_twice_is_refused() -> None:
    handling = _map(_entry("tlp", "RED"), _entry("code", "H2"), _entry("tlp", "CLEAR"))
    body = example_dict("tf.alert/1")
    del body["handling"]
    data = _map(
        *(_entry(k, v) for k, v in body.items()), msgspec.msgpack.encode("handling") + handling
    )
    with pytest.raises(NonCanonical):
        ALERT.from_body(data)


def test_key_order_is_free() -> None:
    """Receivers accept any key order (only repeats and wide forms are refused)."""
    body = example_dict("tf.alert/1")
    reordered = _map(*(_entry(k, v) for k, v in reversed(body.items())))
    check_body_form(reordered)
    assert msgspec.to_builtins(ALERT.from_body(reordered)) == msgspec.to_builtins(
        ALERT.from_body(_alert_body_with())
    )


@pytest.mark.parametrize(
    "wide",
    [
        bytes([0x81, 0xA1]) + b"n" + bytes([0xCC, 5]),  # 5 as uint8 (fixint fits)
        bytes([0x81, 0xD9, 1]) + b"n" + bytes([1]),  # a str8 key (fixstr fits)
        bytes([0x81, 0xA1]) + b"n" + bytes([0xCA, 0x3F, 0x80, 0, 0]),  # float32
        bytes([0xDE, 0, 1, 0xA1]) + b"n" + bytes([1]),  # map16 for one entry
    ],
    ids=["wide-int", "wide-str", "float32", "wide-map"],
)
def test_values_not_in_shortest_form_are_refused(wide: bytes) -> None:
    """The same check pins the number and length encoding of bodies (PROTOCOL.md 9)."""
    msgspec.msgpack.decode(wide)
    with pytest.raises(NonCanonical):
        check_body_form(wide)


def test_refusal_reason_is_ours_and_names_no_value() -> None:
    with pytest.raises(DECODE_ERRORS) as info:
        ALERT.from_body(_alert_body_with(_entry("note", "Victim-Jane-7731"), _entry("note", "")))
    reason = safe_reason(info.value)
    assert "appears twice" in reason
    assert "Victim" not in reason


def test_receiver_rejects_a_signed_envelope_with_a_key_twice_as_E_BODY() -> None:
    """The whole receive path: a member's validly signed alert whose body repeats a key is
    rejected with E_BODY, not delivered with either value."""
    tf = build_taskforce()
    sealed = tf.seal("police", body=_alert_body_with(_entry("severity", "low")))
    outcome = tf.receiver("ngo").receive(sealed.data)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_BODY
    control = tf.receiver("ngo").receive(tf.seal("police", body=_alert_body_with()).data)
    assert isinstance(control, Delivered)


def _raw_entry(key: object, value: object) -> bytes:
    return msgspec.msgpack.encode(key) + msgspec.msgpack.encode(value)


@pytest.mark.parametrize(
    "inner",
    [
        _map(_raw_entry("x", 1), _raw_entry(b"x", 2)),  # "x" as str and as bin
        _map(_raw_entry(1, "a")),  # an integer key
        _map(_raw_entry("x", b"\x00\x01")),  # a binary value
        _map(_raw_entry("x", msgspec.msgpack.Ext(1, b"e"))),  # an extension value
        _map(_raw_entry("x", None)),  # nil: an absent property is left out
    ],
    ids=["str-and-bin-twin", "int-key", "bin-value", "ext-value", "nil-value"],
)
def test_a_body_with_what_json_cannot_say_is_refused_even_in_an_ignored_field(
    inner: bytes,
) -> None:
    """Review finding F6: a str key "x" and a bin key b"x" are two keys to msgspec, but one
    key given twice to a decoder that turns keys into strings; inside a field the schema does
    not know (ignored by the typed decode) the re-encode check alone did not see them."""
    body = _alert_body_with(msgspec.msgpack.encode("later_field") + inner)
    with pytest.raises(NonCanonical):
        ALERT.from_body(body)
    tf = build_taskforce()
    outcome = tf.receiver("ngo").receive(tf.seal("police", body=body).data)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_BODY


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"title": "a", "title": "b"}', "$.title"),
        ('{"where": {"country": "NL", "country": "BE"}}', "$.where.country"),
        ('{"entities": [{"kind": "a"}, {"kind": "b", "kind": "c"}]}', "$.entities[1].kind"),
        ('{"Victim Jane": 1, "Victim Jane": 2}', "$.(a key)"),
    ],
)
def test_json_key_twice_is_a_validation_error_naming_the_path(text: str, path: str) -> None:
    """Sending: exit 5, the path of the repeated key; a key that is not a property name
    (it may be case content) is not spelled out."""
    with pytest.raises(ValidationError) as info:
        ALERT.from_json(text.encode())
    assert info.value.exit_code is ExitCode.VALIDATION
    assert f"the key {path} twice" in info.value.message
    assert "Victim" not in info.value.message + info.value.hint
    assert duplicate_key_path(text.encode()) == path


def test_json_without_repeats_or_not_json_has_no_duplicate_path() -> None:
    assert duplicate_key_path(json.dumps(example_dict("tf.alert/1")).encode()) is None
    assert duplicate_key_path(b"{not json") is None


def test_body_file_with_a_key_twice_is_refused_before_fields_apply() -> None:
    """A body file's repeat cannot be hidden by a --field that sets the same key."""
    base = b'{"severity": "low", "severity": "high"}'
    with pytest.raises(ValidationError, match=r"\$\.severity twice"):
        body_json(ALERT.document, base=base, fields=["severity=critical"], prompt=None)
    with pytest.raises(ValidationError, match="not a JSON object"):
        parse_object(b"[1]")


def test_the_same_field_path_twice_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="given twice") as info:
        apply_fields({}, ["handling.tlp=RED", "handling.tlp=CLEAR"])
    assert info.value.exit_code is ExitCode.VALIDATION
    assert apply_fields({"severity": "low"}, ["severity=high"]) == {"severity": "high"}
