"""Rotation statements (tfshare-rotation/1): made by the agency, checked against the roster."""

from __future__ import annotations

from typing import Final

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, encode
from tfshare.errors import ExitCode, TrustError
from tfshare.keys import Identity, enc_binding_message, kid_sig, verify_signature
from tfshare.rotation import (
    DAY_MS,
    MAX_GRACE_MS,
    MIN_GRACE_MS,
    Rotation,
    make_rotation,
    read_rotation,
    rotation_message,
)

GRACE: Final = 7 * DAY_MS
# The order of a low-order point of Curve25519 (all-zero shared secret with every key).
LOW_ORDER_POINT: Final = bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
)


def _roster(taskforce: TaskForce) -> R.Roster:
    return R.decode_signed_roster(taskforce.roster_bytes)[1]


def _rotate(
    before: Identity, *, enc: bool = True, sign: bool = False, seed: str = "r"
) -> tuple[Identity, bytes]:
    after = before.rotated(
        rng=DeterministicRng(seed), now_ms=NOW_MS, grace_ms=GRACE, enc=enc, sign=sign
    )
    return after, make_rotation(before, after, created_ms=NOW_MS, grace_ms=GRACE)


def _resigned(statement: Rotation, signer: Identity, **changes: object) -> bytes:
    """``statement`` with ``changes``, signed again (validly) by ``signer``."""
    changed = msgspec.structs.replace(statement, **changes)
    sig = signer.sign(rotation_message(changed.signed_part()))
    return encode(msgspec.structs.replace(changed, sig=sig))


def _decode(data: bytes) -> Rotation:
    return msgspec.msgpack.decode(data, type=Rotation)


def _refused(data: bytes, roster: R.Roster, match: str, **kw: int) -> None:
    with pytest.raises(TrustError, match=match) as info:
        read_rotation(data, roster, **kw)
    assert info.value.exit_code == ExitCode.TRUST
    assert info.value.hint


def test_encryption_key_rotation_reads_back_its_new_key(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    after, data = _rotate(police)
    verified = read_rotation(data, _roster(taskforce), now_ms=NOW_MS)
    assert verified.agency_id == "police"
    assert verified.created_ms == NOW_MS
    assert verified.grace_ms == GRACE
    assert verified.new_enc_pk == after.enc_pk != police.enc_pk
    assert verified.new_sign_pk == police.sign_pk == verified.signer_pk
    assert (verified.rotates_enc, verified.rotates_sign) == (True, False)
    binding = enc_binding_message("police", after.enc_pk)
    assert verify_signature(police.sign_pk, binding, verified.enc_bind_sig)


def test_signing_key_rotation_binds_the_encryption_key_with_the_new_key(
    taskforce: TaskForce,
) -> None:
    police = taskforce.ids["police"]
    after, data = _rotate(police, enc=True, sign=True)
    verified = read_rotation(data, _roster(taskforce))
    assert verified.new_sign_pk == after.sign_pk != police.sign_pk
    assert verified.signer_pk == police.sign_pk
    assert (verified.rotates_enc, verified.rotates_sign) == (True, True)
    binding = enc_binding_message("police", after.enc_pk)
    assert verify_signature(after.sign_pk, binding, verified.enc_bind_sig)
    assert not verify_signature(police.sign_pk, binding, verified.enc_bind_sig)


def test_signing_key_alone_can_rotate(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police, enc=False, sign=True)
    verified = read_rotation(data, _roster(taskforce))
    assert (verified.rotates_enc, verified.rotates_sign) == (False, True)
    assert verified.new_enc_pk == police.enc_pk


def test_statement_forged_with_another_agencys_key_is_refused(taskforce: TaskForce) -> None:
    _, data = _rotate(taskforce.ids["police"])
    forged = _resigned(_decode(data), taskforce.ids["ngo"])
    _refused(forged, _roster(taskforce), "not signed by its current signing key")


def test_statement_replayed_for_another_agency_is_refused(taskforce: TaskForce) -> None:
    """The agency id is signed: police's statement relabelled as ngo's fails ngo's check."""
    _, data = _rotate(taskforce.ids["police"])
    relabelled = encode(msgspec.structs.replace(_decode(data), agency_id="ngo"))
    _refused(relabelled, _roster(taskforce), "not signed by its current signing key")


def test_statement_replayed_after_it_was_applied_is_refused(taskforce: TaskForce) -> None:
    """Once the roster holds keys dated at (or after) the statement, it is stale."""
    police = taskforce.ids["police"]
    after, data = _rotate(police)
    roster = _roster(taskforce)
    members = [
        msgspec.structs.replace(m, enc_key=R.KeyValidity(after.enc_pk, NOW_MS, MAX_UINT))
        if m.agency_id == "police"
        else m
        for m in roster.members
    ]
    applied = msgspec.structs.replace(roster, members=members)
    _refused(data, applied, "older than the keys the roster holds")


def test_degenerate_new_encryption_key_is_refused(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    bind = police.sign(enc_binding_message("police", LOW_ORDER_POINT))
    bad = _resigned(_decode(data), police, new_enc_pk=LOW_ORDER_POINT, enc_bind_sig=bind)
    _refused(bad, _roster(taskforce), "degenerate point")


def test_new_encryption_key_not_bound_is_refused(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    ngo_enc = taskforce.ids["outsider"].enc_pk
    bad = _resigned(_decode(data), police, new_enc_pk=ngo_enc)
    _refused(bad, _roster(taskforce), "not bound by its new signing key")


def test_another_members_encryption_key_is_refused(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    ngo_enc = taskforce.ids["ngo"].enc_pk
    bind = police.sign(enc_binding_message("police", ngo_enc))
    bad = _resigned(_decode(data), police, new_enc_pk=ngo_enc, enc_bind_sig=bind)
    _refused(bad, _roster(taskforce), "already in the roster")


def test_a_statement_that_rotates_nothing_is_refused(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    bind = police.sign(enc_binding_message("police", police.enc_pk))
    same = _resigned(_decode(data), police, new_enc_pk=police.enc_pk, enc_bind_sig=bind)
    _refused(same, _roster(taskforce), "rotates nothing")


@pytest.mark.parametrize("grace_ms", [0, MIN_GRACE_MS - 1, MAX_GRACE_MS + 1])
def test_grace_outside_one_hour_to_ninety_days_is_refused(
    taskforce: TaskForce, grace_ms: int
) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    bad = _resigned(_decode(data), police, grace_ms=grace_ms)
    _refused(bad, _roster(taskforce), "1 hour to 90 days")


def test_outsider_and_removed_agency_are_refused(taskforce: TaskForce) -> None:
    _, data = _rotate(taskforce.ids["outsider"])
    _refused(data, _roster(taskforce), "not in the roster")
    _, police_data = _rotate(taskforce.ids["police"])
    removed = R.revoke(taskforce.signed, "police", reason="retired", now_ms=NOW_MS - 1000)
    _refused(police_data, R.decode_signed_roster(encode(removed))[1], "which is removed")


def test_a_revoked_signing_key_cannot_sign_a_rotation(taskforce: TaskForce) -> None:
    police = taskforce.ids["police"]
    _, data = _rotate(police)
    roster = _roster(taskforce)
    revoked = [*roster.revoked, R.Revocation(kid_sig(police.sign_pk), NOW_MS, "compromised")]
    _refused(data, msgspec.structs.replace(roster, revoked=revoked), "not signed by its current")


def test_a_retired_signing_key_cannot_sign_a_rotation(taskforce: TaskForce) -> None:
    """After a signing-key rotation was applied, the old key (kept by the agency through its
    grace period, or stolen) no longer vouches for new keys."""
    police = taskforce.ids["police"]
    after, _ = _rotate(police, enc=True, sign=True)
    roster = _roster(taskforce)
    applied_at = NOW_MS - 10_000
    old = roster.members[[m.agency_id for m in roster.members].index("police")].sign_keys[0]
    keys = [
        R.KeyValidity(old.pk, old.not_before_ms, applied_at),
        R.KeyValidity(after.sign_pk, applied_at, MAX_UINT),
    ]
    members = [
        msgspec.structs.replace(m, sign_keys=keys) if m.agency_id == "police" else m
        for m in roster.members
    ]
    applied = msgspec.structs.replace(roster, members=members)
    # The stolen old key signs a fresh statement dated inside its old validity window.
    thief_after = police.rotated(rng=DeterministicRng("thief"), now_ms=applied_at, grace_ms=GRACE)
    stolen = make_rotation(police, thief_after, created_ms=applied_at - 1, grace_ms=GRACE)
    _refused(stolen, applied, "not signed by its current signing key")
    later = make_rotation(police, thief_after, created_ms=NOW_MS, grace_ms=GRACE)
    _refused(later, applied, "not signed by its current signing key")


def test_a_statement_dated_in_the_future_is_refused(taskforce: TaskForce) -> None:
    _, data = _rotate(taskforce.ids["police"])
    _refused(data, _roster(taskforce), "dated in the future", now_ms=NOW_MS - 3_600_000)


@given(data=st.binary(max_size=300))
def test_random_bytes_are_refused_with_trust_error_only(data: bytes) -> None:
    with pytest.raises(TrustError):
        read_rotation(data, _ROSTER)


@given(position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_a_flipped_byte_of_a_statement_is_refused_with_trust_error_only(
    position: int, xor: int
) -> None:
    data = bytearray(_STATEMENT)
    data[position % len(data)] ^= xor
    with pytest.raises(TrustError):
        read_rotation(bytes(data), _ROSTER)


def _fixture() -> tuple[bytes, R.Roster]:
    tf = build_taskforce()
    return _rotate(tf.ids["police"], enc=True, sign=True)[1], _roster(tf)


_STATEMENT, _ROSTER = _fixture()
