"""Built-in message types: examples, validation errors, grading codes and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import msgspec
import pytest
from tfkit import EXAMPLES, example_dict

from tfshare.encoding import safe_reason
from tfshare.errors import ValidationError
from tfshare.messages import (
    Alert,
    BuiltinSchemas,
    BuiltinType,
    RedFlag,
    TipSummary,
)

SCHEMAS = BuiltinSchemas()


class _Severity(msgspec.Struct):
    severity: Literal["low", "high"]


EXAMPLE_TYPES = {
    "alert": ("tf.alert/1", Alert),
    "red_flag": ("tf.red_flag/1", RedFlag),
    "tip_summary": ("tf.tip_summary/1", TipSummary),
}
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


def _type(name: str) -> BuiltinType:
    message_type = SCHEMAS.lookup(name)
    assert message_type is not None
    return message_type


def _alert_with(**changes: object) -> bytes:
    value = example_dict("tf.alert/1")
    value.update(changes)
    return json.dumps(value).encode()


def _alert_error(**changes: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _type("tf.alert/1").from_json(_alert_with(**changes))
    return info.value


def _grading(**grading: str) -> bytes:
    return _alert_with(grading=grading)


def test_every_example_file_has_a_type() -> None:
    """Each examples/*.json maps to a built-in type (no example goes untested)."""
    assert EXAMPLE_FILES
    assert {p.stem for p in EXAMPLE_FILES} <= set(EXAMPLE_TYPES)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_validates_against_its_type(path: Path) -> None:
    """The example decodes into its built-in Struct."""
    name, struct = EXAMPLE_TYPES[path.stem]
    record = _type(name).from_json(path.read_bytes())
    assert isinstance(record, struct)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_round_trips_through_the_body(path: Path) -> None:
    """to_body/from_body give back the same record."""
    message_type = _type(EXAMPLE_TYPES[path.stem][0])
    record = message_type.from_json(path.read_bytes())
    assert message_type.from_body(message_type.to_body(record)) == record


def test_builtin_names() -> None:
    """The four built-in types are listed by name."""
    assert SCHEMAS.names() == ["tf.alert/1", "tf.receipt/1", "tf.red_flag/1", "tf.tip_summary/1"]


def test_lookup_unknown_is_none() -> None:
    """An unknown schema name has no type."""
    assert SCHEMAS.lookup("tf.alert/2") is None


def test_subject_drops_the_version() -> None:
    """The subject of "tf.alert/1" is "tf.alert"."""
    assert _type("tf.alert/1").subject == "tf.alert"


def test_invalid_enum_raises_validation_error_with_path() -> None:
    """An unknown severity fails with "$.severity" in .paths."""
    assert _alert_error(severity="apocalyptic").paths == ("$.severity",)


def test_invalid_nested_field_path() -> None:
    """A bad nested field is named by its full path."""
    where = {"country": "nl"}
    assert _alert_error(where=where).paths == ("$.where.country",)


def test_invalid_list_item_path() -> None:
    """A bad list element is named with its index."""
    entities = [{"kind": "phone", "value": "1"}, {"kind": "pigeon", "value": "2"}]
    assert _alert_error(entities=entities).paths == ("$.entities[1].kind",)


def test_missing_required_field_is_a_validation_error() -> None:
    """A body without a required field is refused."""
    value = example_dict("tf.alert/1")
    del value["severity"]
    with pytest.raises(ValidationError, match="severity"):
        _type("tf.alert/1").from_json(json.dumps(value).encode())


def test_invalid_json_is_a_validation_error() -> None:
    """Bytes that are not JSON raise ValidationError with no path."""
    with pytest.raises(ValidationError, match="not valid JSON") as info:
        _type("tf.alert/1").from_json(b"{not json")
    assert info.value.paths == ()


def test_error_names_the_type() -> None:
    """The message says which type the body failed."""
    assert "tf.alert/1" in str(_alert_error(severity="apocalyptic"))


def test_error_does_not_echo_an_invalid_enum_value() -> None:
    """An invalid enum value (possibly case detail) is not repeated in the message."""
    error = _alert_error(severity="Victim-Jane-Doe")
    assert "Victim-Jane-Doe" not in str(error)
    assert "Victim-Jane-Doe" not in error.hint


def test_error_does_not_echo_an_enum_value_containing_a_quote() -> None:
    """An invalid enum value with an apostrophe is not repeated in the message either."""
    error = _alert_error(severity="O'Brien-Street-17")
    assert "Brien-Street-17" not in str(error)


def test_safe_reason_drops_the_enum_value() -> None:
    """safe_reason removes the echoed value and keeps the path."""
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"severity": "Victim-Jane-Doe"}, _Severity)
    reason = safe_reason(info.value)
    assert "Victim-Jane-Doe" not in reason
    assert reason.endswith(" - at `$.severity`")


# grading --------------------------------------------------------------------------------------


def test_admiralty_source_z_is_refused() -> None:
    """Source "Z" is not an admiralty-6x6 code: refused at $.grading."""
    with pytest.raises(ValidationError) as info:
        _type("tf.alert/1").from_json(_grading(system="admiralty-6x6", source="Z", information="2"))
    assert info.value.paths == ("$.grading",)


def test_admiralty_information_7_is_refused() -> None:
    """Information "7" is outside admiralty-6x6's 1-6."""
    with pytest.raises(ValidationError):
        _type("tf.alert/1").from_json(_grading(system="admiralty-6x6", source="A", information="7"))


@pytest.mark.parametrize(
    "grading",
    [
        {"system": "admiralty-6x6", "source": "F", "information": "6"},
        {"system": "admiralty-6x6", "source": "G", "information": "1"},
        {"system": "europol-4x4", "source": "X", "information": "4"},
        {"system": "uk-3x5x2", "source": "3", "information": "E", "handling": "P"},
        {"system": "uk-3x5x2", "source": "1", "information": "A", "handling": "C"},
    ],
    ids=lambda g: "-".join(g.values()),
)
def test_valid_grading_codes_are_accepted(grading: dict[str, str]) -> None:
    """Codes each system defines are accepted."""
    record = _type("tf.alert/1").from_json(_grading(**grading))
    assert isinstance(record, Alert)
    assert record.grading.source == grading["source"]


@pytest.mark.parametrize(
    "grading",
    [
        {"system": "europol-4x4", "source": "D", "information": "1"},
        {"system": "europol-4x4", "source": "A", "information": "5"},
        {"system": "uk-3x5x2", "source": "A", "information": "1", "handling": "P"},
        {"system": "uk-3x5x2", "source": "1", "information": "A", "handling": "X"},
    ],
    ids=lambda g: "-".join(g.values()),
)
def test_codes_of_another_system_are_refused(grading: dict[str, str]) -> None:
    """Codes outside the named system are refused."""
    with pytest.raises(ValidationError):
        _type("tf.alert/1").from_json(_grading(**grading))


def test_uk_grading_needs_a_handling_code() -> None:
    """uk-3x5x2 without a handling code is refused."""
    with pytest.raises(ValidationError) as info:
        _type("tf.alert/1").from_json(_grading(system="uk-3x5x2", source="1", information="A"))
    assert info.value.paths == ("$.grading",)


def test_admiralty_grading_refuses_a_handling_code() -> None:
    """admiralty-6x6 has no handling code: giving one is refused."""
    with pytest.raises(ValidationError) as info:
        _type("tf.alert/1").from_json(
            _grading(system="admiralty-6x6", source="A", information="1", handling="P")
        )
    assert info.value.paths == ("$.grading",)


def test_unknown_grading_system_is_refused() -> None:
    """A grading system not in the list is refused."""
    with pytest.raises(ValidationError):
        _type("tf.alert/1").from_json(_grading(system="nato-9x9", source="A", information="1"))


# fingerprints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMAS.names())
def test_fingerprint_is_32_bytes(name: str) -> None:
    """Each type's fingerprint is a 32-byte digest."""
    assert len(_type(name).fingerprint) == 32


@pytest.mark.parametrize("name", SCHEMAS.names())
def test_fingerprint_is_stable_across_instances(name: str) -> None:
    """Two BuiltinSchemas instances give the same fingerprint."""
    other = BuiltinSchemas().lookup(name)
    assert other is not None
    assert other.fingerprint == _type(name).fingerprint


def test_fingerprints_differ_between_types() -> None:
    """No two built-in types share a fingerprint."""
    fingerprints = {_type(name).fingerprint for name in SCHEMAS.names()}
    assert len(fingerprints) == len(SCHEMAS.names())
