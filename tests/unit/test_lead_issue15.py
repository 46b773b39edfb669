"""Issue 15 checks written by the lead: rules the review asked for that live in the roster's
consistency checks (PROTOCOL 7.2), so that a receiver refuses them whoever made the roster."""

from __future__ import annotations

import msgspec
import pytest
from test_epoch_mode import EK1, KM, deliver, epoch_taskforce, trusted
from tfkit import NOW_MS, build_taskforce

from tfshare import roster as R
from tfshare.errors import RejectCode, Rejected, RosterRejected, TrustError
from tfshare.registry.book import shipped
from tfshare.seal import (
    ReceivePolicy,
    _decode_envelope,
    _reopen_key,
    open_with_key,
    payload_key_of,
)


def _with_roles(tf_signed: R.SignedRoster, roles: dict[str, list[R.Role]]) -> R.Roster:
    _, roster = R.decode_signed_roster(msgspec.msgpack.encode(tf_signed))
    members = [
        msgspec.structs.replace(m, roles=roles[m.agency_id]) if m.agency_id in roles else m
        for m in roster.members
    ]
    return msgspec.structs.replace(roster, members=members)


def test_a_roster_naming_two_active_key_managers_is_malformed() -> None:
    """Two key managers would make two keys for one epoch and split every epoch channel:
    the consistency check refuses such a roster (E_ROSTER_MALFORMED), not only the editor."""
    tf = build_taskforce()
    roster = _with_roles(
        tf.signed, {"police": ["member", "key-manager"], "labour": ["member", "key-manager"]}
    )
    with pytest.raises(RosterRejected) as raised:
        R.validate_content(roster)
    assert raised.value.reject_code is RejectCode.E_ROSTER_MALFORMED
    assert "key managers" in raised.value.message


def test_one_key_manager_and_a_removed_one_are_consistent() -> None:
    """Only active members count: a removed key manager leaves room for its successor."""
    tf = build_taskforce()
    roster = _with_roles(
        tf.signed, {"police": ["member", "key-manager"], "labour": ["member", "key-manager"]}
    )
    members = [
        msgspec.structs.replace(m, status="removed") if m.agency_id == "labour" else m
        for m in roster.members
    ]
    R.validate_content(msgspec.structs.replace(roster, members=members))


def test_adding_two_key_managers_in_one_batch_is_refused() -> None:
    tf = build_taskforce(outsiders=("a", "b"))
    cards = [tf.ids["a"].card_body(), tf.ids["b"].card_body()]
    with pytest.raises(TrustError, match="key managers"):
        R.add_members(tf.signed, cards, role="key-manager", now_ms=NOW_MS)


# -- disclosure never hands out an epoch key; nor shows what a receiver would refuse ----------


def test_a_key_delivery_is_never_disclosed() -> None:
    """Its K opens a body that is the channel's epoch key: the reader asked to disclose it
    refuses (E_SCHEMA), so no disclosure file carries a whole epoch."""
    tf = epoch_taskforce()
    sealed = deliver(tf)
    with pytest.raises(Rejected) as raised:
        payload_key_of(
            sealed.data,
            identity=tf.ids["police"],
            roster=trusted(tf),
            now_ms=tf.now_ms,
            policy=ReceivePolicy(),
        )
    assert raised.value.reject_code is RejectCode.E_SCHEMA


def test_open_with_key_refuses_a_key_delivery_even_with_its_key() -> None:
    """A checker handed a key delivery's K (by a recipient that bypassed the tool) still
    shows nothing of it."""
    tf = epoch_taskforce()
    sealed = deliver(tf)
    roster = trusted(tf)
    _, hdr, kids = _decode_envelope(sealed.data)
    k = _reopen_key(hdr, kids, tf.ids["police"], None, roster)
    with pytest.raises(Rejected) as raised:
        open_with_key(
            sealed.data,
            k,
            roster=roster,
            schemas=shipped(),
            now_ms=tf.now_ms,
            policy=ReceivePolicy(),
        )
    assert raised.value.reject_code is RejectCode.E_SCHEMA
    assert KM in tf.ids


def test_the_audit_service_logs_a_key_delivery_like_any_message() -> None:
    """Key deliveries are ordinary envelopes on the channel's subject: the audit service
    checks and logs each one (sender, channel, envelope hash), and when the coordinator is
    among its readers it opens it without showing the key in the facts it keeps."""
    from tfshare.audit.service import message_record  # noqa: PLC0415
    from tfshare.names import channel_subject  # noqa: PLC0415
    from tfshare.seal import envelope_hash  # noqa: PLC0415

    tf = epoch_taskforce()
    sealed = deliver(tf)
    roster = trusted(tf)
    entry, facts = message_record(
        sealed.data,
        identity=tf.ids["coord"],
        roster=roster,
        schemas=shipped(),
        subject=channel_subject(roster.taskforce, "alerts", KM),
        now_ms=tf.now_ms,
    )
    assert (entry.sender, entry.channel, entry.entry_type) == (KM, "alerts", "message")
    assert entry.env_sha256 == envelope_hash(sealed.data)
    assert "coord" in facts.recipients
    assert facts.schema == "tf.epoch-key/1"
    assert EK1.hex() not in repr(facts) and EK1 not in repr(facts).encode()


def test_the_key_manager_may_read_the_state_of_epoch_streams_only() -> None:
    """The message budget (8.6) needs the stream's last sequence: the key manager may ask
    for the info of each epoch channel's stream, and of no other channel's."""
    from kmkit import KM as KEY_MANAGER  # noqa: PLC0415
    from kmkit import km_taskforce  # noqa: PLC0415
    from kmkit import trusted as km_trusted  # noqa: PLC0415

    from tfshare.names import permissions, stream_name  # noqa: PLC0415

    roster = km_trusted(km_taskforce(), now_ms=NOW_MS)
    allowed = permissions(roster, KEY_MANAGER)
    assert allowed is not None
    assert f"$JS.API.STREAM.INFO.{stream_name(roster.taskforce, 'alerts')}" in allowed.publish
    assert f"$JS.API.STREAM.INFO.{stream_name(roster.taskforce, 'tips')}" not in allowed.publish
    police = permissions(roster, "police")
    assert police is not None
    assert f"$JS.API.STREAM.INFO.{stream_name(roster.taskforce, 'alerts')}" not in police.publish
