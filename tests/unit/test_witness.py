"""Witnessed checkpoints (tfshare.audit.witness, docs/AUDIT-LOG.md section 13): the
cosignature format byte for byte, which keys count as witnesses, the roster's threshold, and
a log forged with one stolen log key refused by the evidence check."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import msgspec
import pytest
from nacl.signing import VerifyKey
from tfkit import NOW_MS, build_taskforce
from witnesskit import ORIGIN, TASKFORCE, cosigned, entry_for, open_log, taskforce, with_witnesses

from tfshare import roster as R
from tfshare.audit.evidence import check_evidence
from tfshare.audit.note import Checkpoint, split_note
from tfshare.audit.service import log_verifiers
from tfshare.audit.witness import (
    WitnessCode,
    WitnessError,
    cosign,
    cosigner_key_id,
    judge,
    log_signers,
    require_witnesses,
    witness_keys,
    witness_name,
    witnessed_before,
    witnesses_of,
)
from tfshare.encoding import encode
from tfshare.errors import ExitCode, RejectCode, RosterRejected, TrustError

T = NOW_MS // 1000  # a cosignature time, POSIX seconds


def test_the_cosignature_line_is_c2sp_cosignature_v1() -> None:
    """Key name, key id (type 0x04), u64 big-endian time and an Ed25519 signature over
    'cosignature/v1\\ntime <t>\\n' + checkpoint text, recomputed here independently."""
    tf = build_taskforce()
    police = tf.ids["police"]
    text = Checkpoint(ORIGIN, 5, bytes(range(32))).format().encode()
    line = cosign(text, police, taskforce=TASKFORCE, timestamp=1_679_315_147)
    name = "tfshare/nl-north/witness/police"
    assert witness_name(TASKFORCE, "police") == name
    prefix = "\u2014 " + name + " "
    assert line.decode().startswith(prefix) and line.endswith(b"\n")
    raw = base64.b64decode(line.decode()[len(prefix) : -1])
    assert len(raw) == 76
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + police.sign_pk).digest()[:4]
    assert raw[:4] == key_id == cosigner_key_id(name, police.sign_pk)
    assert struct.unpack(">Q", raw[4:12]) == (1_679_315_147,)
    message = b"cosignature/v1\ntime 1679315147\n" + text
    VerifyKey(police.sign_pk).verify(message, raw[12:])  # raises if not


def test_a_cosigned_checkpoint_still_opens_as_a_plain_signed_note(tmp_path: Path) -> None:
    """Cosignature lines are ordinary signed-note lines: the log's verifiers ignore them."""
    tf = taskforce()
    sealed = tf.seal("police")
    log = open_log(tmp_path / "audit.db", tf, [entry_for(sealed.data)])
    note = cosigned(log.checkpoint(), tf, "police", "ngo", timestamp=T)
    _, lines = split_note(note)
    assert [line.name for line in lines] == [
        ORIGIN,
        witness_name(TASKFORCE, "police"),
        witness_name(TASKFORCE, "ngo"),
    ]
    assert {c.agency for c in witnesses_of(note, tf.trusted())} == {"police", "ngo"}
    assert log_signers(note, tf.trusted()) == {"coord"}


def test_a_log_forged_with_one_stolen_log_key_is_refused_when_witnesses_are_required(
    tmp_path: Path,
) -> None:
    """The thief of coord's key signs a made-up log and even co-signs it with the same key:
    the log does not witness itself, so no witness counts (E_WITNESS_THRESHOLD, exit 6)."""
    tf = taskforce(threshold=1)
    sealed = tf.seal("police")
    forged = open_log(tmp_path / "forged.db", tf, [entry_for(sealed.data)])
    note = cosigned(forged.checkpoint(), tf, "coord", timestamp=T)
    with pytest.raises(WitnessError) as refused:
        check_evidence(
            forged.bundle(0, note),
            roster=tf.trusted(),
            log_keys=[v.format() for v in log_verifiers(tf.trusted())],
            envelope=sealed.data,
        )
    assert refused.value.witness_code is WitnessCode.E_WITNESS_THRESHOLD
    assert refused.value.exit_code == ExitCode.TRUST


def test_one_other_member_s_cosignature_meets_a_threshold_of_one(tmp_path: Path) -> None:
    tf = taskforce(threshold=1)
    sealed = tf.seal("police")
    log = open_log(tmp_path / "audit.db", tf, [entry_for(sealed.data)])
    note = cosigned(log.checkpoint(), tf, "ngo", timestamp=T)
    evidence = check_evidence(
        log.bundle(0, note),
        roster=tf.trusted(),
        log_keys=[v.format() for v in log_verifiers(tf.trusted())],
        envelope=sealed.data,
    )
    assert [w.agency for w in evidence.witnesses] == ["ngo"]
    assert evidence.threshold == 1
    assert evidence.envelope is not None and evidence.envelope.header.sender == "police"


def test_two_cosignatures_by_one_agency_count_once() -> None:
    tf = taskforce(threshold=2)
    text = Checkpoint(ORIGIN, 1, bytes(32)).format().encode()
    ngo = tf.ids["ngo"]
    first = text + b"\n" + cosign(text, ngo, taskforce=TASKFORCE, timestamp=T)
    twice = first + cosign(text, ngo, taskforce=TASKFORCE, timestamp=T + 1)
    assert len(split_note(twice)[1]) == 2  # two ngo lines, distinct times
    with pytest.raises(WitnessError) as refused:
        require_witnesses(twice, tf.trusted())
    assert refused.value.witness_code is WitnessCode.E_WITNESS_THRESHOLD


def test_a_damaged_cosignature_of_a_known_witness_refuses_the_checkpoint() -> None:
    tf = taskforce()
    text = Checkpoint(ORIGIN, 1, bytes(32)).format().encode()
    line = cosign(text, tf.ids["ngo"], taskforce=TASKFORCE, timestamp=T)
    prefix = len(("\u2014 " + witness_name(TASKFORCE, "ngo") + " ").encode())
    raw = bytearray(base64.b64decode(line[prefix:-1]))
    raw[-1] ^= 1
    damaged = line[:prefix] + base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(WitnessError) as refused:
        witnesses_of(text + b"\n" + damaged, tf.trusted())
    assert refused.value.witness_code is WitnessCode.E_WITNESS_BAD_SIG


def test_a_key_revoked_as_compromised_witnesses_nothing() -> None:
    tf = taskforce()
    revoked = R.revoke(tf.signed, "ngo", reason="compromised", now_ms=NOW_MS)
    signed = R.sign(revoked, tf.ids["coord"])
    trusted, _ = R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=NOW_MS)
    assert "ngo" not in {k.agency for k in witness_keys(trusted)}
    text = Checkpoint(ORIGIN, 1, bytes(32)).format().encode()
    note = text + b"\n" + cosign(text, tf.ids["ngo"], taskforce=TASKFORCE, timestamp=T)
    assert witnesses_of(note, trusted) == ()


def test_a_retired_key_witnesses_only_up_to_its_retirement() -> None:
    tf = taskforce()
    signed = R.sign(R.revoke(tf.signed, "ngo", reason="retired", now_ms=NOW_MS), tf.ids["coord"])
    trusted, _ = R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=NOW_MS)
    text = Checkpoint(ORIGIN, 1, bytes(32)).format().encode()
    removed = msgspec.structs.replace(
        trusted.roster,
        members=[
            msgspec.structs.replace(m, status="active") if m.agency_id == "ngo" else m
            for m in trusted.roster.members
        ],
    )
    view = R.TrustedRoster(removed, b"")
    before = text + b"\n" + cosign(text, tf.ids["ngo"], taskforce=TASKFORCE, timestamp=T - 10)
    after = text + b"\n" + cosign(text, tf.ids["ngo"], taskforce=TASKFORCE, timestamp=T + 10)
    assert [c.agency for c in witnesses_of(before, view)] == ["ngo"]
    assert witnesses_of(after, view) == ()


def test_witnessed_before_needs_the_threshold_of_distinct_witnesses_before_the_time() -> None:
    tf = taskforce()
    text = Checkpoint(ORIGIN, 1, bytes(32)).format().encode()
    lines = [
        cosign(text, tf.ids[a], taskforce=TASKFORCE, timestamp=t)
        for a, t in (("ngo", T - 5), ("labour", T + 5))
    ]
    found = witnesses_of(text + b"\n" + b"".join(lines), tf.trusted())
    assert witnessed_before(found, threshold=1, at_ms=T * 1000)
    assert not witnessed_before(found, threshold=2, at_ms=T * 1000)
    assert witnessed_before(found, threshold=2, at_ms=(T + 6) * 1000)
    assert not witnessed_before(found, threshold=0, at_ms=(T + 6) * 1000)


def test_judge_finds_a_fork_at_the_same_size() -> None:
    held = Checkpoint(ORIGIN, 7, bytes(32))
    assert judge(None, held) == "first"
    assert judge(held, held) == "same"
    assert judge(held, Checkpoint(ORIGIN, 9, bytes(32))) == "newer"
    assert judge(held, Checkpoint(ORIGIN, 3, bytes(32))) == "older"
    with pytest.raises(WitnessError) as forked:
        judge(held, Checkpoint(ORIGIN, 7, b"\x01" * 32))
    assert forked.value.witness_code is WitnessCode.E_LOG_FORK


# --- the roster field ------------------------------------------------------------------------


def test_a_roster_without_witnesses_keeps_the_ten_element_encoding() -> None:
    tf = build_taskforce()
    assert tf.signed.roster[0] == 0x9A  # fixarray of 10: the bytes every older roster has
    assert tf.trusted().roster.witness_threshold == 0


def test_a_witness_threshold_is_an_eleventh_element_and_verifies() -> None:
    tf = taskforce(threshold=2)
    assert tf.signed.roster[0] == 0x9B
    assert tf.trusted().roster.witness_threshold == 2


def test_an_explicit_zero_threshold_is_not_canonical() -> None:
    tf = build_taskforce()
    content = R.decode_signed_roster(encode(tf.signed))[1]
    # The generic encoder writes every trailing default (witness_threshold 0 and the later
    # optional elements): 13 elements where the canonical form has 10.
    explicit = encode(content)
    assert explicit[0] == 0x9D
    signed = R.sign(R.SignedRoster(explicit, []), tf.ids["coord"])
    with pytest.raises(RosterRejected) as refused:
        R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=NOW_MS)
    assert refused.value.code == RejectCode.E_ROSTER_MALFORMED


def test_a_threshold_no_set_of_other_members_can_meet_is_refused() -> None:
    tf = build_taskforce()  # coord, police, ngo, labour: at most 3 witness the log
    with_witnesses(tf, 3)
    # The editor refuses it, and says why...
    with pytest.raises(TrustError, match="more witnesses than the 4 active"):
        with_witnesses(tf, 4)
    # ...and a receiver refuses such a roster however it was made.
    content = R.decode_signed_roster(encode(tf.signed))[1]
    four = msgspec.structs.replace(content, seq=content.seq + 1, witness_threshold=4)
    signed = R.sign(R.SignedRoster(R.encode_roster(four), []), tf.ids["coord"])
    with pytest.raises(RosterRejected) as refused:
        R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=NOW_MS)
    assert refused.value.code == RejectCode.E_ROSTER_MALFORMED
