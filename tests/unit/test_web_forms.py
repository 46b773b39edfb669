"""Forms generated from the shipped JSON Schemas, and bodies read back from them (web/forms.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tfshare.errors import ExitCode, ValidationError
from tfshare.registry.validate import all_errors
from tfshare.web.forms import FormInvalid, form_fields, form_values, parse_form

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _document(subject: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / subject / "1.json").read_text())
    return data


ALERT = _document("tf.alert")
TIP = _document("tf.tip_summary")
RED_FLAG = _document("tf.red_flag")


def _tip_values() -> dict[str, str]:
    return {
        "source_type": "hotline",
        "received": "2026-11-21T09:42",
        "summary": "Three workers live above the salon.",
        "handling.tlp": "AMBER",
        "grading.system": "admiralty-6x6",
        "grading@admiralty-6x6.source": "C",
        "grading@admiralty-6x6.information": "3",
    }


@pytest.mark.parametrize("document", [ALERT, TIP, RED_FLAG], ids=["alert", "tip", "red-flag"])
def test_every_schema_example_survives_the_form_and_back(document: dict[str, Any]) -> None:
    for example in document["examples"]:
        assert parse_form(document, form_values(document, example)) == example


def test_fields_of_a_tip_have_paths_widgets_and_choices_from_the_schema() -> None:
    fields = {f.name: f for f in form_fields(TIP)}
    assert fields["handling.tlp"].widget == "select"
    assert fields["handling.tlp"].choices == ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
    assert fields["handling.tlp"].required
    assert "Traffic Light Protocol" in fields["handling.tlp"].help
    assert not fields["handling.pap"].required
    assert fields["received"].widget == "datetime-local"
    assert fields["summary"].widget == "textarea"
    assert fields["indicators"].widget == "lines"
    assert fields["possible_victims.count"].widget == "number"
    assert fields["possible_victims.count"].step == "1"
    # An optional yes/no is a three-way choice: left out differs from "no" (a RED message
    # without no_forward is made no_forward).
    assert fields["handling.no_forward"].widget == "select"
    assert fields["handling.no_forward"].choices == ("yes", "no")
    # A list of objects: one blank item to fill in; the path is the validator's.
    assert fields["locations.0.country"].path == "locations[0].country"
    assert "locations.1.country" not in fields
    # A tagged union: the tag and each variant's own fields.
    assert fields["grading.system"].choices == ("admiralty-6x6", "europol-4x4", "uk-3x5x2")
    uk = fields["grading@uk-3x5x2.intelligence"]
    assert uk.path == "grading.intelligence"
    assert uk.variant == ("grading.system", "uk-3x5x2")


def test_a_list_of_objects_shows_each_item_and_one_blank() -> None:
    body = {"locations": [{"country": "NL"}, {"country": "RO"}]}
    names = {f.name for f in form_fields(TIP, body)}
    assert {"locations.0.country", "locations.1.country", "locations.2.country"} <= names
    assert "locations.3.country" not in names


def test_a_tip_form_gives_the_body_with_empty_optional_fields_left_out() -> None:
    values = _tip_values() | {
        "recommended_action": "   ",
        "handling.pap": "",
        "locations.0.place": "",
    }
    body = parse_form(TIP, values)
    assert body == {
        "source_type": "hotline",
        "received": "2026-11-21T09:42:00Z",
        "summary": "Three workers live above the salon.",
        "handling": {"tlp": "AMBER"},
        "grading": {"system": "admiralty-6x6", "source": "C", "information": "3"},
    }
    assert all_errors(TIP, body) == []


def test_codes_are_taken_in_any_case_and_written_in_the_schemas_spelling() -> None:
    body = parse_form(
        TIP, _tip_values() | {"handling.tlp": "tlp:amber+strict", "handling.code": "h2"}
    )
    assert body["handling"] == {"tlp": "AMBER+STRICT", "code": "H2"}


def test_only_the_variant_the_tag_chooses_is_read() -> None:
    values = _tip_values() | {"grading@uk-3x5x2.source": "9"}  # another variant's field
    assert parse_form(TIP, values)["grading"] == {
        "system": "admiralty-6x6",
        "source": "C",
        "information": "3",
    }


def test_an_invalid_field_is_named_and_the_others_are_not() -> None:
    values = _tip_values() | {"handling.tlp": "purple", "possible_victims.count": "many"}
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, values)
    errors = caught.value.errors
    assert set(errors) == {"handling.tlp", "possible_victims.count"}
    assert errors["handling.tlp"].startswith("handling.tlp: must be one of CLEAR, GREEN")
    assert errors["possible_victims.count"] == "possible_victims.count: must be a whole number"
    assert isinstance(caught.value, ValidationError)
    assert caught.value.exit_code == ExitCode.VALIDATION
    assert "$.handling.tlp" in caught.value.paths


def test_a_missing_required_field_is_named() -> None:
    values = _tip_values()
    del values["summary"]
    del values["grading@admiralty-6x6.source"]
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, values)
    assert caught.value.errors == {
        "summary": "summary: a value is needed here",
        "grading@admiralty-6x6.source": "grading.source: a value is needed here",
    }


def test_a_partly_filled_optional_object_names_its_missing_required_field() -> None:
    values = _tip_values() | {"possible_victims.needs": "shelter"}
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, values)
    assert caught.value.errors == {
        "possible_victims.count": "possible_victims.count: a value is needed here"
    }


def test_a_blank_list_item_is_left_out_and_a_bad_one_is_named_by_its_index() -> None:
    values = _tip_values() | {
        "locations.0.country": "NL",
        "locations.1.country": "",
        "locations.2.country": "nl",
    }
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, values)
    assert caught.value.errors == {
        "locations.2.country": "locations[1].country: must match ^[A-Z]{2}$"
    }


def test_lines_are_one_item_each_and_a_bad_line_is_named() -> None:
    values = _tip_values() | {"indicators": "ilo:isolation\r\n\r\n  ilo:debt-bondage  \n"}
    assert parse_form(TIP, values)["indicators"] == ["ilo:isolation", "ilo:debt-bondage"]
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, _tip_values() | {"indicators": "ilo:isolation\nnot a code"})
    assert caught.value.errors["indicators"].startswith("indicators: line 2: must match")


def test_date_times_are_utc_in_the_form_and_full_rfc3339_is_kept_as_typed() -> None:
    assert parse_form(TIP, _tip_values() | {"received": "2026-11-21T09:42:05.5"})["received"] == (
        "2026-11-21T09:42:05.5Z"
    )
    typed = "2026-11-21T10:42:00+01:00"
    assert parse_form(TIP, _tip_values() | {"received": typed})["received"] == typed
    # An offset is shown as the same moment in UTC (what a datetime-local control can hold).
    assert form_values(TIP, {"received": typed})["received"] == "2026-11-21T09:42:00"
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, _tip_values() | {"received": "yesterday"})
    assert caught.value.errors["received"].startswith("received: must be a date and time")


def test_optional_yes_no_is_three_way_and_numbers_keep_their_type() -> None:
    body = parse_form(
        ALERT,
        {
            "title": "t",
            "summary": "s",
            "severity": "HIGH",
            "category": "other",
            "where.country": "NL",
            "where.lat": "52.1",
            "where.lon": "4",
            "handling.tlp": "RED",
            "handling.no_forward": "no",
            "grading.system": "uk-3x5x2",
            "grading@uk-3x5x2.source": "2",
            "grading@uk-3x5x2.intelligence": "b",
            "grading@uk-3x5x2.handling": "P",
        },
    )
    assert body["severity"] == "high"
    assert body["where"] == {"country": "NL", "lat": 52.1, "lon": 4}
    assert body["handling"] == {"tlp": "RED", "no_forward": False}
    assert body["grading"] == {
        "system": "uk-3x5x2",
        "source": "2",
        "intelligence": "B",
        "handling": "P",
    }
    assert form_values(ALERT, body)["handling.no_forward"] == "no"


def test_a_number_out_of_range_is_named_with_the_rule() -> None:
    with pytest.raises(FormInvalid) as caught:
        parse_form(TIP, _tip_values() | {"possible_victims.count": "100001"})
    assert caught.value.errors == {
        "possible_victims.count": "possible_victims.count: outside maximum 100000"
    }


def test_names_the_form_does_not_have_are_ignored() -> None:
    values = _tip_values() | {
        "csrf": "x",
        "_channel": "hotline",
        "evil": "<script>",
        "locations.x.country": "NL",
    }
    assert "evil" not in parse_form(TIP, values)
