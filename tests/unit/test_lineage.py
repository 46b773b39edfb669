"""Handling rules for derived messages (reshare/escalate/merge pass on; amend/retract change)."""

from __future__ import annotations

import json

import pytest
from tfkit import example_json

from tfshare.errors import ExitCode
from tfshare.lineage import RELATION_NAMES, RELATIONS, Handling, HandlingRefused, check, handling_of
from tfshare.registry.book import shipped


def _alert_record(**handling: object) -> object:
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    body = json.loads(example_json("tf.alert/1"))
    body["handling"] = {"tlp": "AMBER", **handling}
    return schema.from_json(json.dumps(body).encode())


def test_relation_numbers_match_the_envelope_refs() -> None:
    assert RELATIONS == {
        "reshare": 1,
        "escalate": 2,
        "amend": 3,
        "merge": 4,
        "retract": 5,
        "reply": 6,
    }
    assert RELATION_NAMES[2] == "escalate"


def test_handling_is_read_from_the_body_with_schema_defaults() -> None:
    assert handling_of(_alert_record()) == Handling(no_forward=False, code="H1")
    assert handling_of(_alert_record(no_forward=True, code="H2")) == Handling(True, "H2")
    assert handling_of({"no": "handling"}) == Handling()


@pytest.mark.parametrize("relation", ["reshare", "escalate", "merge"])
def test_no_forward_cannot_be_passed_on_even_by_its_originator(relation: str) -> None:
    with pytest.raises(HandlingRefused) as info:
        check(relation, parent_sender="police", parent=Handling(no_forward=True), by="police")
    assert info.value.code == "E_NO_FORWARD"
    assert info.value.exit_code is ExitCode.REJECTED


def test_h2_is_passed_on_only_by_its_originator() -> None:
    with pytest.raises(HandlingRefused) as info:
        check("reshare", parent_sender="police", parent=Handling(code="H2"), by="ngo")
    assert info.value.code == "E_HANDLING_H2"
    check("reshare", parent_sender="police", parent=Handling(code="H2"), by="police")
    check("reshare", parent_sender="police", parent=Handling(code="H1"), by="ngo")


@pytest.mark.parametrize("relation", ["amend", "retract"])
def test_only_the_originator_amends_or_retracts(relation: str) -> None:
    with pytest.raises(HandlingRefused) as info:
        check(relation, parent_sender="police", parent=Handling(), by="ngo")
    assert info.value.code == "E_NOT_ORIGINATOR"
    check(relation, parent_sender="police", parent=Handling(no_forward=True), by="police")


def test_unknown_relation_is_refused() -> None:
    with pytest.raises(HandlingRefused, match="unknown relation"):
        check("forward", parent_sender="police", parent=Handling(), by="ngo")
