"""Bodies from the command line: --field flags and prompts for missing required fields."""

from __future__ import annotations

import json

import msgspec
import pytest
from tfkit import example_json

from tfshare.errors import UsageError, ValidationError
from tfshare.registry.book import shipped
from tfshare.registry.schema import Schema
from tfshare.workflows.bodies import apply_fields, body_json, prompt_missing


def _schema(name: str) -> Schema:
    schema = shipped().lookup(name)
    assert schema is not None
    return schema


def test_fields_set_nested_values_and_read_json_scalars() -> None:
    """Dotted paths create objects; numbers and booleans are read as JSON, the rest as text."""
    body = apply_fields({}, ["where.country=NL", "handling.no_forward=true", "count=3", "t=a b"])
    assert body == {
        "where": {"country": "NL"},
        "handling": {"no_forward": True},
        "count": 3,
        "t": "a b",
    }


@pytest.mark.parametrize("field", ["no-equals-sign", "=value"])
def test_a_field_without_path_and_value_is_a_usage_error(field: str) -> None:
    """--field must be path=value."""
    with pytest.raises(UsageError):
        apply_fields({}, [field])


def test_fields_override_the_file() -> None:
    """A --field replaces the file's value at that path; the result validates."""
    alert = _schema("tf.alert/1")
    data = body_json(
        alert.document,
        base=example_json("tf.alert/1"),
        fields=["severity=low", "where.country=BE"],
        prompt=None,
    )
    record = msgspec.to_builtins(alert.from_json(data))
    assert (record["severity"], record["where"]["country"]) == ("low", "BE")


def test_prompts_ask_for_every_missing_required_field_with_its_choices() -> None:
    """With nothing given, the prompts walk the required fields (into objects and the
    grading union), offering enum values, and the answers make a valid tip summary."""
    tip = _schema("tf.tip_summary/1")
    answers = {
        "source_type": "hotline",
        "received": "2026-11-21T09:00:00Z",
        "summary": "A call.",
        "handling.tlp": "RED",
        "grading.system": "admiralty-6x6",
        "grading.source": "B",
        "grading.information": "2",
    }
    asked: dict[str, list[str] | None] = {}

    def prompt(path: str, allowed: list[str] | None) -> str:
        asked[path] = allowed
        return answers[path]

    body = prompt_missing(tip.document, {}, prompt)
    assert set(asked) == set(answers)
    assert asked["source_type"] == ["hotline", "community", "ngo-outreach", "online", "financial"]
    assert asked["grading.system"] == ["admiralty-6x6", "europol-4x4", "uk-3x5x2"]
    assert asked["summary"] is None
    tip.from_json(json.dumps(body).encode())  # valid


def test_given_fields_are_not_asked_again() -> None:
    """Only what is missing is prompted for."""
    tip = _schema("tf.tip_summary/1")
    base = json.loads(example_json("tf.tip_summary/1"))
    asked: list[str] = []

    def prompt(path: str, _allowed: list[str] | None) -> str:
        asked.append(path)
        return ""

    prompt_missing(tip.document, base, prompt)
    assert asked == []


def test_a_body_that_is_not_an_object_is_refused() -> None:
    """The file must hold one JSON object."""
    with pytest.raises(ValidationError):
        body_json({}, base=b"[1, 2]", fields=[], prompt=None)
