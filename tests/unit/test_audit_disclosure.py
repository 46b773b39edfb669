"""audit disclose / check-disclosure: one message proved, nothing else revealed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tfkit import TaskForce, build_taskforce, example_json

from tfshare.audit.disclosure import (
    DISCLOSURE_TAG,
    Disclosure,
    DisclosureError,
    check_disclosure,
    decode_disclosure,
    disclose,
    disclosure_message,
)
from tfshare.encoding import encode
from tfshare.errors import RejectCode, Rejected
from tfshare.protocol import Delivered
from tfshare.registry.book import shipped
from tfshare.registry.compat import DEFAULT_MODE
from tfshare.registry.records import new_record, sign_record
from tfshare.registry.schema import Schema
from tfshare.seal import ReceivePolicy, payload_key_of

TF = build_taskforce()
ENVELOPE = TF.seal("police").data
DISCLOSED = disclose(
    ENVELOPE,
    identity=TF.ids["ngo"],
    roster=TF.trusted(),
    roster_bytes=TF.roster_bytes,
    now_ms=TF.now_ms,
)


CURRENT = TF.roster_bytes  # the checker's current roster (here: the one the message was sent under)


def _resign(d: Disclosure, tf: TaskForce = TF) -> bytes:
    sig = tf.ids[d.discloser].sign(
        disclosure_message(d.discloser, d.envelope, d.payload_key, d.roster, d.schema_record)
    )
    return encode(msgspec.structs.replace(d, sig=sig))


def test_a_disclosure_checks_against_the_anchor_and_the_current_roster() -> None:
    result = check_disclosure(
        DISCLOSED, anchor=TF.anchor, schemas=TF.schemas, latest_roster=CURRENT
    )
    assert result.discloser == "ngo"
    assert result.verified.header.sender == "police"
    assert result.schema == "tf.alert/1"
    expected = TF.receiver("ngo").receive(ENVELOPE)
    assert isinstance(expected, Delivered)
    assert msgspec.to_builtins(result.record) == msgspec.to_builtins(expected.message.record)
    assert "record=<hidden>" in repr(result)


def test_the_key_never_shows_in_a_repr() -> None:
    decoded = decode_disclosure(DISCLOSED)
    assert decoded.payload_key.hex() not in repr(decoded)
    assert "payload_key=<hidden>" in repr(decoded)


def test_a_non_recipient_has_nothing_to_disclose() -> None:
    sealed = TF.seal("police", to=["labour"])
    with pytest.raises(Rejected) as info:
        disclose(
            sealed.data,
            identity=TF.ids["ngo"],
            roster=TF.trusted(),
            roster_bytes=TF.roster_bytes,
            now_ms=TF.now_ms,
        )
    assert info.value.reject_code is RejectCode.E_NOT_RECIPIENT


def test_another_messages_key_is_refused_by_the_commitment() -> None:
    first, second = TF.seal("police", rng_seed="a"), TF.seal("police", rng_seed="b", seq=2)
    key_of_second = payload_key_of(
        second.data,
        identity=TF.ids["ngo"],
        roster=TF.trusted(),
        now_ms=TF.now_ms,
        policy=ReceivePolicy(),
    )
    forged = _resign(
        Disclosure(DISCLOSURE_TAG, "ngo", first.data, key_of_second, TF.roster_bytes, b"", b"")
    )
    with pytest.raises(DisclosureError) as info:
        check_disclosure(forged, anchor=TF.anchor, schemas=TF.schemas, latest_roster=CURRENT)
    assert info.value.code == "E_COMMIT"


def test_the_discloser_named_must_have_signed_it() -> None:
    relabelled = encode(msgspec.structs.replace(decode_disclosure(DISCLOSED), discloser="labour"))
    with pytest.raises(DisclosureError) as info:
        check_disclosure(relabelled, anchor=TF.anchor, schemas=TF.schemas, latest_roster=CURRENT)
    assert info.value.code == "E_DISCLOSURE_SIG"


def test_another_task_forces_anchor_is_refused() -> None:
    other = build_taskforce(coordinators=("chief",))
    with pytest.raises(DisclosureError) as info:
        check_disclosure(
            DISCLOSED, anchor=other.anchor, schemas=other.schemas, latest_roster=other.roster_bytes
        )
    assert info.value.code == "E_DISCLOSURE_ROSTER"


def test_garbage_is_named_as_such() -> None:
    with pytest.raises(DisclosureError) as info:
        check_disclosure(
            b"\x93garbage", anchor=TF.anchor, schemas=TF.schemas, latest_roster=CURRENT
        )
    assert info.value.code == "E_DISCLOSURE_MALFORMED"


@settings(max_examples=300)
@given(position=st.integers(0, len(DISCLOSED) - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    flipped = bytearray(DISCLOSED)
    flipped[position] ^= 1 << bit
    with pytest.raises(DisclosureError):
        check_disclosure(
            bytes(flipped), anchor=TF.anchor, schemas=TF.schemas, latest_roster=CURRENT
        )


def _alert_v2() -> tuple[Schema, bytes]:
    """tf.alert/2 (tf.alert/1 plus an optional field) and its record signed by the coordinator."""
    doc = json.loads(json.dumps(SCHEMAS_V1))
    doc["$id"] = "urn:tfshare:schema:tf.alert/2"
    doc["properties"]["case_ref"] = {"type": "string", "maxLength": 64, "description": "ref"}
    schema = Schema.from_document(doc)
    alert1 = shipped().lookup("tf.alert/1")
    assert isinstance(alert1, Schema)
    signed = new_record(
        schema, taskforce="nl-north", mode=DEFAULT_MODE, previous=alert1, now_ms=TF.now_ms
    )
    return schema, encode(sign_record(signed, TF.ids["coord"]))


SCHEMAS_V1 = json.loads((Path(__file__).parents[2] / "schemas/tf.alert/1.json").read_text())


def test_a_registered_schema_travels_with_the_disclosure() -> None:
    schema, record = _alert_v2()
    tf = dataclasses.replace(TF, schemas=shipped().with_schema(schema, DEFAULT_MODE))
    body = schema.to_body(schema.from_json(example_json("tf.alert/1")))
    sealed = tf.seal("police", schema="tf.alert/2", body=body, rng_seed="v2")
    common = {
        "identity": TF.ids["ngo"],
        "roster": TF.trusted(),
        "roster_bytes": TF.roster_bytes,
        "now_ms": TF.now_ms,
    }
    with_record = disclose(sealed.data, schema_record=record, **common)  # type: ignore[arg-type]
    result = check_disclosure(
        with_record, anchor=TF.anchor, schemas=shipped(), latest_roster=CURRENT
    )
    assert result.schema == "tf.alert/2"
    # Without the record, a checker outside the task force cannot read the body: named.
    without = disclose(sealed.data, **common)  # type: ignore[arg-type]
    with pytest.raises(DisclosureError) as info:
        check_disclosure(without, anchor=TF.anchor, schemas=shipped(), latest_roster=CURRENT)
    assert info.value.code == "E_SCHEMA"


def test_a_schema_record_not_signed_by_the_coordinators_is_refused() -> None:
    schema, _ = _alert_v2()
    alert1 = shipped().lookup("tf.alert/1")
    assert isinstance(alert1, Schema)
    unsigned = new_record(
        schema, taskforce="nl-north", mode=DEFAULT_MODE, previous=alert1, now_ms=TF.now_ms
    )
    forged = encode(sign_record(unsigned, TF.ids["police"]))
    tf = dataclasses.replace(TF, schemas=shipped().with_schema(schema, DEFAULT_MODE))
    body = schema.to_body(schema.from_json(example_json("tf.alert/1")))
    sealed = tf.seal("police", schema="tf.alert/2", body=body, rng_seed="v2b")
    data = disclose(
        sealed.data,
        identity=TF.ids["ngo"],
        roster=TF.trusted(),
        roster_bytes=TF.roster_bytes,
        now_ms=TF.now_ms,
        schema_record=forged,
    )
    with pytest.raises(DisclosureError) as info:
        check_disclosure(data, anchor=TF.anchor, schemas=shipped(), latest_roster=CURRENT)
    assert info.value.code == "E_DISCLOSURE_SCHEMA"
