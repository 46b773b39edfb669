"""tfshare.interop (issue 16): the shipped examples exported to STIX 2.1 (checked by
stix2-validator, parsed by stix2) and MISP (loaded by PyMISP's MISPEvent), the handling
markings both ways, and import's refusals: an invalid bundle, an unknown MISP template, a
marking tfshare cannot carry, a weaker handling than the source's."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
import stix2
from pymisp import MISPEvent
from stix2validator import ValidationOptions, validate_instance
from tfkit import SCHEMAS

from tfshare.desk.api import Message
from tfshare.errors import ExitCode, ValidationError
from tfshare.interop import grading, importing, misp_export, stix_export
from tfshare.interop.common import (
    KINDS,
    HandlingRefused,
    InteropError,
    LineageRef,
    Received,
    from_view,
    report_id,
)
from tfshare.interop.exporting import render
from tfshare.interop.markings import TLP2_IDS, handling_of
from tfshare.interop.misp_feed import feed, feed_lines, received_of_bundle
from tfshare.interop.misp_feed import main as misp_feed_main

SCHEMA_OF = {"alert": "tf.alert/1", "red-flag": "tf.red_flag/1", "tip": "tf.tip_summary/1"}


def example(kind: str) -> dict[str, Any]:
    schema = SCHEMAS.lookup(SCHEMA_OF[kind])
    assert schema is not None
    return copy.deepcopy(schema.document["examples"][0])


def document(kind: str) -> dict[str, Any]:
    schema = SCHEMAS.lookup(SCHEMA_OF[kind])
    assert schema is not None
    return schema.document


def received(kind: str, body: dict[str, Any] | None = None, n: int = 1, **extra: Any) -> Received:
    return Received(
        sender="police",
        fingerprint="SHA256:abcdef0123456789",
        msg_id=f"{n:032x}",
        env_hash=f"{n:064x}",
        ts_ms=1_795_000_000_000 + n,
        channel="alerts",
        schema=SCHEMA_OF[kind],
        record=body if body is not None else example(kind),
        **extra,
    )


def stix_errors(bundle: dict[str, Any]) -> list[str]:
    result = validate_instance(bundle, ValidationOptions(version="2.1"))
    return [str(e) for e in result.errors]


def with_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """The body as a draft spells it: the handling's defaults written out."""
    out = copy.deepcopy(body)
    out["handling"] = handling_of(body).as_body()
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_each_example_exports_to_a_stix_bundle_the_validator_accepts(kind: str) -> None:
    bundle = stix_export.bundle([received(kind)], allow_restricted=True)
    assert stix_errors(bundle) == []
    parsed = stix2.parse(bundle, allow_custom=True)
    assert {o.type for o in parsed.objects} >= {"identity", "report", "marking-definition"}


def test_the_report_points_back_to_the_signed_original_and_keeps_grade_and_handling() -> None:
    message = received("tip")  # TLP:RED, PAP:AMBER, H2, no_forward, admiralty C3
    bundle = stix_export.bundle([message], allow_restricted=True)
    report = next(o for o in bundle["objects"] if o["type"] == "report")
    assert report["id"] == report_id(message.env_hash)
    assert report["external_references"][0]["external_id"] == message.msg_id
    assert report["external_references"][0]["hashes"] == {"SHA-256": message.env_hash}
    assert report["confidence"] == 50  # Annex A: admiralty 3 "possibly true"
    assert "grading:admiralty-6x6:C3" in report["labels"]
    markings = {o["id"]: o for o in bundle["objects"] if o["type"] == "marking-definition"}
    assert TLP2_IDS["RED"] in report["object_marking_refs"]
    names = {markings[m]["name"] for m in report["object_marking_refs"]}
    assert names == {
        "TLP:RED",
        "PAP:AMBER",
        "Handling code H2",
        "tfshare no-forward: do not pass on",
    }
    # every object made of the message carries the same markings
    for obj in bundle["objects"]:
        if obj.get("created_by_ref") == report["created_by_ref"]:
            assert obj["object_marking_refs"] == report["object_marking_refs"]


def test_the_sender_identity_carries_its_key_fingerprint() -> None:
    bundle = stix_export.bundle([received("alert")], allow_restricted=True)
    police = next(o for o in bundle["objects"] if o.get("name") == "police")
    assert police["identity_class"] == "organization"
    assert police["external_references"][0]["external_id"] == "SHA256:abcdef0123456789"


def test_a_red_flag_gives_an_indicator_with_its_vocabulary_and_observed_data_when_seen() -> None:
    body = example("red-flag")
    body["entity"] = {"kind": "email", "value": "recruiter@example.org"}
    bundle = stix_export.bundle([received("red-flag", body)])
    indicator = next(o for o in bundle["objects"] if o["type"] == "indicator")
    assert indicator["pattern"] == "[email-addr:value = 'recruiter@example.org']"
    assert "fincen:2020-a008:funnel-account" in indicator["labels"]
    assert indicator["confidence"] == 85  # the red flag's own "high" (Annex A Low/Med/High)
    observed = next(o for o in bundle["objects"] if o["type"] == "observed-data")
    assert observed["first_observed"] == "2026-09-02T00:00:00.000Z"
    sco = next(o for o in bundle["objects"] if o["type"] == "email-addr")
    assert sco["id"] == stix2.EmailAddress(value="recruiter@example.org").id  # spec's uuid5
    assert stix_errors(bundle) == []


def test_a_pattern_value_with_quotes_and_backslashes_stays_valid_and_comes_back() -> None:
    body = example("red-flag")
    body["entity"] = {"kind": "online-handle", "value": "it's \\ me"}
    bundle = stix_export.bundle([received("red-flag", body)])
    assert stix_errors(bundle) == []
    back = importing.draft(json.dumps(bundle).encode(), "red-flag", document("red-flag"))
    assert back.body["entity"] == body["entity"]


def test_lineage_becomes_a_relationship_to_the_parents_report() -> None:
    parent = LineageRef("reshare", "ab" * 16, "cd" * 32)
    bundle = stix_export.bundle([received("alert", refs=(parent,))], allow_restricted=True)
    relationship = next(o for o in bundle["objects"] if o["type"] == "relationship")
    assert relationship["relationship_type"] == "derived-from"
    assert relationship["target_ref"] == report_id("cd" * 32)
    assert stix_errors(bundle) == []


def test_the_same_messages_give_the_same_bundle() -> None:
    messages = [received("alert", n=1), received("red-flag", n=2)]
    first = stix_export.bundle(messages, allow_restricted=True)
    assert first == stix_export.bundle(messages, allow_restricted=True)


@pytest.mark.parametrize("field", ["no_forward", "H2"])
def test_a_restricted_message_is_refused_without_the_flag(field: str) -> None:
    body = example("alert")
    body["handling"] = (
        {"tlp": "AMBER", "code": "H2"} if field == "H2" else {"tlp": "AMBER", "no_forward": True}
    )
    message = received("alert", body)
    for fmt in ("stix", "misp"):
        with pytest.raises(HandlingRefused) as refused:
            render([message], fmt, allow_restricted=False)
        assert refused.value.exit_code == ExitCode.REJECTED
        assert refused.value.code == ("E_HANDLING_H2" if field == "H2" else "E_NO_FORWARD")
    assert "Handling code H2" in render([message], "stix", allow_restricted=True) or field != "H2"


def test_a_misp_event_loads_in_pymisp_and_round_trips() -> None:
    for kind in KINDS:
        event = misp_export.event(received(kind), allow_restricted=True)
        text = event.to_json()
        again = MISPEvent()
        again.load(text)
        assert json.loads(again.to_json()) == json.loads(text)


def test_the_misp_event_has_taxonomy_tags_and_a_distribution_from_the_handling() -> None:
    tip = misp_export.event(received("tip"), allow_restricted=True)  # RED, H2, no_forward
    tags = {t.name for t in tip.tags}
    assert {"tlp:red", "PAP:AMBER", 'tfshare:handling-code="H2"', "tfshare:no-forward"} <= tags
    assert 'admiralty-scale:source-reliability="c"' in tags
    assert 'admiralty-scale:information-credibility="3"' in tags
    assert 'tfshare:indicator="ilo:isolation"' in tags
    assert int(tip.distribution) == 0
    flag = misp_export.event(received("red-flag"))  # AMBER, PAP GREEN, H1
    assert int(flag.distribution) == 0
    assert [a.type for a in flag.attributes if a.comment.startswith("tfshare:entity")] == ["iban"]


@pytest.mark.parametrize("kind", KINDS)
def test_export_then_import_gives_back_the_body(kind: str) -> None:
    original = example(kind)
    message = received(kind, original)
    stix = stix_export.bundle([message], allow_restricted=True)
    misp = misp_export.event_json(misp_export.event(message, allow_restricted=True))
    for data in (stix, misp):
        back = importing.draft(json.dumps(data).encode(), kind, document(kind))
        assert back.body == with_defaults(original)
        assert back.missing == []


def test_import_refuses_a_bundle_the_validator_rejects() -> None:
    bundle = stix_export.bundle([received("red-flag")])
    report = next(o for o in bundle["objects"] if o["type"] == "report")
    report["created"] = "yesterday"
    with pytest.raises(InteropError, match=r"not valid STIX 2\.1") as refused:
        importing.draft(json.dumps(bundle).encode(), "red-flag", document("red-flag"))
    assert refused.value.exit_code == ExitCode.VALIDATION


def test_import_refuses_a_misp_event_with_an_unknown_object_template() -> None:
    event = misp_export.event_json(misp_export.event(received("alert"), allow_restricted=True))
    event["Event"]["Object"].append({"name": "x-smuggled", "Attribute": []})
    with pytest.raises(InteropError, match="unknown templates: x-smuggled"):
        importing.draft(json.dumps(event).encode(), "alert", document("alert"))


def test_import_refuses_to_weaken_red_into_green() -> None:
    body = example("alert")
    body["handling"] = {"tlp": "RED", "no_forward": True}
    bundle = json.dumps(stix_export.bundle([received("alert", body)], allow_restricted=True))
    with pytest.raises(HandlingRefused, match="TLP:RED would become TLP:GREEN") as refused:
        importing.draft(bundle.encode(), "alert", document("alert"), tlp="GREEN")
    assert refused.value.code == "E_WEAKENS_HANDLING"
    assert refused.value.exit_code == ExitCode.REJECTED


def test_import_takes_the_strictest_marking_of_the_objects_it_uses() -> None:
    body = example("red-flag")  # AMBER
    data = stix_export.bundle([received("red-flag", body)])
    indicator = next(o for o in data["objects"] if o["type"] == "indicator")
    indicator["object_marking_refs"] = [TLP2_IDS["RED"]]  # one object is RED
    data["objects"].append(
        {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": TLP2_IDS["RED"],
            "created": "2022-10-01T00:00:00.000Z",
            "name": "TLP:RED",
            "extensions": {
                "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d": {
                    "extension_type": "property-extension",
                    "tlp_2_0": "red",
                }
            },
        }
    )
    back = importing.draft(json.dumps(data).encode(), "red-flag", document("red-flag"))
    assert back.body["handling"]["tlp"] == "RED"
    assert back.body["handling"]["no_forward"] is True
    with pytest.raises(HandlingRefused):
        importing.draft(json.dumps(data).encode(), "red-flag", document("red-flag"), tlp="AMBER")


def test_import_refuses_a_marking_it_cannot_carry() -> None:
    data = stix_export.bundle([received("alert")], allow_restricted=True)
    report = next(o for o in data["objects"] if o["type"] == "report")
    statement = "marking-definition--0b2b1a4f-5d3c-4e6f-8a7b-9c0d1e2f3a4b"
    report["object_marking_refs"].append(statement)
    data["objects"].append(
        {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": statement,
            "created": "2026-01-01T00:00:00.000Z",
            "definition_type": "statement",
            "definition": {"statement": "Copyright: not for law enforcement"},
        }
    )
    with pytest.raises(InteropError, match="not one tfshare can carry"):
        importing.draft(json.dumps(data).encode(), "alert", document("alert"))


def test_a_foreign_bundle_lists_what_does_not_map_and_fills_an_honest_grade() -> None:
    bundle = {
        "type": "bundle",
        "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
        "objects": [
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
                "created": "2026-11-01T00:00:00.000Z",
                "modified": "2026-11-01T00:00:00.000Z",
                "name": "escort ad phone",
                "pattern": "[phone-number:value = '+31 6 1234 5678']",
                "pattern_type": "stix",
                "valid_from": "2026-11-01T00:00:00Z",
                "labels": ["ilo:debt-bondage"],
                "object_marking_refs": [TLP2_IDS["AMBER"]],
            },
            {
                "type": "malware",
                "spec_version": "2.1",
                "id": "malware--31b940d4-6f7f-459a-80ea-9c1f17b5891b",
                "created": "2026-11-01T00:00:00.000Z",
                "modified": "2026-11-01T00:00:00.000Z",
                "name": "x",
                "is_family": False,
            },
        ],
    }
    back = importing.draft(json.dumps(bundle).encode(), "red-flag", document("red-flag"))
    assert back.body["entity"] == {"kind": "phone", "value": "+31 6 1234 5678"}
    assert back.body["indicators"] == ["ilo:debt-bondage"]
    assert back.body["grading"] == {"system": "admiralty-6x6", "source": "F", "information": "6"}
    assert any(line.startswith("malware malware--31b9") for line in back.unmapped)
    assert back.missing == ["context", "confidence"]


def test_import_without_any_tlp_says_to_give_one() -> None:
    bundle = stix_export.bundle([received("alert")], allow_restricted=True)
    for obj in bundle["objects"]:
        obj.pop("object_marking_refs", None)
    report = next(o for o in bundle["objects"] if o["type"] == "report")
    del report["extensions"]
    back = importing.draft(json.dumps(bundle).encode(), "alert", document("alert"))
    assert "handling" not in back.body
    assert any(m.startswith("handling.tlp") for m in back.missing)
    given = importing.draft(json.dumps(bundle).encode(), "alert", document("alert"), tlp="AMBER")
    assert given.body["handling"]["tlp"] == "AMBER"


def test_a_value_the_schema_refuses_is_a_validation_error() -> None:
    event = misp_export.event_json(misp_export.event(received("alert"), allow_restricted=True))
    event["Event"]["Tag"].append({"name": 'tfshare:severity="apocalyptic"'})
    with pytest.raises(ValidationError, match=r"\$.severity"):
        importing.draft(json.dumps(event).encode(), "alert", document("alert"))


def test_annex_a_confidence_both_ways() -> None:
    assert [grading.ADMIRALTY_CONFIDENCE[str(i)] for i in range(1, 6)] == [90, 70, 50, 30, 10]
    assert (
        grading.confidence_of({"system": "admiralty-6x6", "source": "A", "information": "6"})
        is None
    )
    assert (
        grading.confidence_of({"system": "europol-4x4", "source": "A", "information": "1"}) is None
    )
    for information, value in grading.ADMIRALTY_CONFIDENCE.items():
        assert grading.admiralty_information(value) == information
    assert [grading.admiralty_information(v) for v in (0, 19, 20, 59, 60, 80, 100)] == [
        "5", "5", "4", "3", "2", "1", "1",
    ]  # fmt: skip


class FakeMisp:
    """A PyMISP-like client: records what it was given, answers as PyMISP does."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.added: list[MISPEvent] = []
        self.refuse = refuse or set()

    def add_event(self, event: MISPEvent, pythonify: bool = False) -> Any:
        assert isinstance(event, MISPEvent) and pythonify
        if event.info in self.refuse:
            return {"errors": (403, {"message": "refused"})}
        self.added.append(event)
        return event


def test_misp_feed_adds_events_and_skips_restricted_ones() -> None:
    client = FakeMisp(refuse={"Refused one"})
    refused = example("alert")
    refused["title"] = "Refused one"
    refused["handling"] = {"tlp": "GREEN"}
    results = feed(
        client, [received("red-flag", n=1), received("tip", n=2), received("alert", refused, n=3)]
    )
    assert [r.outcome for r in results] == ["added", "skipped", "failed"]
    assert results[1].detail == "E_NO_FORWARD"
    assert [e.info for e in client.added] == ["Red flag: account"]
    with_flag = feed(client, [received("tip", n=2)], allow_restricted=True)
    assert with_flag[0].outcome == "added"
    assert int(client.added[-1].distribution) == 0


@pytest.mark.parametrize(
    ("kind", "value"),
    [("email", "a@b"), ("email", "x y@example.org"), ("ad-url", "example.org/ad")],
)
def test_a_value_the_standard_observable_refuses_goes_in_the_tfshare_pattern(
    kind: str, value: str
) -> None:
    # Found by the property test: email-addr / url observables must hold a valid address, or
    # stix2-validator rejects the bundle; such values are kept as typed in x-tfshare-entity.
    body = example("red-flag")
    body["entity"] = {"kind": kind, "value": value}
    bundle = stix_export.bundle([received("red-flag", body)])
    assert stix_errors(bundle) == []
    indicator = next(o for o in bundle["objects"] if o["type"] == "indicator")
    assert indicator["pattern"].startswith("[x-tfshare-entity:kind = ")
    assert not any(o["type"] == "observed-data" for o in bundle["objects"])
    back = importing.draft(json.dumps(bundle).encode(), "red-flag", document("red-flag"))
    assert back.body["entity"] == body["entity"]


def test_a_hashed_entity_never_looks_like_the_identifier_itself() -> None:
    body = example("red-flag")
    body["entity"] = {"kind": "email", "value": "9f86d081884c7d65", "hashed": True}
    bundle = stix_export.bundle([received("red-flag", body)])
    indicator = next(o for o in bundle["objects"] if o["type"] == "indicator")
    assert indicator["pattern"].endswith("AND x-tfshare-entity:hashed = true]")
    assert indicator["name"] == "email (hashed)"


def test_the_live_feed_line_is_one_bundle_and_skips_restricted_messages() -> None:
    line = stix_export.feed_line(received("red-flag"))
    assert line is not None and "\n" not in line
    assert stix_errors(json.loads(line)) == []
    assert stix_export.feed_line(received("tip")) is None  # no_forward, H2
    assert stix_export.feed_line(received("tip"), allow_restricted=True) is not None


def test_the_misp_feed_reads_the_live_stix_lines_back_into_messages() -> None:
    parent = LineageRef("escalate", "ab" * 16, "cd" * 32)
    message = received("red-flag", refs=(parent,), warning="sender compromised")
    line = stix_export.feed_line(message)
    assert line is not None
    back = received_of_bundle(json.loads(line))
    assert back == message
    client = FakeMisp()
    assert [f.outcome for f in feed_lines(client, [line, "", line])] == ["added", "added"]
    assert client.added[0].uuid == misp_export.event(message).uuid  # same event: MISP merges


def test_the_misp_feed_command_wants_a_key_and_names_an_unreachable_misp(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TFSHARE_MISP_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert misp_feed_main(["--url", "https://127.0.0.1:9"]) == 6
    assert "tfshare: error: no MISP API key" in capsys.readouterr().err
    monkeypatch.setenv("TFSHARE_MISP_KEY", "not-a-real-key")
    assert misp_feed_main(["--url", "https://127.0.0.1:9"]) == 4  # nothing listens there
    err = capsys.readouterr().err
    assert "tfshare: error: the MISP at the given URL failed" in err
    assert "not-a-real-key" not in err


def test_the_misp_feed_refuses_a_line_that_is_not_a_tfshare_bundle() -> None:
    client = FakeMisp()
    for line in ("not json", "[1]", '{"type": "bundle", "objects": []}'):
        with pytest.raises(InteropError):
            list(feed_lines(client, [line]))
    assert client.added == []


def test_a_view_without_its_envelope_hash_is_refused_not_given_shared_ids() -> None:
    def view(env_hash: str) -> Message:
        return Message(
            msg_id="ab" * 16, sender="police", fingerprint="fp", channel="alerts",
            schema="tf.red_flag/1", sent="", received="", warning=None,
            body=example("red-flag"), env_hash=env_hash, sent_ms=1, received_ms=2,
        )  # fmt: skip

    with pytest.raises(InteropError, match="without its envelope hash"):
        from_view(view(""))
    message = from_view(view("cd" * 32))
    assert message.refs_known is False and message.env_hash == "cd" * 32
