"""The task-force roster: edits, signatures, verification, coordinator changes and expiry."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce, identity

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, encode
from tfshare.errors import RejectCode, RosterRejected, TrustError
from tfshare.keys import Identity, enc_binding_message, kid_sig, verify_signature

TF = "nl-north"
T0 = NOW_MS - 3_600_000
replace = msgspec.structs.replace


def _content(signed: R.SignedRoster) -> R.Roster:
    return R.decode_signed_roster(encode(signed))[1]


def _sign(signed: R.SignedRoster, *signers: Identity) -> R.SignedRoster:
    for signer in signers:
        signed = R.sign(signed, signer)
    return signed


def _verify(
    signed: R.SignedRoster,
    anchor: R.Anchor,
    state: R.RosterState | None = None,
    now_ms: int = NOW_MS,
) -> tuple[R.TrustedRoster, R.RosterState]:
    return R.verify_roster(encode(signed), anchor=anchor, state=state, now_ms=now_ms)


def _code(action: Callable[[], object]) -> RejectCode:
    with pytest.raises(RosterRejected) as info:
        action()
    return info.value.reject_code


def _founded(*coordinators: str, threshold: int = 1) -> R.SignedRoster:
    """An unsigned first roster with these coordinators."""
    cards = [identity(name).card_body() for name in coordinators]
    return R.new_roster(TF, cards, threshold=threshold, now_ms=T0, valid_days=90)


def _with_member(signed: R.SignedRoster, name: str) -> R.SignedRoster:
    return R.add_member(signed, identity(name).card_body(), role="member", now_ms=T0)


def _second_key(agency: str) -> Identity:
    """Another signing key for ``agency`` (as after a key rotation)."""
    return Identity.generate(agency, agency.title(), rng=DeterministicRng(agency + "/2"), now_ms=T0)


def _add_sign_key(signed: R.SignedRoster, agency: str, extra: Identity) -> R.SignedRoster:
    roster = _content(signed)
    members = [
        replace(m, sign_keys=[*m.sign_keys, R.KeyValidity(extra.sign_pk, T0, MAX_UINT)])
        if m.agency_id == agency
        else m
        for m in roster.members
    ]
    return R.edit(signed, replace(roster, members=members), now_ms=T0)


def _two_key_coordinator_roster() -> R.SignedRoster:
    """Coordinators c1 (two signing keys) and c2, threshold 2, unsigned."""
    return _add_sign_key(_founded("c1", "c2", threshold=2), "c1", _second_key("c1"))


def _bad_sig(signer: Identity) -> R.RosterSig:
    return R.RosterSig(signer.kid_sig, b"\x00" * 64)


@pytest.fixture(scope="module")
def tf3() -> TaskForce:
    """Coordinators c1, c2, c3 with threshold 2, signed by c1 and c2."""
    return build_taskforce(coordinators=("c1", "c2", "c3"), threshold=2)


@pytest.fixture(scope="module")
def base() -> R.Roster:
    """A consistent roster (coord, police, ngo, labour; channels alerts and tips)."""
    return _content(build_taskforce().signed)


# new_roster -----------------------------------------------------------------------------------


def test_new_roster_is_seq_1() -> None:
    """A first roster has seq 1."""
    assert _content(_founded("c1")).seq == 1


def test_new_roster_is_unsigned() -> None:
    """A first roster carries no signatures."""
    assert _founded("c1").sigs == []


def test_new_roster_members_are_the_coordinators() -> None:
    """The founding coordinators are its only members, with the coordinator role."""
    roster = _content(_founded("c1", "c2", threshold=2))
    assert roster.coordinators == ["c1", "c2"]
    assert [(m.agency_id, m.roles, m.status) for m in roster.members] == [
        ("c1", ["coordinator"], "active"),
        ("c2", ["coordinator"], "active"),
    ]
    assert roster.threshold == 2


def test_new_roster_expires_valid_days_after_issue() -> None:
    """expires_ms is issued_ms plus valid_days whole days."""
    roster = _content(_founded("c1"))
    assert roster.issued_ms == T0
    assert roster.expires_ms == T0 + 90 * R.DAY_MS


def test_new_roster_takes_keys_from_the_card() -> None:
    """A member's keys, binding signature and NATS user come from its card."""
    card = identity("c1").card_body()
    (member,) = _content(_founded("c1")).members
    assert member.sign_keys == [R.KeyValidity(card.sign_pk, card.created_ms, MAX_UINT)]
    assert member.enc_key == R.KeyValidity(card.enc_pk, card.created_ms, MAX_UINT)
    assert member.enc_self_sig == card.enc_bind_sig
    assert member.nats_user == card.nats_user


def test_new_roster_refuses_an_impossible_threshold() -> None:
    """A threshold above the number of coordinators is refused at creation."""
    assert _code(lambda: _founded("c1", threshold=2)) is RejectCode.E_ROSTER_MALFORMED


# edit -----------------------------------------------------------------------------------------


def test_edit_of_unsigned_roster_keeps_seq() -> None:
    """Editing a roster nobody signed yet keeps its seq."""
    assert _content(_with_member(_founded("c1"), "police")).seq == 1


def test_edit_of_signed_roster_bumps_seq() -> None:
    """Editing a signed (possibly published) roster moves seq on by one."""
    signed = _sign(_founded("c1"), identity("c1"))
    assert _content(_with_member(signed, "police")).seq == 2


def test_edit_of_signed_roster_drops_signatures() -> None:
    """Signatures over the old content are dropped by an edit."""
    signed = _sign(_founded("c1"), identity("c1"))
    assert _with_member(signed, "police").sigs == []


def test_second_edit_after_a_bump_keeps_the_new_seq() -> None:
    """Once unsigned again, further edits stay on the bumped seq."""
    signed = _with_member(_sign(_founded("c1"), identity("c1")), "police")
    assert _content(_with_member(signed, "ngo")).seq == 2


def test_edit_reissues_with_the_same_lifetime() -> None:
    """An edit at time t is issued at t and keeps the previous lifetime."""
    later = T0 + 5 * R.DAY_MS
    signed = R.add_member(
        _founded("c1"), identity("police").card_body(), role="member", now_ms=later
    )
    roster = _content(signed)
    assert roster.issued_ms == later
    assert roster.expires_ms == later + 90 * R.DAY_MS


def test_edit_refuses_inconsistent_content() -> None:
    """R.edit validates the content it re-issues."""
    signed = _founded("c1")
    bad = replace(_content(signed), threshold=0)
    assert _code(lambda: R.edit(signed, bad, now_ms=T0)) is RejectCode.E_ROSTER_MALFORMED


# add_member -----------------------------------------------------------------------------------


def test_add_member_adds_an_active_member() -> None:
    """add_member appends the agency with its role, active."""
    member = _content(_with_member(_founded("c1"), "police")).members[-1]
    assert (member.agency_id, member.roles, member.status) == ("police", ["member"], "active")


def test_add_member_as_member_is_not_a_coordinator() -> None:
    """A plain member does not join the coordinator set."""
    assert _content(_with_member(_founded("c1"), "police")).coordinators == ["c1"]


def test_add_member_as_coordinator_joins_the_coordinators() -> None:
    """role="coordinator" also adds the agency to the coordinator set."""
    signed = R.add_member(_founded("c1"), identity("c2").card_body(), role="coordinator", now_ms=T0)
    assert _content(signed).coordinators == ["c1", "c2"]


def test_add_member_refuses_a_duplicate_agency() -> None:
    """Adding an agency already in the roster is refused."""
    signed = _with_member(_founded("c1"), "police")
    with pytest.raises(TrustError, match="already in the roster"):
        _with_member(signed, "police")


def test_add_member_refuses_a_duplicate_agency_with_new_keys() -> None:
    """Another card for an existing agency id (new keys) is refused too."""
    signed = _with_member(_founded("c1"), "police")
    with pytest.raises(TrustError, match="already in the roster"):
        R.add_member(signed, _second_key("police").card_body(), role="member", now_ms=T0)


# grant / set_channel_schemas ------------------------------------------------------------------


def test_grant_creates_the_channel() -> None:
    """Granting on a new channel creates it with the agency as reader and writer."""
    signed = R.grant(_founded("c1"), "c1", channel="alerts", read=True, write=True, now_ms=T0)
    (channel,) = _content(signed).channels
    assert channel == R.Channel("alerts", ["c1"], ["c1"], 1, 1, [])


def test_grant_write_only() -> None:
    """read=False, write=True makes a writer that is not a reader."""
    signed = R.grant(_founded("c1"), "c1", channel="tips", read=False, write=True, now_ms=T0)
    (channel,) = _content(signed).channels
    assert (channel.readers, channel.writers) == ([], ["c1"])


def test_grant_is_idempotent() -> None:
    """Granting the same right twice lists the agency once."""
    once = R.grant(_founded("c1"), "c1", channel="alerts", read=True, write=True, now_ms=T0)
    twice = R.grant(once, "c1", channel="alerts", read=True, write=True, now_ms=T0)
    assert _content(twice).channels == _content(once).channels


def test_grant_adds_write_to_an_existing_reader() -> None:
    """A later write grant adds the writer and leaves the reader list alone."""
    signed = R.grant(_founded("c1"), "c1", channel="alerts", read=True, write=False, now_ms=T0)
    signed = R.grant(signed, "c1", channel="alerts", read=False, write=True, now_ms=T0)
    (channel,) = _content(signed).channels
    assert (channel.readers, channel.writers) == (["c1"], ["c1"])


def test_grant_keeps_other_channels() -> None:
    """Granting on one channel leaves the others as they were."""
    signed = R.grant(_founded("c1"), "c1", channel="alerts", read=True, write=False, now_ms=T0)
    signed = R.grant(signed, "c1", channel="tips", read=True, write=False, now_ms=T0)
    assert [c.name for c in _content(signed).channels] == ["alerts", "tips"]


def test_grant_refuses_an_unknown_agency() -> None:
    """Rights can only go to agencies in the roster."""
    with pytest.raises(TrustError, match="not in the roster"):
        R.grant(_founded("c1"), "police", channel="alerts", read=True, write=False, now_ms=T0)


def test_set_channel_schemas_sorts_and_deduplicates(taskforce: TaskForce) -> None:
    """The channel's schema list is stored sorted and without repeats."""
    signed = R.set_channel_schemas(
        taskforce.signed, "alerts", ["tf.red_flag", "tf.alert", "tf.alert"], now_ms=T0
    )
    channels = {c.name: c for c in _content(signed).channels}
    assert channels["alerts"].schemas == ["tf.alert", "tf.red_flag"]
    assert channels["tips"].schemas == []


def test_set_channel_schemas_empty_allows_any(taskforce: TaskForce) -> None:
    """An empty list clears an earlier restriction."""
    signed = R.set_channel_schemas(taskforce.signed, "alerts", ["tf.alert"], now_ms=T0)
    signed = R.set_channel_schemas(signed, "alerts", [], now_ms=T0)
    channels = {c.name: c for c in _content(signed).channels}
    assert channels["alerts"].schemas == []


def test_set_channel_schemas_refuses_an_unknown_channel(taskforce: TaskForce) -> None:
    """Schemas can only be set on an existing channel."""
    with pytest.raises(TrustError, match="does not exist"):
        R.set_channel_schemas(taskforce.signed, "nowhere", ["tf.alert"], now_ms=T0)


def test_set_channel_schemas_refuses_an_invalid_subject(taskforce: TaskForce) -> None:
    """A subject the roster format cannot hold ("tf.alert/1") is refused, not written."""
    with pytest.raises(TrustError):
        R.set_channel_schemas(taskforce.signed, "alerts", ["tf.alert/1"], now_ms=T0)


# revoke ---------------------------------------------------------------------------------------


def test_revoke_marks_the_member_removed(taskforce: TaskForce) -> None:
    """A revoked agency's status becomes "removed"."""
    signed = R.revoke(taskforce.signed, "ngo", reason="retired", now_ms=NOW_MS)
    members = {m.agency_id: m for m in _content(signed).members}
    assert members["ngo"].status == "removed"
    assert members["police"].status == "active"


def test_revoke_adds_a_revocation_for_the_signing_key(taskforce: TaskForce) -> None:
    """The agency's signing key is listed as revoked at now_ms with the reason."""
    signed = R.revoke(taskforce.signed, "ngo", reason="compromised", now_ms=NOW_MS)
    assert _content(signed).revoked == [
        R.Revocation(taskforce.ids["ngo"].kid_sig, NOW_MS, "compromised")
    ]


def test_revoke_covers_every_signing_key() -> None:
    """An agency with two signing keys gets a Revocation for each."""
    signed = _with_member(_founded("c1"), "police")
    extra = _second_key("police")
    signed = _add_sign_key(signed, "police", extra)
    signed = R.revoke(signed, "police", reason="retired", now_ms=NOW_MS)
    assert {r.kid for r in _content(signed).revoked} == {
        identity("police").kid_sig,
        extra.kid_sig,
    }


def test_revoke_as_compromised_upgrades_a_retirement(taskforce: TaskForce) -> None:
    """Re-revoking a retired agency as compromised upgrades its one entry, keeping at_ms."""
    signed = R.revoke(taskforce.signed, "ngo", reason="retired", now_ms=NOW_MS)
    signed = R.revoke(signed, "ngo", reason="compromised", now_ms=NOW_MS + 1)
    assert _content(signed).revoked == [
        R.Revocation(taskforce.ids["ngo"].kid_sig, NOW_MS, "compromised")
    ]


def test_revoke_again_with_the_same_reason_is_refused(taskforce: TaskForce) -> None:
    """Revoking an already revoked agency for the same reason changes nothing and says so."""
    signed = R.revoke(taskforce.signed, "ngo", reason="compromised", now_ms=NOW_MS)
    with pytest.raises(TrustError, match="already revoked"):
        R.revoke(signed, "ngo", reason="compromised", now_ms=NOW_MS + 1)


def test_revoke_as_retired_does_not_downgrade(taskforce: TaskForce) -> None:
    """A retirement after a compromise is refused: the stronger entry stands."""
    signed = R.revoke(taskforce.signed, "ngo", reason="compromised", now_ms=NOW_MS)
    with pytest.raises(TrustError, match="already revoked"):
        R.revoke(signed, "ngo", reason="retired", now_ms=NOW_MS + 1)


def test_revoke_refuses_a_coordinator(taskforce: TaskForce) -> None:
    """A coordinator cannot be revoked with a plain edit (it changes the coordinator set)."""
    with pytest.raises(TrustError, match="coordinator"):
        R.revoke(taskforce.signed, "coord", reason="retired", now_ms=NOW_MS)


def test_revoke_refuses_an_unknown_agency(taskforce: TaskForce) -> None:
    """Revoking an agency that is not in the roster is refused."""
    with pytest.raises(TrustError, match="not in the roster"):
        R.revoke(taskforce.signed, "outsider", reason="retired", now_ms=NOW_MS)


# sign -----------------------------------------------------------------------------------------


def test_sign_adds_a_signature_under_the_signers_kid() -> None:
    """sign() appends a RosterSig under the signer's kid that verifies over the roster."""
    c1 = identity("c1")
    signed = _sign(_founded("c1"), c1)
    (sig,) = signed.sigs
    assert sig.kid == c1.kid_sig
    assert verify_signature(c1.sign_pk, R.roster_message(signed.roster), sig.sig)


def test_sign_replaces_an_earlier_signature_by_the_same_key() -> None:
    """Signing twice with one key leaves one signature."""
    c1 = identity("c1")
    assert len(_sign(_founded("c1"), c1, c1).sigs) == 1


def test_sign_replacement_drops_a_bad_earlier_signature() -> None:
    """A bad signature under the signer's kid is replaced by a good one."""
    c1 = identity("c1")
    unsigned = _founded("c1")
    signed = R.sign(R.SignedRoster(unsigned.roster, [_bad_sig(c1)]), c1)
    assert signed == R.sign(unsigned, c1)


def test_sign_keeps_other_signers() -> None:
    """Signatures by different keys accumulate."""
    signed = _sign(_founded("c1", "c2", threshold=2), identity("c1"), identity("c2"))
    assert [s.kid for s in signed.sigs] == [identity("c1").kid_sig, identity("c2").kid_sig]


def test_sign_does_not_change_the_roster_bytes() -> None:
    """Signing leaves the signed content byte for byte as it was."""
    unsigned = _founded("c1")
    assert _sign(unsigned, identity("c1")).roster == unsigned.roster


# verify_roster: signatures --------------------------------------------------------------------


def test_verify_accepts_2_of_3(tf3: TaskForce) -> None:
    """Two of three coordinators' signatures satisfy threshold 2."""
    trusted, _ = _verify(tf3.signed, tf3.anchor)
    assert trusted.taskforce == TF
    assert trusted.seq == 1


def test_verify_accepts_another_pair_of_3(tf3: TaskForce) -> None:
    """Any two of the three coordinators will do (c2 and c3)."""
    signed = R.SignedRoster(tf3.signed.roster, [])
    trusted, _ = _verify(_sign(signed, tf3.ids["c2"], tf3.ids["c3"]), tf3.anchor)
    assert trusted.seq == 1


def test_verify_refuses_1_of_3(tf3: TaskForce) -> None:
    """One signature is not enough for threshold 2."""
    signed = _sign(R.SignedRoster(tf3.signed.roster, []), tf3.ids["c1"])
    assert _code(lambda: _verify(signed, tf3.anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_refuses_an_unsigned_roster(taskforce: TaskForce) -> None:
    """A roster without signatures is E_ROSTER_SIG."""
    signed = R.SignedRoster(taskforce.signed.roster, [])
    assert _code(lambda: _verify(signed, taskforce.anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_counts_an_agency_once_with_two_keys() -> None:
    """Two signatures by one agency's two keys are one approval, not two."""
    signed = _two_key_coordinator_roster()
    anchor = R.anchor_of(_content(signed))
    signed = _sign(signed, identity("c1"), _second_key("c1"))
    assert _code(lambda: _verify(signed, anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_accepts_two_agencies_when_one_used_two_keys() -> None:
    """The two-key agency plus another agency reach threshold 2."""
    signed = _two_key_coordinator_roster()
    anchor = R.anchor_of(_content(signed))
    signed = _sign(signed, identity("c1"), _second_key("c1"), identity("c2"))
    trusted, _ = _verify(signed, anchor)
    assert trusted.roster.threshold == 2


def test_verify_ignores_a_bad_signature(tf3: TaskForce) -> None:
    """A garbage signature under a coordinator's kid does not count."""
    signed = R.SignedRoster(tf3.signed.roster, [_bad_sig(tf3.ids["c1"])])
    signed = _sign(signed, tf3.ids["c2"])
    assert _code(lambda: _verify(signed, tf3.anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_a_bad_signature_does_not_block_a_good_one(tf3: TaskForce) -> None:
    """A bad signature listed before the same key's good one does not hide it."""
    good = _sign(R.SignedRoster(tf3.signed.roster, []), tf3.ids["c1"], tf3.ids["c2"])
    signed = R.SignedRoster(good.roster, [_bad_sig(tf3.ids["c1"]), *good.sigs])
    trusted, _ = _verify(signed, tf3.anchor)
    assert trusted.seq == 1


def test_verify_ignores_a_signature_over_other_content(tf3: TaskForce) -> None:
    """A valid signature over a different roster does not count for this one."""
    other = _with_member(tf3.signed, "customs")
    moved = R.sign(other, tf3.ids["c1"]).sigs[0]
    signed = _sign(R.SignedRoster(tf3.signed.roster, [moved]), tf3.ids["c2"])
    assert _code(lambda: _verify(signed, tf3.anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_ignores_a_non_coordinator_signer(tf3: TaskForce) -> None:
    """A member (not a coordinator) signing does not count towards k."""
    signed = _sign(R.SignedRoster(tf3.signed.roster, []), tf3.ids["c1"], tf3.ids["police"])
    assert _code(lambda: _verify(signed, tf3.anchor)) is RejectCode.E_ROSTER_SIG


def test_verify_refuses_another_taskforce(taskforce: TaskForce) -> None:
    """An anchor for another task force gives E_ROSTER_TASKFORCE."""
    anchor = replace(taskforce.anchor, taskforce="be-south")
    assert _code(lambda: _verify(taskforce.signed, anchor)) is RejectCode.E_ROSTER_TASKFORCE


def test_verify_refuses_garbage() -> None:
    """Bytes that are not a roster give E_ROSTER_MALFORMED."""
    anchor = build_taskforce().anchor
    action = lambda: R.verify_roster(b"\x92\x01\x02", anchor=anchor, state=None, now_ms=NOW_MS)  # noqa: E731
    assert _code(action) is RejectCode.E_ROSTER_MALFORMED


def test_verify_refuses_signed_but_inconsistent_content(
    taskforce: TaskForce, base: R.Roster
) -> None:
    """A correctly signed roster whose content is inconsistent is E_ROSTER_MALFORMED."""
    bad = replace(base, channels=[*base.channels, base.channels[0]])
    signed = R.sign(R.SignedRoster(encode(bad), []), taskforce.ids["coord"])
    assert _code(lambda: _verify(signed, taskforce.anchor)) is RejectCode.E_ROSTER_MALFORMED


# verify_roster: state, coordinator changes, rollback ------------------------------------------


def test_verify_returns_the_state_to_persist(taskforce: TaskForce) -> None:
    """The state holds the roster's seq, hash and implied anchor."""
    trusted, state = _verify(taskforce.signed, taskforce.anchor)
    assert state.seq == 1
    assert state.roster_hash == R.roster_hash(taskforce.signed.roster) == trusted.hash
    assert state.anchor == R.anchor_of(trusted.roster)


def _first_state() -> tuple[R.SignedRoster, R.Anchor, R.RosterState]:
    """A c1-only task force (with police), signed and accepted: roster, pinned anchor, state."""
    signed = _sign(_with_member(_founded("c1"), "police"), identity("c1"))
    anchor = R.anchor_of(_content(signed))
    _, state = _verify(signed, anchor)
    return signed, anchor, state


def _adds_coordinator_c2(signed: R.SignedRoster, *, threshold: int) -> R.SignedRoster:
    changed = R.add_member(signed, identity("c2").card_body(), role="coordinator", now_ms=T0)
    return R.edit(changed, replace(_content(changed), threshold=threshold), now_ms=T0)


def test_coordinator_change_moves_the_anchor_forward() -> None:
    """Adding c2 with k=2, signed by k old and k new, yields the new set as trusted anchor."""
    signed, anchor, state = _first_state()
    changed = _sign(_adds_coordinator_c2(signed, threshold=2), identity("c1"), identity("c2"))
    _, new_state = _verify(changed, anchor, state)
    assert new_state.seq == 2
    assert new_state.anchor.threshold == 2
    assert {k.agency_id for k in new_state.anchor.coordinators} == {"c1", "c2"}
    assert new_state.anchor == R.anchor_of(_content(changed))


def test_coordinator_change_needs_k_of_the_new_set() -> None:
    """The old set's approval alone does not carry a change to a k=2 set."""
    signed, anchor, state = _first_state()
    changed = _sign(_adds_coordinator_c2(signed, threshold=2), identity("c1"))
    assert _code(lambda: _verify(changed, anchor, state)) is RejectCode.E_ROSTER_SIG


def test_coordinator_change_needs_k_of_the_old_set() -> None:
    """The incoming coordinator alone cannot approve its own admission."""
    signed, anchor, state = _first_state()
    changed = _sign(_adds_coordinator_c2(signed, threshold=1), identity("c2"))
    assert _code(lambda: _verify(changed, anchor, state)) is RejectCode.E_ROSTER_SIG


def test_threshold_change_alone_needs_the_new_k() -> None:
    """Raising k without changing the set also needs k signatures of the new policy."""
    signed = _sign(_founded("c1", "c2", threshold=1), identity("c1"))
    anchor = R.anchor_of(_content(signed))
    raised = R.edit(signed, replace(_content(signed), threshold=2), now_ms=T0)
    raised = _sign(raised, identity("c1"))
    assert _code(lambda: _verify(raised, anchor)) is RejectCode.E_ROSTER_SIG


def test_later_verification_uses_the_moved_anchor() -> None:
    """After c2 joined, a roster signed by c2 alone verifies with the state (which wins)."""
    signed, anchor, state = _first_state()
    changed = _sign(_adds_coordinator_c2(signed, threshold=1), identity("c1"))
    _, moved = _verify(changed, anchor, state)
    later = _sign(_with_member(changed, "ngo"), identity("c2"))
    trusted, _ = _verify(later, anchor, moved)
    assert trusted.seq == 3


def test_pinned_anchor_alone_does_not_know_the_new_coordinator() -> None:
    """Without the moved state, the pinned anchor does not trust c2's signature."""
    signed, anchor, state = _first_state()
    changed = _sign(_adds_coordinator_c2(signed, threshold=1), identity("c1"))
    _verify(changed, anchor, state)
    later = _sign(_with_member(changed, "ngo"), identity("c2"))
    assert _code(lambda: _verify(later, anchor, None)) is RejectCode.E_ROSTER_SIG


def test_state_taskforce_takes_precedence_over_the_anchor(taskforce: TaskForce) -> None:
    """A state for another task force refuses the roster even if the anchor matches."""
    _, state = _verify(taskforce.signed, taskforce.anchor)
    foreign = replace(state, anchor=replace(state.anchor, taskforce="be-south"))
    action = lambda: _verify(taskforce.signed, taskforce.anchor, foreign)  # noqa: E731
    assert _code(action) is RejectCode.E_ROSTER_TASKFORCE


def test_verify_refuses_a_lower_seq() -> None:
    """A roster older than the accepted one is E_ROSTER_ROLLBACK."""
    signed, anchor, _ = _first_state()
    newer = _sign(_with_member(signed, "ngo"), identity("c1"))
    _, state = _verify(newer, anchor)
    assert _code(lambda: _verify(signed, anchor, state)) is RejectCode.E_ROSTER_ROLLBACK


def test_verify_refuses_same_seq_with_other_content() -> None:
    """A different roster under the accepted seq is E_ROSTER_ROLLBACK."""
    signed, anchor, _ = _first_state()
    one = _sign(_with_member(signed, "ngo"), identity("c1"))
    other = _sign(_with_member(signed, "labour"), identity("c1"))
    _, state = _verify(one, anchor)
    assert _code(lambda: _verify(other, anchor, state)) is RejectCode.E_ROSTER_ROLLBACK


def test_verify_refuses_a_first_roster_older_than_the_anchor() -> None:
    """Without state, a roster below the anchor's min_seq is E_ROSTER_ROLLBACK."""
    signed, _, _ = _first_state()
    newer = _sign(_with_member(signed, "ngo"), identity("c1"))
    anchor = R.anchor_of(_content(newer))
    assert _code(lambda: _verify(signed, anchor)) is RejectCode.E_ROSTER_ROLLBACK


def test_verify_accepts_the_same_roster_again() -> None:
    """Re-verifying the accepted roster (same seq, same hash) is fine."""
    signed, anchor, state = _first_state()
    _, again = _verify(signed, anchor, state)
    assert again == state


def test_verify_accepts_a_newer_seq() -> None:
    """A higher seq replaces the state's seq and hash."""
    signed, anchor, state = _first_state()
    newer = _sign(_with_member(signed, "ngo"), identity("c1"))
    _, new_state = _verify(newer, anchor, state)
    assert new_state.seq == 2
    assert new_state.roster_hash == R.roster_hash(newer.roster)


def test_verify_refuses_a_roster_past_the_grace_period(taskforce: TaskForce) -> None:
    """One ms past expiry plus the grace period, verification is E_ROSTER_EXPIRED."""
    late = _content(taskforce.signed).expires_ms + R.RECEIVE_GRACE_MS + 1
    action = lambda: _verify(taskforce.signed, taskforce.anchor, now_ms=late)  # noqa: E731
    assert _code(action) is RejectCode.E_ROSTER_EXPIRED


def test_verify_accepts_a_roster_at_the_end_of_grace(taskforce: TaskForce) -> None:
    """Exactly at expiry plus the grace period the roster still verifies."""
    edge = _content(taskforce.signed).expires_ms + R.RECEIVE_GRACE_MS
    trusted, _ = _verify(taskforce.signed, taskforce.anchor, now_ms=edge)
    assert trusted.expired(edge)


# validate_content -----------------------------------------------------------------------------


def _malformed(roster: R.Roster) -> RejectCode:
    return _code(lambda: R.validate_content(roster))


def test_validate_accepts_a_consistent_roster(base: R.Roster) -> None:
    """The kit's roster passes every consistency check."""
    R.validate_content(base)


def test_validate_refuses_an_unknown_version(base: R.Roster) -> None:
    """Only roster version 1 is understood."""
    assert _malformed(replace(base, v=2)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_duplicate_members(base: R.Roster) -> None:
    """An agency listed twice is refused."""
    assert _malformed(replace(base, members=[*base.members, base.members[1]])) is (
        RejectCode.E_ROSTER_MALFORMED
    )


def test_validate_refuses_an_unknown_coordinator(base: R.Roster) -> None:
    """A coordinator that is not a member is refused."""
    bad = replace(base, coordinators=[*base.coordinators, "ghost"])
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_coordinator_without_the_role(base: R.Roster) -> None:
    """A member listed as coordinator without the coordinator role is refused."""
    bad = replace(base, coordinators=[*base.coordinators, "police"])
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_duplicate_coordinator(base: R.Roster) -> None:
    """A coordinator listed twice is refused (it would count twice towards k)."""
    bad = replace(base, coordinators=["coord", "coord"], threshold=2)
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


@pytest.mark.parametrize("threshold", [0, 2])
def test_validate_refuses_a_threshold_out_of_range(base: R.Roster, threshold: int) -> None:
    """k must be between 1 and the number of coordinators."""
    assert _malformed(replace(base, threshold=threshold)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_expiry_equal_to_issue(base: R.Roster) -> None:
    """expires_ms == issued_ms is refused."""
    bad = replace(base, expires_ms=base.issued_ms)
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_expiry_before_issue(base: R.Roster) -> None:
    """expires_ms < issued_ms is refused."""
    bad = replace(base, expires_ms=base.issued_ms - 1)
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_accepts_expiry_one_ms_after_issue(base: R.Roster) -> None:
    """expires_ms == issued_ms + 1 is the shortest valid lifetime."""
    R.validate_content(replace(base, expires_ms=base.issued_ms + 1))


def test_validate_refuses_a_channel_naming_an_unknown_agency(base: R.Roster) -> None:
    """A reader that is not a member is refused."""
    channel = replace(base.channels[0], readers=[*base.channels[0].readers, "ghost"])
    bad = replace(base, channels=[channel, *base.channels[1:]])
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_writer_naming_an_unknown_agency(base: R.Roster) -> None:
    """A writer that is not a member is refused."""
    channel = replace(base.channels[0], writers=["ghost"])
    bad = replace(base, channels=[channel, *base.channels[1:]])
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_duplicate_channel(base: R.Roster) -> None:
    """A channel listed twice is refused."""
    bad = replace(base, channels=[*base.channels, base.channels[0]])
    assert _malformed(bad) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_an_unbound_encryption_key(base: R.Roster) -> None:
    """An enc key whose binding signature does not verify is refused."""
    members = [
        replace(m, enc_self_sig=b"\x00" * 64) if m.agency_id == "police" else m
        for m in base.members
    ]
    assert _malformed(replace(base, members=members)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_swapped_encryption_key(base: R.Roster) -> None:
    """An outsider's enc key under police's binding signature is refused."""
    enc_key = R.KeyValidity(identity("mallory").enc_pk, T0, MAX_UINT)
    members = [replace(m, enc_key=enc_key) if m.agency_id == "police" else m for m in base.members]
    assert _malformed(replace(base, members=members)) is RejectCode.E_ROSTER_MALFORMED


def _police_bound_to(base: R.Roster, enc_pk: bytes) -> R.Roster:
    """``base`` with police's enc key replaced by ``enc_pk``, correctly bound by police."""
    binding = identity("police").sign(enc_binding_message("police", enc_pk))
    members = [
        replace(m, enc_key=replace(m.enc_key, pk=enc_pk), enc_self_sig=binding)
        if m.agency_id == "police"
        else m
        for m in base.members
    ]
    return replace(base, members=members)


def test_validate_accepts_a_rebound_encryption_key(base: R.Roster) -> None:
    """A fresh enc key that police itself bound is consistent (control for the two below)."""
    R.validate_content(_police_bound_to(base, identity("police-new").enc_pk))


def test_validate_refuses_a_shared_encryption_key(base: R.Roster) -> None:
    """Two members with the same encryption key are refused, even if both bound it."""
    ngo = next(m for m in base.members if m.agency_id == "ngo")
    assert _malformed(_police_bound_to(base, ngo.enc_key.pk)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_degenerate_encryption_key(base: R.Roster) -> None:
    """An all-zero (low-order) encryption key is refused, even if bound."""
    assert _malformed(_police_bound_to(base, bytes(32))) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_key_revoked_twice(base: R.Roster) -> None:
    """Two revocation entries for one key are refused."""
    kid = identity("police").kid_sig
    revoked = [R.Revocation(kid, T0, "retired"), R.Revocation(kid, T0, "compromised")]
    assert _malformed(replace(base, revoked=revoked)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_a_threshold_no_coordinator_can_sign(base: R.Roster) -> None:
    """k=1 with the only coordinator's only key revoked leaves nobody to sign: refused."""
    revoked = [R.Revocation(identity("coord").kid_sig, T0, "compromised")]
    assert _malformed(replace(base, revoked=revoked)) is RejectCode.E_ROSTER_MALFORMED


def test_validate_refuses_an_empty_key_window(base: R.Roster) -> None:
    """A key whose not_before is after its not_after is refused."""
    members = [
        replace(m, enc_key=replace(m.enc_key, not_before_ms=10, not_after_ms=9))
        if m.agency_id == "police"
        else m
        for m in base.members
    ]
    assert _malformed(replace(base, members=members)) is RejectCode.E_ROSTER_MALFORMED


# TrustedRoster --------------------------------------------------------------------------------


def test_active_readers_lists_every_active_reader(taskforce: TaskForce) -> None:
    """Without removals every reader of the channel is active."""
    assert taskforce.trusted().active_readers("alerts") == ["coord", "police", "ngo", "labour"]


def test_active_readers_excludes_removed_members(taskforce: TaskForce) -> None:
    """A revoked (removed) agency is no longer an active reader."""
    signed = R.sign(
        R.revoke(taskforce.signed, "ngo", reason="retired", now_ms=NOW_MS), taskforce.ids["coord"]
    )
    trusted, _ = _verify(signed, taskforce.anchor)
    assert "ngo" in trusted.channels["alerts"].readers
    assert trusted.active_readers("alerts") == ["coord", "police", "labour"]


def test_trusted_roster_indexes_keys(taskforce: TaskForce) -> None:
    """Signing kids map to their member and enc kids to their agency."""
    trusted = taskforce.trusted()
    police = taskforce.ids["police"]
    assert trusted.sign_keys[police.kid_sig].member.agency_id == "police"
    assert trusted.agency_of_enc_kid[police.kid_enc] == "police"


def test_check_sendable_at_expiry(taskforce: TaskForce) -> None:
    """Sending is still allowed at exactly expires_ms."""
    trusted = taskforce.trusted()
    trusted.check_sendable(trusted.roster.expires_ms)


def test_check_sendable_after_expiry(taskforce: TaskForce) -> None:
    """One ms after expires_ms sending is E_ROSTER_EXPIRED."""
    trusted = taskforce.trusted()
    action = lambda: trusted.check_sendable(trusted.roster.expires_ms + 1)  # noqa: E731
    assert _code(action) is RejectCode.E_ROSTER_EXPIRED


def test_check_receivable_after_expiry_within_grace(taskforce: TaskForce) -> None:
    """Receiving continues after expiry, up to exactly the grace period."""
    trusted = taskforce.trusted()
    trusted.check_receivable(trusted.roster.expires_ms + 1)
    trusted.check_receivable(trusted.roster.expires_ms + R.RECEIVE_GRACE_MS)


def test_check_receivable_after_grace(taskforce: TaskForce) -> None:
    """One ms past the grace period receiving is E_ROSTER_EXPIRED."""
    trusted = taskforce.trusted()
    late = trusted.roster.expires_ms + R.RECEIVE_GRACE_MS + 1
    assert _code(lambda: trusted.check_receivable(late)) is RejectCode.E_ROSTER_EXPIRED


def test_receive_grace_is_seven_days() -> None:
    """The receive grace period is 7 days."""
    assert R.RECEIVE_GRACE_MS == 7 * 24 * 3600 * 1000


def test_expired_boundary(taskforce: TaskForce) -> None:
    """expired() is false at expires_ms and true one ms later."""
    trusted = taskforce.trusted()
    assert not trusted.expired(trusted.roster.expires_ms)
    assert trusted.expired(trusted.roster.expires_ms + 1)


# anchor_of / self_verify / decode_anchor ------------------------------------------------------


def test_anchor_of_lists_every_coordinator_key() -> None:
    """Both signing keys of a two-key coordinator appear, plus the other coordinator's."""
    roster = _content(_two_key_coordinator_roster())
    anchor = R.anchor_of(roster)
    assert sorted((k.agency_id, k.sign_pk) for k in anchor.coordinators) == sorted(
        [
            ("c1", identity("c1").sign_pk),
            ("c1", _second_key("c1").sign_pk),
            ("c2", identity("c2").sign_pk),
        ]
    )


def test_anchor_of_is_sorted() -> None:
    """Anchor keys are sorted by (agency, key) so equal sets encode equally."""
    anchor = R.anchor_of(_content(_two_key_coordinator_roster()))
    keys = [(k.agency_id, k.sign_pk) for k in anchor.coordinators]
    assert keys == sorted(keys)


def test_anchor_of_leaves_out_a_revoked_coordinator_key() -> None:
    """A coordinator key listed as revoked has no vote in the anchor."""
    roster = _content(_two_key_coordinator_roster())
    revoked = [R.Revocation(_second_key("c1").kid_sig, T0, "compromised")]
    anchor = R.anchor_of(replace(roster, revoked=revoked))
    assert _second_key("c1").sign_pk not in {k.sign_pk for k in anchor.coordinators}
    assert identity("c1").sign_pk in {k.sign_pk for k in anchor.coordinators}


def test_anchor_of_leaves_out_a_key_retired_before_issue() -> None:
    """A coordinator key whose window ended before the roster was issued has no vote."""
    roster = _content(_two_key_coordinator_roster())
    members = [
        replace(m, sign_keys=[m.sign_keys[0], replace(m.sign_keys[1], not_after_ms=T0 - 1)])
        if m.agency_id == "c1"
        else m
        for m in roster.members
    ]
    anchor = R.anchor_of(replace(roster, members=members))
    assert _second_key("c1").sign_pk not in {k.sign_pk for k in anchor.coordinators}


def test_anchor_of_pins_the_roster_seq(taskforce: TaskForce) -> None:
    """The anchor records the seq it was exported from as its min_seq."""
    signed = R.sign(_with_member(taskforce.signed, "customs"), taskforce.ids["coord"])
    assert R.anchor_of(_content(signed)).min_seq == 2


def test_anchor_of_excludes_members(taskforce: TaskForce) -> None:
    """Only coordinators' keys are in the anchor."""
    assert [k.agency_id for k in taskforce.anchor.coordinators] == ["coord"]


def test_anchor_of_copies_taskforce_and_threshold(tf3: TaskForce) -> None:
    """The anchor names the task force and the roster's threshold."""
    assert (tf3.anchor.taskforce, tf3.anchor.threshold) == (TF, 2)


def test_self_verify_reports_approvals(tf3: TaskForce) -> None:
    """self_verify names the coordinators whose signatures are valid."""
    _, roster, approvals = R.self_verify(encode(tf3.signed))
    assert approvals == {"c1", "c2"}
    assert roster.seq == 1


def test_self_verify_of_unsigned_roster_reports_none() -> None:
    """An unsigned roster has no approvals."""
    _, _, approvals = R.self_verify(encode(_founded("c1")))
    assert approvals == set()


def test_self_verify_ignores_bad_signatures(tf3: TaskForce) -> None:
    """A bad signature is not reported as an approval."""
    signed = R.SignedRoster(tf3.signed.roster, [_bad_sig(tf3.ids["c3"]), *tf3.signed.sigs])
    _, _, approvals = R.self_verify(encode(signed))
    assert approvals == {"c1", "c2"}


def test_decode_anchor_round_trips(tf3: TaskForce) -> None:
    """An encoded anchor decodes to itself."""
    assert R.decode_anchor(encode(tf3.anchor)) == tf3.anchor


def test_decode_anchor_refuses_an_impossible_threshold(tf3: TaskForce) -> None:
    """An anchor whose k exceeds its keys is a TrustError."""
    with pytest.raises(TrustError, match="threshold"):
        R.decode_anchor(encode(replace(tf3.anchor, threshold=4)))


def test_roster_signature_message_is_labelled() -> None:
    """Coordinators sign L("tfshare/v1/roster") || u32(roster)."""
    assert R.roster_message(b"abc") == b"tfshare/v1/roster\x00\x00\x00\x00\x03abc"


def test_kid_of_revocation_matches_kid_sig(taskforce: TaskForce) -> None:
    """Revocations are keyed by kid_sig of the revoked signing key."""
    signed = R.revoke(taskforce.signed, "police", reason="retired", now_ms=NOW_MS)
    assert _content(signed).revoked[0].kid == kid_sig(taskforce.ids["police"].sign_pk)
