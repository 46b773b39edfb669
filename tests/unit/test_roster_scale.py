"""Rosters of 20,000 members (issue 15): limits, the optional trailing elements, linear
verification with the previous roster, incremental edits, channel modes, epoch policies,
roles and key rotation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce, identity

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, NonCanonical, encode
from tfshare.errors import RejectCode, RosterRejected, TrustError
from tfshare.keys import Identity, enc_binding_message, kid_enc, kid_sig

T0 = NOW_MS - 3_600_000
replace = msgspec.structs.replace


def _content(signed: R.SignedRoster) -> R.Roster:
    return R.decode_signed_roster(encode(signed))[1]


def _verify(
    tf: TaskForce, signed: R.SignedRoster, previous: R.TrustedRoster | None = None
) -> R.TrustedRoster:
    signed = R.sign(signed, tf.ids["coord"])
    trusted, _ = R.verify_roster(
        encode(signed), anchor=tf.anchor, state=None, now_ms=NOW_MS, previous=previous
    )
    return trusted


def _code(action: Callable[[], object]) -> RejectCode:
    with pytest.raises(RosterRejected) as info:
        action()
    return info.value.reject_code


# ---------------------------------------------------------------------------------------------
# Limits: structs built without signatures (a real key per member would take seconds)


def _fake_member(i: int) -> R.Member:
    """A member whose fields have the right shapes (not valid keys: decoding is the point)."""
    pk = i.to_bytes(4, "big") + bytes(28)
    return R.Member(
        agency_id=f"a{i}",
        display_name=f"Agency {i}",
        roles=["member"],
        sign_keys=[R.KeyValidity(pk, 0, MAX_UINT)],
        enc_key=R.KeyValidity(b"\x01" + pk[1:], 0, MAX_UINT),
        enc_self_sig=bytes(64),
        nats_user="U" + "A" * 55,
        status="active",
    )


MEMBERS_AT_LIMIT = [_fake_member(i) for i in range(R.MAX_MEMBERS + 1)]


def _big(members: int = 1, readers: int = 0, revoked: int = 0, retired: int = 0) -> R.SignedRoster:
    names = [f"a{i}" for i in range(readers)]
    roster = R.Roster(
        v=1,
        taskforce="big",
        seq=1,
        issued_ms=T0,
        expires_ms=NOW_MS,
        threshold=1,
        coordinators=["a0"],
        members=MEMBERS_AT_LIMIT[:members],
        channels=[R.Channel("alerts", names, names, 1, 1, [])],
        revoked=[R.Revocation(i.to_bytes(8, "big"), T0, "retired") for i in range(revoked)],
        retired_enc_keys=[
            R.RetiredEncKey("a0", i.to_bytes(32, "big"), 0, T0) for i in range(retired)
        ],
    )
    return R.SignedRoster(roster=R.encode_roster(roster), sigs=[])


@pytest.mark.parametrize(
    ("shape", "at_limit"),
    [
        ({"members": R.MAX_MEMBERS}, True),
        ({"members": R.MAX_MEMBERS + 1}, False),
        ({"readers": R.MAX_MEMBERS}, True),
        ({"readers": R.MAX_MEMBERS + 1}, False),
        ({"revoked": R.MAX_REVOKED}, True),
        ({"revoked": R.MAX_REVOKED + 1}, False),
        ({"retired": R.MAX_RETIRED_ENC_KEYS}, True),
        ({"retired": R.MAX_RETIRED_ENC_KEYS + 1}, False),
    ],
)
def test_a_roster_at_the_limits_decodes_and_one_over_is_malformed(
    shape: dict[str, int], at_limit: bool
) -> None:
    """20,000 members, readers and writers; 40,000 revocations and retired keys."""
    data = encode(_big(**shape))
    if at_limit:
        _, roster = R.decode_signed_roster(data)
        sizes = {
            "members": len(roster.members),
            "readers": len(roster.channels[0].writers),
            "revoked": len(roster.revoked),
            "retired": len(roster.retired_enc_keys),
        }
        assert {k: sizes[k] for k in shape} == shape
        return
    assert _code(lambda: R.decode_signed_roster(data)) is RejectCode.E_ROSTER_MALFORMED
    anchor = R.Anchor("big", 1, [R.CoordinatorKey("a0", bytes(32))], 0)
    verify = lambda: R.verify_roster(data, anchor=anchor, state=None, now_ms=NOW_MS)  # noqa: E731
    assert _code(verify) is RejectCode.E_ROSTER_MALFORMED


def test_the_limits_are_those_of_issue_15() -> None:
    assert (R.MAX_MEMBERS, R.MAX_REVOKED, R.MAX_CHANNELS) == (20_000, 40_000, 256)
    assert (R.DEFAULT_EPOCH_PERIOD_MS, R.DEFAULT_EPOCH_MAX_MESSAGES) == (7 * 86_400_000, 100_000)


# ---------------------------------------------------------------------------------------------
# The trailing elements: old rosters keep their bytes, one canonical spelling each


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


def test_a_roster_without_the_new_elements_keeps_its_ten_element_bytes(tf: TaskForce) -> None:
    data = tf.signed.roster
    assert data[0] == 0x9A  # a msgpack array of 10
    roster = R.decode_roster(data)
    assert (roster.retired_enc_keys, roster.epoch_policies) == ([], [])
    assert R.encode_roster(roster) == data


def _elements(roster: R.Roster) -> int:
    return len(msgspec.msgpack.decode(R.encode_roster(roster)))


def test_trailing_elements_are_encoded_up_to_the_last_that_is_not_its_default(
    tf: TaskForce,
) -> None:
    roster = _content(tf.signed)
    retired = [R.RetiredEncKey("police", bytes(range(32)), 0, T0)]
    policy = [R.EpochPolicy("alerts", 60_000, 10)]
    assert _elements(replace(roster, witness_threshold=1)) == 11
    assert _elements(replace(roster, retired_enc_keys=retired)) == 12
    assert _elements(replace(roster, epoch_policies=policy)) == 13
    for changed in (
        replace(roster, retired_enc_keys=retired),
        replace(roster, epoch_policies=policy),
        replace(roster, witness_threshold=2, retired_enc_keys=retired, epoch_policies=policy),
    ):
        assert R.decode_roster(R.encode_roster(changed)) == changed


@pytest.mark.parametrize("spelled_out", [11, 12, 13])
def test_a_trailing_default_spelled_out_is_refused_as_non_canonical(
    tf: TaskForce, spelled_out: int
) -> None:
    """An 11th element 0, a 12th [] or a 13th []: the canonical spelling is absence."""
    fields = list(msgspec.structs.astuple(_content(tf.signed)))
    data = encode(fields[:spelled_out])
    with pytest.raises(NonCanonical):
        R.decode_roster(data)
    signed = encode(R.SignedRoster(roster=data, sigs=[]))
    assert _code(lambda: R.decode_signed_roster(signed)) is RejectCode.E_ROSTER_MALFORMED


# ---------------------------------------------------------------------------------------------
# Counting the costly primitives


class Calls:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return counted

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    counter = Calls()
    for name in ("_verify", "usable_x25519_key", "decode_roster", "encode_roster", "kid_sig"):
        monkeypatch.setattr(R, name, counter.wrap(name, getattr(R, name)))
    yield counter


def _members(n: int) -> list[Identity]:
    rng = DeterministicRng(f"members-{n}")
    return [Identity.generate(f"m{i:03d}", f"M {i}", rng=rng, now_ms=T0) for i in range(n)]


MANY = _members(40)


def _taskforce_of(n: int) -> TaskForce:
    tf = build_taskforce()
    signed = R.add_members(tf.signed, [m.card_body() for m in MANY[:n]], role="member", now_ms=T0)
    signed = R.grant(signed, None, channel="alerts", read=True, write=False, now_ms=T0)
    return TaskForce(ids=tf.ids, signed=R.sign(signed, tf.ids["coord"]), anchor=tf.anchor)


def test_verify_with_the_previous_roster_checks_only_changed_members(calls: Calls) -> None:
    tf = _taskforce_of(20)
    members = len(_content(tf.signed).members)
    calls.counts.clear()
    first = _verify(tf, tf.signed)
    assert calls["usable_x25519_key"] == members  # first join: every member
    assert calls["_verify"] == members + 1  # each binding, and the roster signature
    edited = R.grant(tf.signed, "m000", channel="tips", read=True, write=False, now_ms=T0)
    calls.counts.clear()
    second = _verify(tf, edited, previous=first)
    assert calls["usable_x25519_key"] == 0
    assert calls["_verify"] == 1  # the roster signature only
    assert "m000" in second.readers["tips"]


def test_a_changed_member_is_checked_even_with_the_previous_roster_given(
    tf: TaskForce, calls: Calls
) -> None:
    """ngo's binding signature broken in the new roster: refused though ngo was fine before."""
    first = _verify(tf, tf.signed)
    roster = _content(tf.signed)
    broken = [
        replace(m, enc_self_sig=bytes(64)) if m.agency_id == "ngo" else m for m in roster.members
    ]
    forged = R.SignedRoster(roster=R.encode_roster(replace(roster, members=broken)), sigs=[])
    calls.counts.clear()
    assert _code(lambda: _verify(tf, forged, previous=first)) is RejectCode.E_ROSTER_MALFORMED
    assert calls["usable_x25519_key"] == 1  # ngo's record alone was looked at again


def test_a_previous_roster_that_was_not_verified_spares_no_check(
    tf: TaskForce, calls: Calls
) -> None:
    """A TrustedRoster built without verification (evidence views do) vouches for nothing."""
    roster = _content(tf.signed)
    unverified = R.TrustedRoster(roster, tf.signed.roster)
    calls.counts.clear()
    _verify(tf, tf.signed, previous=unverified)
    assert calls["usable_x25519_key"] == len(roster.members)


def test_verify_with_previous_reuses_the_key_ids_of_unchanged_members(calls: Calls) -> None:
    tf = _taskforce_of(30)
    first = _verify(tf, tf.signed)
    edited = R.grant(tf.signed, "m001", channel="tips", read=True, write=False, now_ms=T0)
    calls.counts.clear()
    second = _verify(tf, edited, previous=first)
    # No member's keys are hashed again: only the coordinators' (their votes) are.
    assert calls["kid_sig"] <= 4
    assert second.sign_keys.keys() == first.sign_keys.keys()
    assert second.enc_kid_of == first.enc_kid_of


@pytest.mark.parametrize("n", [5, 40])
def test_an_edit_decodes_once_encodes_once_and_checks_no_unchanged_member(
    n: int, calls: Calls
) -> None:
    """The same number of costly calls for 5 or 40 members (a canonical check is an encode);
    a rotation checks its one new binding and key, nothing else."""
    tf = _taskforce_of(n)
    newcomer = identity("newcomer").card_body()
    edits: list[Callable[[R.SignedRoster], R.SignedRoster]] = [
        lambda s: R.add_members(s, [newcomer], role="member", now_ms=T0),
        lambda s: R.grant(s, None, channel="cases", read=True, write=True, now_ms=T0),
        lambda s: R.set_channel_modes(s, "alerts", direct=True, epoch=True, now_ms=T0),
        lambda s: R.set_epoch_policy(s, "alerts", period_ms=60_000, max_messages=9, now_ms=T0),
        lambda s: R.set_roles(s, "m000", ["member", "key-manager"], now_ms=T0),
        lambda s: R.revoke(s, "m001", reason="retired", now_ms=T0),
    ]
    for edit in edits:
        calls.counts.clear()
        edited = edit(tf.signed)
        assert (calls["decode_roster"], calls["encode_roster"]) == (1, 2)
        assert calls["_verify"] == calls["usable_x25519_key"] == 0
        _verify(tf, edited)  # and what it made is a valid roster
    calls.counts.clear()
    rotated = _rotate(tf.signed, "m002", _next_keys("m002"))
    assert (calls["decode_roster"], calls["encode_roster"]) == (1, 2)
    assert calls["_verify"] == calls["usable_x25519_key"] == 1
    _verify(tf, rotated)


def test_add_members_adds_a_batch_in_one_version(tf: TaskForce) -> None:
    cards = [m.card_body() for m in MANY[:5]]
    signed = R.add_members(tf.signed, cards, role="member", now_ms=T0)
    roster = _content(signed)
    assert [m.agency_id for m in roster.members[-5:]] == [c.agency_id for c in cards]
    assert roster.seq == _content(tf.signed).seq + 1
    _verify(tf, signed)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c, tf: replace(c, agency_id="police"), "already in the roster"),
        (lambda c, tf: replace(c, sign_pk=tf.ids["ngo"].sign_pk), "signing key"),
        (lambda c, tf: replace(c, enc_pk=tf.ids["ngo"].enc_pk), "encryption key"),
        (lambda c, tf: replace(c, nats_user=tf.ids["ngo"].nats_user), "NATS key"),
    ],
)
def test_add_members_refuses_a_card_clashing_with_the_roster(
    tf: TaskForce, mutate: Callable[[Any, TaskForce], Any], message: str
) -> None:
    cards = [MANY[0].card_body(), mutate(MANY[1].card_body(), tf)]
    with pytest.raises(TrustError, match=message):
        R.add_members(tf.signed, cards, role="member", now_ms=T0)


def test_add_members_refuses_one_agency_twice_in_the_batch(tf: TaskForce) -> None:
    with pytest.raises(TrustError, match="already in the roster"):
        R.add_members(tf.signed, [MANY[0].card_body()] * 2, role="member", now_ms=T0)


def test_add_members_refuses_to_pass_the_member_limit(
    tf: TaskForce, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(R, "MAX_MEMBERS", len(_content(tf.signed).members) + 1)
    with pytest.raises(TrustError, match="would exceed"):
        R.add_members(tf.signed, [m.card_body() for m in MANY[:2]], role="member", now_ms=T0)


def test_grant_to_all_active_members_skips_a_removed_one(tf: TaskForce) -> None:
    signed = R.revoke(tf.signed, "labour", reason="retired", now_ms=T0)
    signed = R.grant(signed, None, channel="cases", read=True, write=False, now_ms=T0)
    cases = next(c for c in _content(signed).channels if c.name == "cases")
    assert cases.readers == ["coord", "police", "ngo"]
    assert cases.mode_policy == R.MODE_DIRECT


def test_grant_several_agencies_keeps_order_and_existing_rights(tf: TaskForce) -> None:
    signed = R.grant(
        tf.signed, ["ngo", "police", "ngo"], channel="tips", read=True, write=True, now_ms=T0
    )
    tips = next(c for c in _content(signed).channels if c.name == "tips")
    assert tips.readers == ["police", "ngo"]
    assert tips.writers == ["ngo", "police"]


def test_grant_refuses_an_unknown_agency(tf: TaskForce) -> None:
    with pytest.raises(TrustError, match="'outsider' is not in the roster"):
        R.grant(tf.signed, ["ngo", "outsider"], channel="tips", read=True, write=False, now_ms=T0)


def test_ungrant_takes_rights_from_several(tf: TaskForce) -> None:
    signed = R.ungrant(
        tf.signed, ["police", "labour"], channel="alerts", read=False, write=True, now_ms=T0
    )
    alerts = next(c for c in _content(signed).channels if c.name == "alerts")
    assert alerts.writers == []
    assert "police" in alerts.readers


# ---------------------------------------------------------------------------------------------
# Channel modes, epoch policies, roles


def test_channel_modes_are_a_bit_set(tf: TaskForce) -> None:
    both = R.set_channel_modes(tf.signed, "alerts", direct=True, epoch=True, now_ms=T0)
    assert _verify(tf, both).channels["alerts"].mode_policy == 3
    epoch = R.set_channel_modes(both, "alerts", direct=False, epoch=True, now_ms=T0)
    assert _verify(tf, epoch).channels["alerts"].mode_policy == R.MODE_EPOCH
    with pytest.raises(TrustError, match="at least one mode"):
        R.set_channel_modes(tf.signed, "alerts", direct=False, epoch=False, now_ms=T0)
    with pytest.raises(TrustError, match="already allows direct"):
        R.set_channel_modes(tf.signed, "alerts", direct=True, epoch=False, now_ms=T0)
    with pytest.raises(TrustError, match="does not exist"):
        R.set_channel_modes(tf.signed, "nope", direct=True, epoch=True, now_ms=T0)


def test_epoch_policies_are_sorted_one_per_channel_and_defaults_are_no_entry(
    tf: TaskForce,
) -> None:
    signed = R.set_epoch_policy(tf.signed, "tips", period_ms=3_600_000, max_messages=5, now_ms=T0)
    signed = R.set_epoch_policy(signed, "alerts", period_ms=60_000, max_messages=1, now_ms=T0)
    signed = R.set_epoch_policy(signed, "tips", period_ms=7_200_000, max_messages=5, now_ms=T0)
    trusted = _verify(tf, signed)
    assert [p.channel for p in trusted.roster.epoch_policies] == ["alerts", "tips"]
    assert trusted.epoch_policy("tips") == (7_200_000, 5)
    assert trusted.epoch_policy("alerts") == (60_000, 1)
    back = R.set_epoch_policy(
        signed,
        "alerts",
        period_ms=R.DEFAULT_EPOCH_PERIOD_MS,
        max_messages=R.DEFAULT_EPOCH_MAX_MESSAGES,
        now_ms=T0,
    )
    back = R.set_epoch_policy(
        back,
        "tips",
        period_ms=R.DEFAULT_EPOCH_PERIOD_MS,
        max_messages=R.DEFAULT_EPOCH_MAX_MESSAGES,
        now_ms=T0,
    )
    assert _content(back).epoch_policies == []
    assert len(msgspec.msgpack.decode(back.roster)) == 10  # back to the old shape
    assert _verify(tf, back).epoch_policy("alerts") == (
        R.DEFAULT_EPOCH_PERIOD_MS,
        R.DEFAULT_EPOCH_MAX_MESSAGES,
    )


@pytest.mark.parametrize(
    ("period_ms", "max_messages", "message"),
    [(59_999, 5, "at least a minute"), (60_000, 0, "at least one message")],
)
def test_epoch_policy_bounds(
    tf: TaskForce, period_ms: int, max_messages: int, message: str
) -> None:
    with pytest.raises(TrustError, match=message):
        R.set_epoch_policy(
            tf.signed, "alerts", period_ms=period_ms, max_messages=max_messages, now_ms=T0
        )


def _malformed_with(tf: TaskForce, **fields: Any) -> RejectCode:
    roster = replace(_content(tf.signed), **fields)
    forged = R.SignedRoster(roster=R.encode_roster(roster), sigs=[])
    return _code(lambda: _verify(tf, forged))


@pytest.mark.parametrize(
    "policies",
    [
        [R.EpochPolicy("nope", 60_000, 1)],
        [R.EpochPolicy("tips", 60_000, 1), R.EpochPolicy("alerts", 60_000, 1)],
        [R.EpochPolicy("alerts", 60_000, 1), R.EpochPolicy("alerts", 120_000, 1)],
        [R.EpochPolicy("alerts", 59_999, 1)],
        [R.EpochPolicy("alerts", 60_000, 0)],
    ],
    ids=["unknown-channel", "unsorted", "twice", "short-period", "no-message"],
)
def test_a_signed_roster_with_a_bad_epoch_policy_is_refused(
    tf: TaskForce, policies: list[R.EpochPolicy]
) -> None:
    assert _malformed_with(tf, epoch_policies=policies) is RejectCode.E_ROSTER_MALFORMED


def test_a_signed_roster_with_a_channel_of_no_mode_is_refused(tf: TaskForce) -> None:
    roster = _content(tf.signed)
    channels = [replace(c, mode_policy=0) for c in roster.channels]
    assert _malformed_with(tf, channels=channels) is RejectCode.E_ROSTER_MALFORMED


@pytest.mark.parametrize(
    "retired",
    [
        [R.RetiredEncKey("outsider", bytes(range(32)), 0, T0)],
        [R.RetiredEncKey("police", bytes(range(32)), T0, 0)],
        [R.RetiredEncKey("police", b"\x05" * 32, 0, T0)] * 2,
    ],
    ids=["unknown-agency", "empty-window", "twice"],
)
def test_a_signed_roster_with_a_bad_retired_key_is_refused(
    tf: TaskForce, retired: list[R.RetiredEncKey]
) -> None:
    assert _malformed_with(tf, retired_enc_keys=retired) is RejectCode.E_ROSTER_MALFORMED


def test_a_retired_key_that_is_a_members_current_key_is_refused(tf: TaskForce) -> None:
    retired = [R.RetiredEncKey("police", tf.ids["ngo"].enc_pk, 0, T0)]
    assert _malformed_with(tf, retired_enc_keys=retired) is RejectCode.E_ROSTER_MALFORMED


def test_roles_make_a_key_manager_and_coordinator_changes_are_refused(tf: TaskForce) -> None:
    signed = R.set_roles(tf.signed, "ngo", ["member", "key-manager"], now_ms=T0)
    trusted = _verify(tf, signed)
    assert trusted.key_managers == frozenset({"ngo"})
    assert trusted.members["ngo"].roles == ["member", "key-manager"]
    with pytest.raises(TrustError, match="coordinator"):
        R.set_roles(tf.signed, "ngo", ["coordinator"], now_ms=T0)
    with pytest.raises(TrustError, match="coordinator"):
        R.set_roles(tf.signed, "coord", ["member"], now_ms=T0)
    with pytest.raises(TrustError, match="already has the roles"):
        R.set_roles(signed, "ngo", ["key-manager", "member"], now_ms=T0)


def test_a_removed_key_manager_is_not_one(tf: TaskForce) -> None:
    signed = R.set_roles(tf.signed, "ngo", ["member", "key-manager"], now_ms=T0)
    signed = R.revoke(signed, "ngo", reason="retired", now_ms=T0)
    assert _verify(tf, signed).key_managers == frozenset()


# ---------------------------------------------------------------------------------------------
# Key rotation


GRACE_MS = 7 * 86_400_000
ROTATED = NOW_MS - 1_800_000


def _next_keys(agency: str, tag: str = "2") -> Identity:
    return Identity.generate(agency, "x", rng=DeterministicRng(f"{agency}/{tag}"), now_ms=ROTATED)


def _rotate(
    signed: R.SignedRoster, agency: str, new: Identity, *, sign_pk: bytes | None = None
) -> R.SignedRoster:
    card = new.card_body()
    return R.apply_rotation(
        signed,
        agency=agency,
        new_enc_pk=card.enc_pk,
        enc_bind_sig=card.enc_bind_sig,
        new_sign_pk=card.sign_pk if sign_pk is None else sign_pk,
        created_ms=ROTATED,
        grace_ms=GRACE_MS,
        now_ms=ROTATED,
    )


def test_an_encryption_key_rotation_retires_the_old_key_for_the_grace_period(
    tf: TaskForce,
) -> None:
    police = tf.ids["police"]
    # The encryption key alone: the binding is signed by the signing key that stays.
    new_enc = _next_keys("police")
    sig = police.sign(enc_binding_message("police", new_enc.enc_pk))
    signed = R.apply_rotation(
        tf.signed,
        agency="police",
        new_enc_pk=new_enc.enc_pk,
        enc_bind_sig=sig,
        new_sign_pk=police.sign_pk,
        created_ms=ROTATED,
        grace_ms=GRACE_MS,
        now_ms=ROTATED,
    )
    trusted = _verify(tf, signed)
    member = trusted.members["police"]
    assert member.enc_key == R.KeyValidity(new_enc.enc_pk, ROTATED, MAX_UINT)
    assert member.sign_keys == _content(tf.signed).members[1].sign_keys
    assert trusted.roster.retired_enc_keys == [
        R.RetiredEncKey("police", police.enc_pk, police.created_ms, ROTATED + GRACE_MS)
    ]
    assert trusted.agency_of_enc_kid[kid_enc(police.enc_pk)] == "police"
    assert trusted.agency_of_enc_kid[kid_enc(new_enc.enc_pk)] == "police"
    assert trusted.enc_kid_of["police"] == kid_enc(new_enc.enc_pk)


def test_a_signing_key_rotation_appends_the_key_and_closes_the_old_window(
    tf: TaskForce,
) -> None:
    new = _next_keys("police")
    trusted = _verify(tf, _rotate(tf.signed, "police", new))
    keys = trusted.members["police"].sign_keys
    assert [k.pk for k in keys] == [tf.ids["police"].sign_pk, new.sign_pk]
    assert keys[0].not_after_ms == ROTATED
    assert keys[1] == R.KeyValidity(new.sign_pk, ROTATED, MAX_UINT)
    assert trusted.sign_keys[kid_sig(new.sign_pk)].member.agency_id == "police"


def test_a_rotation_whose_binding_is_not_by_the_new_signing_key_is_refused(
    tf: TaskForce,
) -> None:
    new = _next_keys("police")
    with pytest.raises(TrustError, match="not bound"):
        # The binding signed by new's key, but the statement keeps the old signing key.
        _rotate(tf.signed, "police", new, sign_pk=tf.ids["police"].sign_pk)


def test_a_rotation_to_a_key_already_in_the_roster_is_refused(tf: TaskForce) -> None:
    once = _rotate(tf.signed, "police", _next_keys("police"))
    with pytest.raises(TrustError, match=r"already has|already in the roster"):
        _rotate(once, "police", _next_keys("police"))
    ngo = tf.ids["ngo"]
    with pytest.raises(TrustError, match="already in the roster"):
        R.apply_rotation(
            tf.signed,
            agency="police",
            new_enc_pk=ngo.enc_pk,
            enc_bind_sig=tf.ids["police"].sign(enc_binding_message("police", ngo.enc_pk)),
            new_sign_pk=tf.ids["police"].sign_pk,
            created_ms=ROTATED,
            grace_ms=GRACE_MS,
            now_ms=ROTATED,
        )


def test_a_ninth_signing_key_is_refused_with_a_hint(tf: TaskForce) -> None:
    signed = tf.signed
    rotated_at = ROTATED - 100
    for n in range(R.MAX_KEYS_PER_MEMBER - 1):
        new = _next_keys("police", str(n))
        card = new.card_body()
        signed = R.apply_rotation(
            signed,
            agency="police",
            new_enc_pk=card.enc_pk,
            enc_bind_sig=card.enc_bind_sig,
            new_sign_pk=card.sign_pk,
            created_ms=rotated_at + n,
            grace_ms=GRACE_MS,
            now_ms=ROTATED,
        )
    assert len(_content(signed).members[1].sign_keys) == R.MAX_KEYS_PER_MEMBER
    with pytest.raises(TrustError) as info:
        _rotate(signed, "police", _next_keys("police", "last"))
    assert "8 signing keys" in info.value.message
    assert info.value.hint is not None and "roster revoke" in info.value.hint


def test_a_rotation_from_the_future_or_for_a_removed_agency_is_refused(tf: TaskForce) -> None:
    card = _next_keys("police").card_body()
    with pytest.raises(TrustError, match="future"):
        R.apply_rotation(
            tf.signed,
            agency="police",
            new_enc_pk=card.enc_pk,
            enc_bind_sig=card.enc_bind_sig,
            new_sign_pk=card.sign_pk,
            created_ms=ROTATED + 3_600_000,
            grace_ms=GRACE_MS,
            now_ms=ROTATED,
        )
    removed = R.revoke(tf.signed, "police", reason="retired", now_ms=T0)
    with pytest.raises(TrustError, match="removed"):
        _rotate(removed, "police", _next_keys("police"))
