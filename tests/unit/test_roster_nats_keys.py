"""Review (R2 F2): two members with one NATS key. The broker has one user per key, so a card
carrying a copy of another agency's (public) NATS key made the generated broker
configuration unloadable for everyone; a roster holding one is malformed."""

from __future__ import annotations

import msgspec
import pytest
from tfkit import build_taskforce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import RosterRejected


def test_a_roster_in_which_two_members_share_a_nats_key_is_refused() -> None:
    tf = build_taskforce()
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    police = next(m for m in roster.members if m.agency_id == "police")
    members = [
        msgspec.structs.replace(m, nats_user=police.nats_user) if m.agency_id == "ngo" else m
        for m in roster.members
    ]
    forged = msgspec.structs.replace(roster, members=members)
    signed = R.sign(R.SignedRoster(roster=R.encode_roster(forged), sigs=[]), tf.ids["coord"])
    with pytest.raises(RosterRejected) as refused:
        R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=tf.now_ms)
    assert refused.value.reject_code.value == "E_ROSTER_MALFORMED"
    assert "NATS key of 'ngo' belongs to another member" in refused.value.message
