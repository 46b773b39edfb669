"""Properties of the web forms (web/forms.py): a valid body survives the form and back; no
submitted form, however odd, raises anything but FormInvalid."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfshare.registry.profile import python_pattern
from tfshare.registry.validate import all_errors
from tfshare.web.forms import FormInvalid, form_fields, form_values, parse_form

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
DOCUMENTS = {
    subject: json.loads((SCHEMAS / subject / "1.json").read_text())
    for subject in ("tf.alert", "tf.red_flag", "tf.tip_summary")
}

# Text a person can type in one control: no control characters, no surrounding whitespace
# (the form takes whitespace alone as empty, and a list item is one trimmed line).
_TEXT_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))


def _text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(_TEXT_CHARS, min_size=max(low, 1), max_size=min(high, 40)).filter(
        lambda s: s.strip() == s and bool(s) and low <= len(s) <= high
    )


def _date_time() -> st.SearchStrategy[str]:
    return st.datetimes(min_value=dt.datetime(1000, 1, 1)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = defs[schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _value(schema: Any, defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = _resolve(schema, defs)
    if "oneOf" in schema:
        return st.one_of([_value(v, defs) for v in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, defs)
    if kind == "array":
        # An empty list is what a blank field means too: it is left out, as its default.
        return st.lists(
            _value(schema["items"], defs), min_size=1, max_size=min(schema.get("maxItems", 3), 3)
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(10**9)), schema.get("maximum", 10**9))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if schema.get("format") == "date-time":
        return _date_time()
    if "pattern" in schema:
        return st.from_regex(python_pattern(schema["pattern"]), fullmatch=True).filter(
            lambda s: s.strip() == s and "\n" not in s
        )
    return _text(schema.get("minLength", 1), schema.get("maxLength", 200))


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(schema.get("required", []))
    props = schema.get("properties", {})
    return st.fixed_dictionaries(
        {k: _value(s, defs) for k, s in props.items() if k in required},
        optional={k: _value(s, defs) for k, s in props.items() if k not in required},
    )


@pytest.mark.parametrize("subject", sorted(DOCUMENTS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_valid_body_shown_in_the_form_and_read_back_is_the_same_body(
    subject: str, data: st.DataObject
) -> None:
    document = DOCUMENTS[subject]
    body = data.draw(_object(document, document["$defs"]))
    assert all_errors(document, body) == []
    assert parse_form(document, form_values(document, body)) == body


def _names(document: dict[str, Any]) -> list[str]:
    example = document["examples"][0]
    return [f.name for f in form_fields(document, example)] + [
        "",
        ".",
        "x.0.y",
        "locations.99999.country",
    ]


@pytest.mark.parametrize("subject", sorted(DOCUMENTS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_submitted_form_gives_a_valid_body_or_form_invalid(
    subject: str, data: st.DataObject
) -> None:
    document = DOCUMENTS[subject]
    keys = st.one_of(st.sampled_from(_names(document)), st.text(max_size=30))
    values = st.one_of(
        st.text(max_size=60),
        st.sampled_from(
            ["", " ", "yes", "no", "1", "-0", "1e400", "nan", "RED", "2026-11-21T09:42"]
        ),
    )
    form = data.draw(st.dictionaries(keys, values, max_size=25))
    try:
        body = parse_form(document, form)
    except FormInvalid as invalid:
        assert invalid.errors
        assert all(isinstance(line, str) and line for line in invalid.errors.values())
    else:
        assert all_errors(document, body) == []
