"""Schema records: coordinator-signed, k-of-n like the roster, and checked from end to end."""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import msgspec
import pytest
import rfc8785
from tfkit import NOW_MS, TaskForce, build_taskforce

from tfshare.encoding import encode
from tfshare.errors import RejectCode, RosterRejected, ValidationError
from tfshare.keys import Identity
from tfshare.registry.book import shipped
from tfshare.registry.compat import Mode
from tfshare.registry.profile import ProfileError
from tfshare.registry.records import (
    SchemaRecord,
    SignedSchemaRecord,
    decode_record,
    new_record,
    record_message,
    sign_record,
    verify_record,
)
from tfshare.registry.schema import Schema, fingerprint_of
from tfshare.roster import RosterSig

TF3: Final = build_taskforce(coordinators=("c1", "c2", "c3"), threshold=2)


def _shipped(name: str) -> Schema:
    schema = shipped().lookup(name)
    assert schema is not None
    return schema


ALERT1: Final = _shipped("tf.alert/1")


def _alert(version: int) -> Schema:
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = f"urn:tfshare:schema:tf.alert/{version}"
    doc["properties"]["source_ref"] = {"type": "string", "maxLength": 100}
    return Schema.from_document(doc)


ALERT2: Final = _alert(2)


def _unsigned(schema: Schema = ALERT2, previous: Schema | None = ALERT1) -> SignedSchemaRecord:
    return new_record(
        schema, taskforce="nl-north", mode=Mode.FULL_TRANSITIVE, previous=previous, now_ms=NOW_MS
    )


def _signed(signed: SignedSchemaRecord, *signers: Identity) -> bytes:
    for signer in signers:
        signed = sign_record(signed, signer)
    return encode(signed)


def _record(**changes: Any) -> SchemaRecord:
    """The record of ALERT2 with ``changes`` (fields not re-derived: that is the point)."""
    _, record = decode_record(encode(_unsigned()))
    return msgspec.structs.replace(record, **changes)


def _sign_raw(record: SchemaRecord, *signers: Identity) -> bytes:
    return _signed(SignedSchemaRecord(record=encode(record), sigs=[]), *signers)


def _rejected_sig(data: bytes, tf: TaskForce) -> RosterRejected:
    with pytest.raises(RosterRejected) as info:
        verify_record(data, tf.trusted())
    assert info.value.reject_code is RejectCode.E_ROSTER_SIG
    return info.value


def _invalid(data: bytes, tf: TaskForce) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        verify_record(data, tf.trusted())
    return info.value


# ---------------------------------------------------------------------------------------------
# Round trips


def test_round_trip_one_of_one(taskforce: TaskForce) -> None:
    """A record signed by the only coordinator verifies, with its schema, mode and approval."""
    verified = verify_record(_signed(_unsigned(), taskforce.ids["coord"]), taskforce.trusted())
    assert verified.schema.name == "tf.alert/2"
    assert verified.schema.fingerprint == ALERT2.fingerprint
    assert verified.mode is Mode.FULL_TRANSITIVE
    assert verified.approvals == frozenset({"coord"})
    assert verified.record.previous_fingerprint == ALERT1.fingerprint
    assert verified.record.registered_ms == NOW_MS
    assert verified.record.canonical_schema == rfc8785.dumps(ALERT2.document)


def test_record_fields_come_from_the_schema() -> None:
    """new_record fills subject, version, fingerprint and canonical schema from the Schema."""
    _, record = decode_record(encode(_unsigned()))
    assert (record.subject, record.version) == ("tf.alert", 2)
    assert record.fingerprint == ALERT2.fingerprint
    assert record.canonical_schema == ALERT2.canonical
    assert record.compat_mode == "FULL_TRANSITIVE"


def test_first_version_has_an_empty_previous_fingerprint(taskforce: TaskForce) -> None:
    """Version 1 of a new subject names no predecessor and verifies."""
    doc = copy.deepcopy(ALERT1.document)
    doc["$id"] = "urn:tfshare:schema:tf.case_note/1"
    signed = _unsigned(Schema.from_document(doc), previous=None)
    verified = verify_record(_signed(signed, taskforce.ids["coord"]), taskforce.trusted())
    assert verified.record.previous_fingerprint == b""
    assert verified.schema.name == "tf.case_note/1"


def test_two_of_three_needs_two_signatures() -> None:
    """In a 2-of-3 task force one coordinator signature is not enough, two are."""
    _rejected_sig(_signed(_unsigned(), TF3.ids["c1"]), TF3)
    verified = verify_record(_signed(_unsigned(), TF3.ids["c1"], TF3.ids["c3"]), TF3.trusted())
    assert verified.approvals == frozenset({"c1", "c3"})


def test_all_three_signatures_verify() -> None:
    """More than k signatures is fine."""
    data = _signed(_unsigned(), TF3.ids["c1"], TF3.ids["c2"], TF3.ids["c3"])
    assert verify_record(data, TF3.trusted()).approvals == frozenset({"c1", "c2", "c3"})


def test_without_threshold_partial_approvals_are_reported() -> None:
    """require_threshold=False verifies the rest and counts the valid approvals."""
    data = _signed(_unsigned(), TF3.ids["c2"])
    verified = verify_record(data, TF3.trusted(), require_threshold=False)
    assert verified.approvals == frozenset({"c2"})


def test_unsigned_record_is_refused(taskforce: TaskForce) -> None:
    """A record with no signature at all is E_ROSTER_SIG."""
    _rejected_sig(encode(_unsigned()), taskforce)


def test_duplicate_signer_counts_once() -> None:
    """The same coordinator's signature twice is one approval: 2-of-3 still refuses."""
    once = sign_record(_unsigned(), TF3.ids["c1"])
    doubled = SignedSchemaRecord(record=once.record, sigs=[once.sigs[0], once.sigs[0]])
    error = _rejected_sig(encode(doubled), TF3)
    assert "1 valid" in str(error)


def test_signing_again_replaces_the_signers_earlier_signature() -> None:
    """sign_record by the same coordinator keeps one signature from it."""
    signed = sign_record(sign_record(_unsigned(), TF3.ids["c1"]), TF3.ids["c1"])
    assert len(signed.sigs) == 1


def test_non_coordinator_signature_does_not_count(taskforce: TaskForce) -> None:
    """A member's valid signature is no approval: E_ROSTER_SIG."""
    _rejected_sig(_signed(_unsigned(), taskforce.ids["police"]), taskforce)


def test_outsider_signature_does_not_count_towards_k() -> None:
    """One coordinator plus members and outsiders is still one approval of two."""
    data = _signed(_unsigned(), TF3.ids["c1"], TF3.ids["police"], TF3.ids["outsider"])
    _rejected_sig(data, TF3)


def test_bad_signature_is_refused(taskforce: TaskForce) -> None:
    """A coordinator's signature with one bit flipped does not count: E_ROSTER_SIG."""
    good = sign_record(_unsigned(), taskforce.ids["coord"])
    sig = good.sigs[0]
    bad_sig = RosterSig(sig.kid, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])
    _rejected_sig(encode(SignedSchemaRecord(record=good.record, sigs=[bad_sig])), taskforce)


def test_signature_over_another_record_is_refused(taskforce: TaskForce) -> None:
    """A signature taken from a different record does not approve this one."""
    other = sign_record(_unsigned(_alert(3), previous=ALERT2), taskforce.ids["coord"])
    moved = SignedSchemaRecord(record=_unsigned().record, sigs=list(other.sigs))
    _rejected_sig(encode(moved), taskforce)


def test_roster_signature_is_not_a_record_signature(taskforce: TaskForce) -> None:
    """Signatures are domain-separated: signing the bare record bytes does not count."""
    record = _unsigned().record
    coord = taskforce.ids["coord"]
    raw = RosterSig(coord.kid_sig, coord.sign(record))
    assert record_message(record) != record
    _rejected_sig(encode(SignedSchemaRecord(record=record, sigs=[raw])), taskforce)


# ---------------------------------------------------------------------------------------------
# Content checks (signatures valid, content wrong)


def test_fingerprint_not_of_the_schema_is_refused(taskforce: TaskForce) -> None:
    """A correctly signed record whose fingerprint is another schema's is refused."""
    data = _sign_raw(_record(fingerprint=ALERT1.fingerprint), taskforce.ids["coord"])
    assert "fingerprint" in str(_invalid(data, taskforce))


def test_schema_not_in_canonical_form_is_refused(taskforce: TaskForce) -> None:
    """Pretty-printed schema bytes (fingerprint of the canonical form) are refused."""
    pretty = json.dumps(ALERT2.document, indent=2).encode()
    data = _sign_raw(_record(canonical_schema=pretty), taskforce.ids["coord"])
    assert "canonical" in str(_invalid(data, taskforce))


def test_schema_that_is_not_json_is_refused(taskforce: TaskForce) -> None:
    """Schema bytes that are not JSON are refused, not raised."""
    data = _sign_raw(_record(canonical_schema=b"{not json"), taskforce.ids["coord"])
    _invalid(data, taskforce)


def test_schema_nested_too_deep_is_refused(taskforce: TaskForce) -> None:
    """Schema bytes nested 10,000 deep are a ValidationError, not a RecursionError."""
    deep = b"[" * 10_000 + b"]" * 10_000
    data = _sign_raw(_record(canonical_schema=deep), taskforce.ids["coord"])
    _invalid(data, taskforce)


def test_schema_outside_the_profile_is_refused(taskforce: TaskForce) -> None:
    """A canonical, correctly fingerprinted and signed schema with anyOf is a ProfileError."""
    doc = copy.deepcopy(ALERT2.document)
    doc["properties"]["source_ref"] = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    canonical = rfc8785.dumps(doc)
    record = _record(canonical_schema=canonical, fingerprint=fingerprint_of(doc))
    with pytest.raises(ProfileError) as info:
        verify_record(_sign_raw(record, taskforce.ids["coord"]), taskforce.trusted())
    assert (info.value.path, info.value.keyword) == ("$.properties.source_ref", "anyOf")


def test_record_name_that_disagrees_with_the_schema_id_is_refused(taskforce: TaskForce) -> None:
    """A record for tf.alert/3 carrying the tf.alert/2 document is refused."""
    data = _sign_raw(_record(version=3), taskforce.ids["coord"])
    assert isinstance(_invalid(data, taskforce), ProfileError)


def test_later_version_without_previous_fingerprint_is_refused(taskforce: TaskForce) -> None:
    """Version 2 must name its predecessor's fingerprint."""
    data = _sign_raw(_record(previous_fingerprint=b""), taskforce.ids["coord"])
    assert "predecessor" in str(_invalid(data, taskforce))


def test_unknown_compatibility_mode_is_refused(taskforce: TaskForce) -> None:
    """A mode name that is not one of the seven is refused."""
    data = _sign_raw(_record(compat_mode="SIDEWAYS"), taskforce.ids["coord"])
    assert "SIDEWAYS" in str(_invalid(data, taskforce))


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\x93\x01\x02\x03", b"\xc1", encode(["tfshare-schema/1", b"x", []])],
    ids=["empty", "text", "array", "reserved", "record-not-msgpack"],
)
def test_malformed_record_is_refused(data: bytes, taskforce: TaskForce) -> None:
    """Bytes that are not a signed record are a ValidationError."""
    assert "malformed" in str(_invalid(data, taskforce))


def test_truncated_record_is_refused(taskforce: TaskForce) -> None:
    """A valid record cut short is malformed."""
    data = _signed(_unsigned(), taskforce.ids["coord"])
    for length in (1, len(data) // 2, len(data) - 1):
        _invalid(data[:length], taskforce)


def test_record_with_trailing_bytes_is_refused(taskforce: TaskForce) -> None:
    """A valid record followed by extra bytes is refused."""
    _invalid(_signed(_unsigned(), taskforce.ids["coord"]) + b"\x00", taskforce)


def test_non_canonical_record_encoding_is_refused(taskforce: TaskForce) -> None:
    """The same record with a wider integer encoding than needed is refused."""
    record = encode(_record())
    assert record[1] == 0xA8  # fixstr "tf.alert" follows the array header
    wide_version = record.replace(b"tf.alert\x02", b"tf.alert\xcc\x02", 1)
    assert wide_version != record
    signed = sign_record(SignedSchemaRecord(record=wide_version, sigs=[]), taskforce.ids["coord"])
    assert "malformed" in str(_invalid(encode(signed), taskforce))
