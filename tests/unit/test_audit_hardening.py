"""Findings of the adversarial review of the audit service, each pinned by a test.

1. A key revoked as compromised (or of an agency no longer active) must not verify
   checkpoints: its thief could otherwise serve a fabricated log that members accept.
2. The proof service answers only into an active member's private inbox: ``allow_responses``
   lets it publish to any reply subject a requester names (a KV key, a channel).
3. One receipt with a date the schema's pattern admits but the calendar does not (February
   31st, a leap second) is refused with E_BODY; it must not stall the batch it arrived in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import structlog
from tfkit import NOW_MS, TaskForce, build_taskforce, identity

from tfshare import roster as R
from tfshare.audit.entry import LogEntry
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import NoteVerifier, checkpoint_origin
from tfshare.audit.proofs import (
    ResponseCode,
    ResponseRejected,
    answer,
    encode_request,
    inclusion_request,
    verify_inclusion_response,
)
from tfshare.audit.service import (
    AuditService,
    IdentitySigner,
    is_member_inbox,
    log_verifiers,
    sign_next_checkpoint,
)
from tfshare.broker import channel_subject
from tfshare.keys import Identity
from tfshare.roster import Reason

ORIGIN = checkpoint_origin("nl-north")


def _with_auditor(revoke: Reason | None) -> tuple[TaskForce, Identity]:
    """The kit's task force plus an auditor "aud", revoked with ``revoke`` if given."""
    tf = build_taskforce()
    aud = identity("aud")
    tf.ids["aud"] = aud
    t = NOW_MS - 3_000_000
    signed = R.add_member(tf.signed, aud.card_body(), role="auditor", now_ms=t)
    signed = R.sign(signed, tf.ids["coord"])
    if revoke is not None:
        signed = R.revoke(signed, "aud", reason=revoke, now_ms=t + 1000)
        signed = R.sign(signed, tf.ids["coord"])
    tf.signed = signed
    return tf, aud


def _keys(verifiers: list[NoteVerifier]) -> set[bytes]:
    return {v.public_key for v in verifiers}


def test_log_keys_are_the_active_coordinators_and_auditors() -> None:
    tf, aud = _with_auditor(None)
    keys = _keys(log_verifiers(tf.trusted()))
    assert aud.sign_pk in keys
    assert tf.ids["coord"].sign_pk in keys
    assert tf.ids["police"].sign_pk not in keys


@pytest.mark.parametrize("reason", ["compromised", "retired"])
def test_a_revoked_auditor_signs_nothing_members_trust(reason: Reason, tmp_path: Path) -> None:
    """The thief of the auditor's key signs a fabricated log and answers a proof request:
    the member's client refuses it (E_RESPONSE_SIGNATURE), because the key is no longer
    among the roster's log keys."""
    tf, aud = _with_auditor(reason)
    trusted = tf.trusted()
    assert aud.sign_pk not in _keys(log_verifiers(trusted))

    fake = LogEntry(entry_type="message", msg_id=b"\xaa" * 16, sender="police",
                    sender_kid=b"kid-0001", taskforce="nl-north", channel="alerts",
                    ts_ms=NOW_MS, env_sha256=hashlib.sha256(b"fabricated").digest(),
                    refs=[], observed_ms=NOW_MS)  # fmt: skip
    with AuditStore(tmp_path / "rogue.db") as store:
        store.append([fake])
        own = [NoteVerifier.from_public_key(ORIGIN, aud.sign_pk)]
        signer = IdentitySigner(aud, ORIGIN)
        sign_next_checkpoint(store, signer, own, now_ms=NOW_MS)
        request = inclusion_request("nl-north", msg_id=b"\xaa" * 16)
        data = answer(store, encode_request(request), taskforce="nl-north", verifiers=own)
    with pytest.raises(ResponseRejected) as refused:
        verify_inclusion_response(data, request, verifiers=log_verifiers(trusted))
    assert refused.value.code == ResponseCode.E_RESPONSE_SIGNATURE


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ("_INBOX_police.Ab12cd.xyz9", True),
        ("_INBOX_coord.Zz", True),
        ("_INBOX_outsider.abc", False),  # not a member
        ("_INBOX_police", False),  # no token
        ("_INBOX_police.", False),
        ("_INBOX_police.a..b", False),
        ("_INBOX_police.a.*", False),
        ("_INBOX_police.a.>", False),
        ("$KV.tf_nl-north_audit.checkpoint", False),
        ("$KV.tf_nl-north_roster.roster", False),
        ("$JS.API.STREAM.DELETE.TF_nl-north", False),
        ("tf.nl-north.ch.alerts.coord", False),
        ("_INBOX.abc", False),
        ("", False),
    ],
)
def test_answers_go_only_to_an_active_members_inbox(subject: str, allowed: bool) -> None:
    assert is_member_inbox(build_taskforce().trusted(), subject) is allowed


def test_a_removed_members_inbox_gets_no_answer() -> None:
    tf, _aud = _with_auditor("compromised")
    assert not is_member_inbox(tf.trusted(), "_INBOX_aud.abc")


@pytest.mark.parametrize("received", ["2025-02-31T00:00:00Z", "2016-12-31T23:59:60Z"])
def test_a_receipt_with_an_impossible_date_is_refused_and_the_batch_goes_on(
    received: str, tmp_path: Path
) -> None:
    tf = build_taskforce(receipts=True)
    store = AuditStore(tmp_path / "audit.db")
    service = AuditService(identity=tf.ids["coord"], roster=tf.trusted(),
                           roster_bytes=tf.roster_bytes, store=store,
                           url="nats://127.0.0.1:1", clock=lambda: NOW_MS)  # fmt: skip
    good = tf.seal("police", rng_seed="good")
    receipt = tf.schemas.lookup("tf.receipt/1")
    assert receipt is not None
    body = json.dumps({"msg_id": "00" * 16, "env_hash": "11" * 32, "outcome": "accepted",
                       "received": received}).encode()  # fmt: skip
    bad = tf.seal("police", channel="receipts", schema="tf.receipt/1",
                  body=receipt.to_body(receipt.from_json(body)), rng_seed="bad", seq=2)  # fmt: skip
    with structlog.testing.capture_logs() as events:
        indices = service.ingest(
            [
                (bad.data, channel_subject("nl-north", "receipts", "police")),
                (good.data, channel_subject("nl-north", "alerts", "police")),
            ]
        )
    refused = [e for e in events if e["event"] == "audit_envelope_refused"]
    assert [e["code"] for e in refused] == ["E_BODY"]
    assert indices == [None, 0]
    assert service.stats.refused == 1
    assert store.entry(0).msg_id == good.msg_id
    assert store.all_receipts() == []
