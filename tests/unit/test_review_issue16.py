"""Review of issue 16 (STIX 2.1 / MISP export, import and live feed): handling that weakens on
the way in or out, and the MISP feed's failures. Each test asserts the correct behaviour and
failed when it was written (see the review report for the fix of each)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymisp import MISPEvent
from stix2validator import ValidationOptions, validate_instance
from tfkit import SCHEMAS

from tfshare.errors import ExitCode
from tfshare.interop import importing, misp_export, stix_export
from tfshare.interop.common import HandlingRefused, InteropError, Received
from tfshare.interop.markings import EXTENSION_ID, TLP2_EXTENSION_ID, TLP2_IDS
from tfshare.interop.misp_feed import feed_lines

SCHEMA_OF = {"alert": "tf.alert/1", "red-flag": "tf.red_flag/1", "tip": "tf.tip_summary/1"}
DEFINITIONS = ("marking-definition", "extension-definition", "identity")


def example(kind: str) -> dict[str, Any]:
    schema = SCHEMAS.lookup(SCHEMA_OF[kind])
    assert schema is not None
    return copy.deepcopy(schema.document["examples"][0])


def document(kind: str) -> dict[str, Any]:
    schema = SCHEMAS.lookup(SCHEMA_OF[kind])
    assert schema is not None
    return schema.document


def received(kind: str, body: dict[str, Any], n: int = 1) -> Received:
    return Received(
        sender="police",
        fingerprint="SHA256:abcdef0123456789",
        msg_id=f"{n:032x}",
        env_hash=f"{n:064x}",
        ts_ms=1_795_000_000_000 + n,
        channel="alerts",
        schema=SCHEMA_OF[kind],
        record=body,
    )


def stix_errors(bundle: dict[str, Any]) -> list[str]:
    return [str(e) for e in validate_instance(bundle, ValidationOptions(version="2.1")).errors]


def handled(kind: str, tlp: str, pap: str, code: str, no_forward: bool) -> dict[str, Any]:
    body = example(kind)
    body["handling"] = {"tlp": tlp, "pap": pap, "code": code, "no_forward": no_forward}
    return body


def _report_marked_red_children_unmarked() -> dict[str, Any]:
    """A platform's bundle (no tfshare extension): the report is TLP:RED, the objects it names
    carry no marking of their own (OpenCTI and others mark the container)."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    bundle = stix_export.bundle([received("alert", body)])
    for obj in bundle["objects"]:
        if obj["type"] == "report":
            obj.pop("extensions")
            obj["object_marking_refs"] = [TLP2_IDS["RED"]]
        elif obj["type"] not in DEFINITIONS:
            obj.pop("object_marking_refs", None)
    assert stix_errors(bundle) == []
    return bundle


# ---- F1: import ignores the report's own markings --------------------------------------


def test_stix_import_refuses_green_for_a_report_marked_red() -> None:
    """Before: the report itself was never in the objects whose markings count (only the
    objects it names), so a RED report became a GREEN draft (docs/INTEROP.md says the report
    counts)."""
    data = json.dumps(_report_marked_red_children_unmarked()).encode()
    with pytest.raises(HandlingRefused) as refused:
        importing.draft(data, "alert", document("alert"), tlp="GREEN")
    assert refused.value.code == "E_WEAKENS_HANDLING"
    assert refused.value.exit_code == ExitCode.REJECTED
    assert "TLP:RED would become TLP:GREEN" in refused.value.message


def test_stix_import_takes_the_tlp_of_the_report_itself() -> None:
    data = json.dumps(_report_marked_red_children_unmarked()).encode()
    made = importing.draft(data, "alert", document("alert"))
    assert made.body.get("handling", {}).get("tlp") == "RED", made.missing
    assert made.body["handling"]["no_forward"] is True
    assert not any(m.startswith("handling.tlp") for m in made.missing)


def _restricted_tip_bundle_of_the_report_alone() -> dict[str, Any]:
    """tfshare's own bundle (unchanged) of a TLP:RED, H2, no_forward tip with no place and no
    recommended action: its report names only the sender's identity, which is unmarked."""
    body = handled("tip", "RED", "RED", "H2", True)
    del body["locations"], body["recommended_action"]
    bundle = stix_export.bundle([received("tip", body)], allow_restricted=True)
    assert [o["type"] for o in bundle["objects"] if o["type"] not in DEFINITIONS] == ["report"]
    return bundle


@pytest.mark.parametrize("kind", ["alert", "red-flag"])
def test_tfshares_own_red_no_forward_bundle_imported_as_another_kind_keeps_its_handling(
    kind: str,
) -> None:
    """Before: --as alert / red-flag on a tip's bundle skipped the original body's handling
    (folded only when the schemas match) and the report's markings were not read: the draft
    was TLP:GREEN, H1, no_forward false, from a RED / H2 / no_forward message."""
    data = json.dumps(_restricted_tip_bundle_of_the_report_alone()).encode()
    with pytest.raises(HandlingRefused) as refused:
        importing.draft(data, kind, document(kind), tlp="GREEN")
    assert refused.value.code == "E_WEAKENS_HANDLING"
    made = importing.draft(data, kind, document(kind))
    assert made.body.get("handling") == {
        "tlp": "RED",
        "pap": "RED",
        "code": "H2",
        "no_forward": True,
    }, made.missing


def test_stix_import_lists_the_properties_it_does_not_map() -> None:
    """Issue 16: "each unmapped field listed". Before: a report's custom property and an
    indicator's kill chain phases vanished without a word (only whole objects and labels
    were listed), so an analyst could not know the draft lost them."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    bundle = stix_export.bundle([received("alert", body)])
    for obj in bundle["objects"]:
        if obj["type"] == "report":
            obj.pop("extensions")
            obj["x_acme_case_id"] = "CASE-42"
        if obj["type"] == "indicator":
            obj["kill_chain_phases"] = [{"kill_chain_name": "acme", "phase_name": "recruit"}]
    assert stix_errors(bundle) == []
    made = importing.draft(json.dumps(bundle).encode(), "alert", document("alert"))
    listed = " ".join(made.unmapped)
    assert "x_acme_case_id" in listed, made.unmapped
    assert "kill_chain_phases" in listed, made.unmapped


# ---- F2: MISP import ignores the tags of object attributes ------------------------------


def test_misp_import_counts_the_tags_of_an_objects_attributes() -> None:
    """Before: an event tagged tlp:green whose geolocation attribute is tagged tlp:red gave a
    GREEN draft: tags on attributes inside objects were never read."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    event = misp_export.event_json(misp_export.event(received("alert", body)))
    geolocation = event["Event"]["Object"][0]
    assert geolocation["name"] == "geolocation"
    geolocation["Attribute"][0]["Tag"] = [{"name": "tlp:red"}]
    with pytest.raises(HandlingRefused) as refused:
        importing.draft(json.dumps(event).encode(), "alert", document("alert"), tlp="GREEN")
    assert refused.value.code == "E_WEAKENS_HANDLING"
    made = importing.draft(json.dumps(event).encode(), "alert", document("alert"))
    assert made.body["handling"]["tlp"] == "RED"


def test_misp_import_of_an_organisation_only_event_is_not_shared_wider() -> None:
    """MISP distribution 0 ("your organisation only") restricts the event whatever its tags.
    Before: not read at all, so an organisation-only event tagged tlp:green (or untagged,
    with --tlp GREEN) became a GREEN draft for the whole channel. Neither CLEAR nor GREEN
    may come of it (AMBER+STRICT is the exact match; AMBER keeps tfshare's own AMBER events,
    exported with distribution 0, round-tripping)."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    event = misp_export.event_json(misp_export.event(received("alert", body)))
    event["Event"]["distribution"] = "0"
    made = importing.draft(json.dumps(event).encode(), "alert", document("alert"))
    assert made.body["handling"]["tlp"] not in ("CLEAR", "GREEN")


@pytest.mark.parametrize("tag", ["tlp:ex:chr", "tlp:unclear", "PAP:EX:SOMETHING"])
def test_misp_import_refuses_a_tlp_or_pap_tag_it_cannot_carry(tag: str) -> None:
    """As a STIX marking tfshare cannot carry is refused (exit 5: its restrictions would be
    lost), so is a MISP tlp / PAP tag it does not know (tlp:ex:chr, the Chatham House Rule,
    forbids naming the source). Before: listed as "not imported" and the draft made."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    event = misp_export.event_json(misp_export.event(received("alert", body)))
    event["Event"]["Tag"].append({"name": tag})
    with pytest.raises(InteropError) as refused:
        importing.draft(json.dumps(event).encode(), "alert", document("alert"))
    assert refused.value.exit_code == ExitCode.VALIDATION
    assert tag in refused.value.message


# ---- F3: MISP distribution wider than TLP:AMBER allows ----------------------------------


def test_an_amber_message_stays_in_the_organisation_in_misp() -> None:
    """TLP 2.0 AMBER: the recipient organisation and its clients, need to know. MISP's
    distribution 1 ("this community only") hands the event to every organisation of the
    MISP instance: wider than AMBER. Only 0 ("your organisation only") fits."""
    body = handled("alert", "AMBER", "AMBER", "H1", False)
    event = misp_export.event(received("alert", body))
    assert int(event.distribution) == 0


# ---- F4: a shared observable keeps the first message's markings -------------------------


def test_an_observable_two_messages_share_carries_the_stricter_markings() -> None:
    """The email-addr SCO has a deterministic id (STIX 2.1 section 2.9): two messages naming
    the same address share it. Before: the first message's markings won (setdefault), so a
    GREEN message exported before a RED, no_forward one left the RED message's observable
    marked GREEN without no-forward."""
    entity = {"kind": "email", "value": "recruiter@example.org"}
    green = handled("red-flag", "GREEN", "GREEN", "H0", False)
    red = handled("red-flag", "RED", "RED", "H1", True)
    for body in (green, red):
        body["entity"] = dict(entity)
        body["first_seen"] = "2026-01-01T00:00:00Z"
    bundle = stix_export.bundle(
        [received("red-flag", green, 1), received("red-flag", red, 2)], allow_restricted=True
    )
    assert stix_errors(bundle) == []
    names = {o["id"]: o["name"] for o in bundle["objects"] if o["type"] == "marking-definition"}
    (observable,) = [o for o in bundle["objects"] if o["type"] == "email-addr"]
    marked = {names[ref] for ref in observable["object_marking_refs"]}
    assert "TLP:RED" in marked
    assert "tfshare no-forward: do not pass on" in marked


# ---- F5: a marking definition that lies about its TLP -----------------------------------


def test_a_tlp_definition_whose_content_is_stricter_than_its_id_is_not_read_as_the_id() -> None:
    """A definition with the official TLP:GREEN id that says TLP:RED (name and tlp_2_0):
    the bundle contradicts itself. Before: read by its id alone, a GREEN draft. Either the
    stricter reading or a refusal (exit 5) is right; a GREEN draft is not."""
    body = handled("alert", "GREEN", "GREEN", "H1", False)
    bundle = stix_export.bundle([received("alert", body)])
    for obj in bundle["objects"]:
        if obj.get("id") == TLP2_IDS["GREEN"]:
            obj["name"] = "TLP:RED"
            obj["extensions"][TLP2_EXTENSION_ID]["tlp_2_0"] = "red"
        if obj["type"] == "report":
            obj.pop("extensions")
    assert stix_errors(bundle) == []
    try:
        made = importing.draft(json.dumps(bundle).encode(), "alert", document("alert"))
    except InteropError as refused:
        assert refused.exit_code == ExitCode.VALIDATION
        return
    assert made.body["handling"]["tlp"] == "RED"


# ---- F6: misp_feed's key file --------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing", "directory"])
def test_misp_feed_names_a_key_file_it_cannot_read_without_a_traceback(
    tmp_path: Path, which: str
) -> None:
    """Before: open() outside any handler, a FileNotFoundError / IsADirectoryError traceback
    (exit 1). Exit 6 (no usable key) with the error and hint lines."""
    key_file = tmp_path / "misp.key"
    if which == "directory":
        key_file.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tfshare.interop.misp_feed", "--url", "https://127.0.0.1:1",
         "--key-file", str(key_file)],
        input="", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 6, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("tfshare: error: ") and str(key_file) in lines[0]
    assert lines[1].startswith("tfshare: hint: ")


# ---- F7, F8: misp_feed trusts the first report's extension alone -------------------------


class RecordingMisp:
    """A PyMISP-like client that records the events it is given."""

    def __init__(self) -> None:
        self.added: list[MISPEvent] = []

    def add_event(self, event: MISPEvent, pythonify: bool = False) -> Any:
        self.added.append(event)
        return event


def test_misp_feed_never_drops_the_second_message_of_a_bundle_silently() -> None:
    """A bundle of two messages (``tfshare export``, made one line) on the feed's stdin.
    Before: the first report was fed and the second message silently lost ("added" for
    one). Either every message is fed, or the bundle is refused (exit 5)."""
    first = handled("alert", "GREEN", "GREEN", "H1", False)
    second = handled("alert", "AMBER", "AMBER", "H1", False)
    bundle = stix_export.bundle([received("alert", first, 1), received("alert", second, 2)])
    client = RecordingMisp()
    try:
        fed = list(feed_lines(client, [json.dumps(bundle)]))
    except InteropError as refused:
        assert refused.exit_code == ExitCode.VALIDATION
        assert client.added == []
        return
    assert sorted(f.msg_id for f in fed) == [f"{1:032x}", f"{2:032x}"]
    assert len(client.added) == 2


def test_misp_feed_does_not_feed_a_bundle_whose_markings_are_stricter_than_its_body() -> None:
    """A live-feed line of a RED, H2, no_forward message whose extension's body was edited to
    CLEAR / H0 (the markings on every object still say RED, H2, no-forward). Before: fed as
    CLEAR, MISP distribution 3 (all communities), without --allow-restricted. The markings
    the bundle carries must count: skipped as restricted, or refused as contradictory."""
    body = handled("alert", "RED", "RED", "H2", True)
    line = stix_export.feed_line(received("alert", body, 3), allow_restricted=True)
    assert line is not None
    bundle = json.loads(line)
    for obj in bundle["objects"]:
        if obj["type"] == "report":
            origin = obj["extensions"][EXTENSION_ID]["tfshare_message"]
            origin["body"]["handling"] = {"tlp": "CLEAR", "pap": "CLEAR", "code": "H0"}
    client = RecordingMisp()
    try:
        fed = list(feed_lines(client, [json.dumps(bundle)]))
    except InteropError as refused:
        assert refused.exit_code == ExitCode.VALIDATION
        assert client.added == []
        return
    assert [f.outcome for f in fed] == ["skipped"]
    assert client.added == []
