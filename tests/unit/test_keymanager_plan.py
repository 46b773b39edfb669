"""The key manager's plan (pure): which channels get a new epoch and why, and the envelopes
that deliver one (batches of 256, opening for each reader and for no one else)."""

from __future__ import annotations

import msgspec
import pytest
from kmkit import KM, edited, km_taskforce, open_delivery, trusted, without
from tfkit import NOW_MS, DeterministicRng

from tfshare import primitives
from tfshare import roster as R
from tfshare.envelope import WRAP_SIZE
from tfshare.errors import RejectCode, Rejected
from tfshare.keymanager.plan import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_PERIOD_MS,
    EpochState,
    batches,
    channel_readers,
    digest_of,
    epoch_channels,
    plan,
    reader_set,
    reader_sets,
    seal_deliveries,
)
from tfshare.roster import DEFAULT_EPOCH_MAX_MESSAGES, DEFAULT_EPOCH_PERIOD_MS
from tfshare.seal import Recipient, claimed_header

DAY_MS = 24 * 3600 * 1000


def _state(roster: R.TrustedRoster, *, epoch: int = 1, starts_ms: int = NOW_MS,
           start_seq: int | None = 10) -> dict[str, EpochState]:  # fmt: skip
    readers = channel_readers(roster, "alerts")
    return {
        "alerts": EpochState(
            "alerts", epoch, starts_ms, reader_set(readers), start_seq, digest_of(readers)
        )
    }


def test_the_defaults_are_the_rosters() -> None:
    assert (DEFAULT_PERIOD_MS, DEFAULT_MAX_MESSAGES) == (
        DEFAULT_EPOCH_PERIOD_MS,
        DEFAULT_EPOCH_MAX_MESSAGES,
    )


def test_first_look_makes_epoch_1_for_epoch_channels_only() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    assert epoch_channels(roster) == ["alerts"]  # tips allows direct mode only
    [rekey] = plan(roster, {}, now_ms=NOW_MS)
    assert (rekey.channel, rekey.epoch, rekey.reason) == ("alerts", 1, "initial")
    # every active reader, with its current key; the key manager itself reads nothing
    assert [r.agency_id for r in rekey.readers] == ["coord", "labour", "ngo", "police"]
    assert {r.kid for r in rekey.readers} == {roster.enc_kid_of[r.agency_id] for r in rekey.readers}


def test_unchanged_roster_makes_no_new_epoch() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    assert plan(roster, _state(roster), now_ms=NOW_MS + 1000, last_seqs={"alerts": 10}) == []


def test_reader_removed_makes_a_new_epoch_for_the_others() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    after = trusted(without(tf, "labour", now_ms=NOW_MS), now_ms=NOW_MS)
    [rekey] = plan(after, _state(before, epoch=3), now_ms=NOW_MS + 1000)
    assert (rekey.epoch, rekey.reason) == (4, "members")
    assert [r.agency_id for r in rekey.readers] == ["coord", "ngo", "police"]


def test_read_right_taken_away_suspension_or_reader_added_each_make_a_new_epoch() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    t = NOW_MS - 1000
    ungranted = R.ungrant(tf.signed, "ngo", channel="alerts", read=True, write=False, now_ms=t)
    added = R.add_member(tf.signed, tf.ids["outsider"].card_body(), role="member", now_ms=t)
    added = R.grant(added, "outsider", channel="alerts", read=True, write=False, now_ms=t)
    for signed, readers in (
        (ungranted, ["coord", "labour", "police"]),
        (added, ["coord", "labour", "ngo", "outsider", "police"]),
    ):
        roster = trusted(edited(tf, signed), now_ms=NOW_MS)
        [rekey] = plan(roster, _state(before), now_ms=NOW_MS)
        assert rekey.reason == "members"
        assert [r.agency_id for r in rekey.readers] == readers


def test_a_reader_whose_key_changed_gets_a_new_epoch() -> None:
    """An epoch went to keys: a reader's rotated key must not keep reading through a key
    delivered to the old one (which a thief of the old key could open)."""
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    state = _state(roster)["alerts"]
    old_key = {(a, b"\x00" * 8 if a == "police" else kid) for a, kid in state.readers}
    rotated = {
        "alerts": EpochState("alerts", 1, NOW_MS, frozenset(old_key), 10, state.readers_digest)
    }
    assert [r.reason for r in plan(roster, rotated, now_ms=NOW_MS)] == ["members"]


def test_period_elapsed_makes_a_new_epoch_at_its_edge() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    start = NOW_MS - DEFAULT_PERIOD_MS
    assert plan(roster, _state(roster, starts_ms=start + 1), now_ms=NOW_MS) == []
    [rekey] = plan(roster, _state(roster, starts_ms=start), now_ms=NOW_MS)
    assert (rekey.epoch, rekey.reason) == (2, "period")


def test_message_budget_reached_makes_a_new_epoch_at_its_edge() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    state = _state(roster, start_seq=500)
    full = 500 + DEFAULT_MAX_MESSAGES
    assert plan(roster, state, now_ms=NOW_MS, last_seqs={"alerts": full - 1}) == []
    [rekey] = plan(roster, state, now_ms=NOW_MS, last_seqs={"alerts": full})
    assert rekey.reason == "messages"
    # a stream that could not be read, or an epoch whose start position is unknown: no verdict
    assert plan(roster, state, now_ms=NOW_MS, last_seqs={}) == []
    unknown = _state(roster, start_seq=None)
    assert plan(roster, unknown, now_ms=NOW_MS, last_seqs={"alerts": 10**9}) == []


def test_the_channels_epoch_policy_in_the_roster_is_used() -> None:
    tf = km_taskforce()
    signed = R.set_epoch_policy(
        tf.signed, "alerts", period_ms=DAY_MS, max_messages=50, now_ms=NOW_MS - 1000
    )
    roster = trusted(edited(tf, signed), now_ms=NOW_MS)
    state = _state(roster, starts_ms=NOW_MS - DAY_MS + 1, start_seq=0)
    assert plan(roster, state, now_ms=NOW_MS, last_seqs={"alerts": 49}) == []
    assert [r.reason for r in plan(roster, state, now_ms=NOW_MS, last_seqs={"alerts": 50})] == [
        "messages"
    ]
    assert [r.reason for r in plan(roster, state, now_ms=NOW_MS + 1)] == ["period"]


def test_membership_is_the_reason_given_when_several_are_due() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    after = trusted(without(tf, "labour", now_ms=NOW_MS), now_ms=NOW_MS)
    stale = _state(before, starts_ms=0, start_seq=0)
    [rekey] = plan(after, stale, now_ms=NOW_MS, last_seqs={"alerts": 10**7})
    assert rekey.reason == "members"


def test_batches_hold_at_most_256_readers() -> None:
    readers = [Recipient(f"a{i}", bytes(32), bytes(8)) for i in range(513)]
    assert [len(b) for b in batches(readers)] == [256, 256, 1]
    assert [len(b) for b in batches(readers[:256])] == [256]
    assert [r for b in batches(readers) for r in b] == readers
    with pytest.raises(ValueError):
        batches(readers, 0)


def test_deliveries_open_for_each_reader_and_not_for_a_removed_member() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    after = trusted(without(tf, "labour", now_ms=NOW_MS), now_ms=NOW_MS)
    [rekey] = plan(after, _state(before), now_ms=NOW_MS)
    key = DeterministicRng("epoch key")(32)
    [sealed] = seal_deliveries(
        identity=tf.ids[KM], roster=after, channel="alerts", epoch=rekey.epoch, key=key,
        starts_ms=NOW_MS, reason=rekey.reason, readers=rekey.readers, first_seq=7,
        now_ms=NOW_MS, rng=DeterministicRng("seal"),
    )  # fmt: skip
    subject = "tf.nl-north.ch.alerts.keyman"
    for reader in ("coord", "ngo", "police"):
        delivery = open_delivery(tf, reader, sealed.data, roster=after, now_ms=NOW_MS,
                                 subject=subject)  # fmt: skip
        assert (delivery.channel, delivery.epoch, delivery.key) == ("alerts", 2, key)
        assert (delivery.starts_ms, delivery.reason) == (NOW_MS, "members")
    assert claimed_header(sealed.data).seq == 7
    # labour, under the roster before its removal (still a reader there): not addressed
    with pytest.raises(Rejected) as refused:
        open_delivery(tf, "labour", sealed.data, roster=before, now_ms=NOW_MS, subject=subject)
    assert refused.value.code == RejectCode.E_NOT_RECIPIENT
    # ... and under the roster that removed it
    with pytest.raises(Rejected) as refused:
        open_delivery(tf, "labour", sealed.data, roster=after, now_ms=NOW_MS, subject=subject)
    assert refused.value.code == RejectCode.E_NOT_RECIPIENT


def test_a_delivery_from_a_member_without_the_role_is_refused() -> None:
    """The receivers' side of the role: what ``keys serve`` refuses to be."""
    tf = km_taskforce()
    roster = trusted(tf, now_ms=NOW_MS)
    [sealed] = seal_deliveries(
        identity=tf.ids["police"], roster=roster, channel="alerts", epoch=1, key=bytes(32),
        starts_ms=NOW_MS, reason="initial", readers=channel_readers(roster, "alerts"),
        first_seq=1, now_ms=NOW_MS, rng=DeterministicRng("forged"),
    )  # fmt: skip
    with pytest.raises(Rejected) as refused:
        open_delivery(tf, "ngo", sealed.data, roster=roster, now_ms=NOW_MS)
    assert refused.value.code == RejectCode.E_NOT_AUTHORIZED


def test_10000_readers_take_40_envelopes_one_wrap_each() -> None:
    roster = trusted(km_taskforce(), now_ms=NOW_MS)
    rng = DeterministicRng("readers")
    readers = []
    for i in range(10_000):
        secret = bytearray(rng(32))
        secret[0] &= 248
        readers.append(Recipient(f"r{i}", primitives.scalarmult_base(bytes(secret))))
    sealed = seal_deliveries(
        identity=km_taskforce().ids[KM], roster=roster, channel="alerts", epoch=1,
        key=bytes(32), starts_ms=NOW_MS, reason="initial", readers=readers, first_seq=1,
        now_ms=NOW_MS, rng=DeterministicRng("seal"),
    )  # fmt: skip
    assert len(sealed) == 40
    headers = [claimed_header(s.data) for s in sealed]
    assert [len(h.wraps) // WRAP_SIZE for h in headers] == [256] * 39 + [16]
    assert [h.seq for h in headers] == list(range(1, 41))
    wrapped = {h.wraps[i : i + 8] for h in headers for i in range(0, len(h.wraps), WRAP_SIZE)}
    assert wrapped == {r.kid for r in readers}


def test_a_suspended_reader_gets_no_key_and_makes_a_new_epoch() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    roster = R.decode_roster(tf.signed.roster)
    members = [
        msgspec.structs.replace(m, status="suspended") if m.agency_id == "ngo" else m
        for m in roster.members
    ]
    suspended = R.edit(
        tf.signed, msgspec.structs.replace(roster, members=members), now_ms=NOW_MS - 1000
    )
    after = trusted(edited(tf, suspended), now_ms=NOW_MS)
    [rekey] = plan(after, _state(before), now_ms=NOW_MS)
    assert rekey.reason == "members"
    assert [r.agency_id for r in rekey.readers] == ["coord", "labour", "police"]


def test_reader_sets_given_by_the_caller_decide_as_computed_ones() -> None:
    tf = km_taskforce()
    before = trusted(tf, now_ms=NOW_MS)
    after = trusted(without(tf, "labour", now_ms=NOW_MS), now_ms=NOW_MS)
    assert reader_sets(after) == {"alerts": reader_set(channel_readers(after, "alerts"))}
    given = plan(after, _state(before), now_ms=NOW_MS, readers=reader_sets(after))
    assert given == plan(after, _state(before), now_ms=NOW_MS)
    assert plan(after, _state(before), now_ms=NOW_MS, readers=reader_sets(before)) == []
