"""First join (``verify_roster(..., previous=None)``) of a roster of 2,000 members.

Every member's encryption key is checked at a first join: its binding signature (Ed25519, run
on several cores from 1,024 members) and that it is not a low-order point (a set look-up since
issue 15, no scalar multiplication). Whatever runs in parallel, a bad roster is refused
E_ROSTER_MALFORMED naming the first member with a problem in roster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from tfkit import NOW_MS, DeterministicRng, build_taskforce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import RejectCode, RosterRejected
from tfshare.keys import LOW_ORDER_X25519, Identity, enc_binding_message

T0 = NOW_MS - 3_600_000
MEMBERS = 2_000
replace = msgspec.structs.replace


@dataclass(frozen=True)
class Big:
    coord: Identity
    anchor: R.Anchor
    roster: R.Roster
    ids: dict[str, Identity]


@pytest.fixture(scope="module")
def big() -> Big:
    tf = build_taskforce()
    rng = DeterministicRng("first-join")
    members = [
        Identity.generate(f"m{i:04d}", f"Member {i}", rng=rng, now_ms=T0) for i in range(MEMBERS)
    ]
    signed = R.add_members(tf.signed, [m.card_body() for m in members], role="member", now_ms=T0)
    roster = R.decode_signed_roster(encode(signed))[1]
    return Big(tf.ids["coord"], tf.anchor, roster, {m.agency_id: m for m in members})


def _signed_bytes(big: Big, members: list[R.Member]) -> bytes:
    """The roster with ``members``, signed by its coordinator: only the content can fail."""
    unsigned = R.SignedRoster(roster=R.encode_roster(replace(big.roster, members=members)), sigs=[])
    return encode(R.sign(unsigned, big.coord))


def _first_join(big: Big, data: bytes) -> R.TrustedRoster:
    trusted, _ = R.verify_roster(data, anchor=big.anchor, state=None, now_ms=NOW_MS)
    return trusted


def _refusal(big: Big, data: bytes) -> RosterRejected:
    with pytest.raises(RosterRejected) as info:
        _first_join(big, data)
    assert info.value.reject_code is RejectCode.E_ROSTER_MALFORMED
    return info.value


def _with(big: Big, changes: dict[str, R.Member]) -> list[R.Member]:
    return [changes.get(m.agency_id, m) for m in big.roster.members]


def _bad_binding(big: Big, agency: str) -> R.Member:
    """The member's binding signature made by its own key, over another encryption key."""
    member = next(m for m in big.roster.members if m.agency_id == agency)
    other = bytes(range(1, 33))
    return replace(member, enc_self_sig=big.ids[agency].sign(enc_binding_message(agency, other)))


def _low_order_key(big: Big, agency: str, point: bytes) -> R.Member:
    """The member's encryption key replaced by ``point``, BOUND by its own signing key: only
    the low-order check can refuse it."""
    member = next(m for m in big.roster.members if m.agency_id == agency)
    return replace(
        member,
        enc_key=replace(member.enc_key, pk=point),
        enc_self_sig=big.ids[agency].sign(enc_binding_message(agency, point)),
    )


def test_a_valid_roster_of_2000_members_is_accepted_at_first_join(big: Big) -> None:
    trusted = _first_join(big, _signed_bytes(big, list(big.roster.members)))
    assert trusted.members_checked
    assert len(trusted.members) == len(big.roster.members) > MEMBERS
    assert set(trusted.enc_kid_of) == set(trusted.members)


def test_one_bad_binding_among_2000_members_is_refused_naming_that_member(big: Big) -> None:
    data = _signed_bytes(big, _with(big, {"m1234": _bad_binding(big, "m1234")}))
    refusal = _refusal(big, data)
    assert "'m1234'" in refusal.message
    assert "not bound to its agency" in refusal.message


@pytest.mark.parametrize("top_bit", [False, True])
def test_one_low_order_key_among_2000_members_is_refused_naming_that_member(
    big: Big, top_bit: bool
) -> None:
    """p - 1 (order 2), also with the top bit set (X25519 ignores it: the same point)."""
    point = ((2**255 - 19) - 1 + (2**255 if top_bit else 0)).to_bytes(32, "little")
    assert (point[:31] + bytes((point[31] & 0x7F,))) in LOW_ORDER_X25519
    data = _signed_bytes(big, _with(big, {"m0777": _low_order_key(big, "m0777", point)}))
    refusal = _refusal(big, data)
    assert "'m0777'" in refusal.message
    assert "degenerate point" in refusal.message


def test_the_first_bad_member_in_roster_order_is_named_whatever_ran_in_parallel(
    big: Big,
) -> None:
    """Neighbours land in different threads' shares; the earlier one is named, every time."""
    changes = {
        "m1501": _bad_binding(big, "m1501"),
        "m1500": _low_order_key(big, "m1500", bytes(32)),
        "m1900": _bad_binding(big, "m1900"),
    }
    data = _signed_bytes(big, _with(big, changes))
    messages = {_refusal(big, data).message for _ in range(3)}
    assert len(messages) == 1
    (message,) = messages
    assert "'m1500'" in message and "degenerate point" in message


def test_an_earlier_members_other_problem_comes_before_a_later_bad_binding(big: Big) -> None:
    """The members are still taken in order: m0100's copied NATS key (found without any
    cryptography) is reported, not m0200's bad binding checked before it in parallel."""
    by_id = {m.agency_id: m for m in big.roster.members}
    changes = {
        "m0100": replace(by_id["m0100"], nats_user=by_id["m0099"].nats_user),
        "m0200": _bad_binding(big, "m0200"),
    }
    refusal = _refusal(big, _signed_bytes(big, _with(big, changes)))
    assert "NATS key of 'm0100'" in refusal.message


def test_the_parallel_check_gives_each_members_answer_in_order(big: Big) -> None:
    """The threads' answers, merged, are those of checking each member in turn."""
    members = _with(
        big,
        {
            "m0000": _bad_binding(big, "m0000"),
            "m0001": _low_order_key(big, "m0001", bytes(32)),
            "m1998": _bad_binding(big, "m1998"),
            "m1999": _low_order_key(big, "m1999", (1).to_bytes(32, "little")),
        },
    )
    assert len(members) // R.PARALLEL_CRYPTO_MIN >= 2  # the pool is used on 2 or more cores
    parallel = R._members_crypto_problems(members)
    serial = [R._member_crypto_problem(m) for m in members]
    assert parallel == serial
    named = [p.split("'")[1] for p in parallel if p is not None]
    assert named == ["m0000", "m0001", "m1998", "m1999"]
