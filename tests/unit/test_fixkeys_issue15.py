"""Issue 15, second review (R4, R7, R8, R9): what an agency keeps and destroys after a key
rotation and after losing a channel.

- R4: a retired secret is never destroyed while the roster in force lists its key as the
  agency's (a rotation the coordinators have not applied); ``rotation_not_applied`` says so.
- R8: ``keys rotate`` never overwrites a statement (one not applied yet would be lost).
- R9: ``keys rotate`` writes the key file before the statement; ``--statement-only``
  (``remake_statement``) writes the statement again from the key file.
- R7: the epoch keys of a channel the agency no longer reads are deleted once the roster in
  force was issued ``EPOCH_KEY_RETENTION_MS`` ago (``epoch_retention``, ``Agency.load``).

Real key files, signatures, rosters and SQLite; times are fixed where it matters.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path

import pytest
from agent_epochs_kit import epoch_taskforce, load_agency, new_key
from structlog.testing import capture_logs
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce

from tfshare import roster as R
from tfshare.epoch_retention import epoch_keys_to_delete
from tfshare.epochs import EPOCH_KEY_RETENTION_MS, EpochKeyring
from tfshare.errors import ExitCode, InputError, TfshareError
from tfshare.files import write_atomic
from tfshare.keyfile import KDF_PROFILES, open_keyfile, seal_keyfile
from tfshare.keys import Identity
from tfshare.rotation import (
    decode_rotation,
    listed_keys,
    make_rotation,
    read_rotation,
    rotation_not_applied,
)
from tfshare.workflows import keys as keys_workflow
from tfshare.workflows import live
from tfshare.workflows.keys import (
    InsecureKeyCost,
    remake_statement,
    rotate_keys,
    unlock_key,
)

DAY_MS = 24 * 3600 * 1000
KIT_PASSPHRASE = b"kit passphrase of ngo"  # agent_epochs_kit.load_agency's
PASSPHRASE = b"fixkeys issue 15 passphrase"

# The key files here use the insecure test cost on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::tfshare.workflows.keys.InsecureKeyCost")


def _now() -> int:
    return time.time_ns() // 1_000_000


def _write_key(path: Path, identity: Identity, passphrase: bytes) -> None:
    write_atomic(
        path,
        seal_keyfile(identity, passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom),
        secret=True,
    )


def _applied(tf: TaskForce, before: Identity, after: Identity, *, rotated_ms: int,
             grace_ms: int, now_ms: int) -> TaskForce:  # fmt: skip
    """``tf`` after the coordinators applied the rotation ``before`` -> ``after``: the
    statement checked (``read_rotation``), applied and signed, as 'roster rotate' does."""
    statement = make_rotation(before, after, created_ms=rotated_ms, grace_ms=grace_ms)
    _, record = R.decode_signed_roster(tf.roster_bytes)
    checked = read_rotation(statement, record, now_ms=now_ms)
    signed = R.apply_rotation(
        tf.signed, agency=checked.agency_id, new_enc_pk=checked.new_enc_pk,
        enc_bind_sig=checked.enc_bind_sig, new_sign_pk=checked.new_sign_pk,
        created_ms=checked.created_ms, grace_ms=checked.grace_ms, now_ms=now_ms,
    )  # fmt: skip
    return dataclasses.replace(tf, signed=R.sign(signed, tf.ids["coord"]))


# ---------------------------------------------------------------------------------------------
# R4: the secret of a key the roster still lists is kept


def test_unlock_key_keeps_an_expired_secret_whose_key_is_in_keep_and_destroys_it_otherwise(
    tmp_path: Path,
) -> None:
    tf = build_taskforce()
    old = tf.ids["police"]
    rotated = old.rotated(rng=os.urandom, now_ms=NOW_MS, grace_ms=DAY_MS)
    path = tmp_path / "police.key"
    _write_key(path, rotated, PASSPHRASE)
    later = NOW_MS + 2 * DAY_MS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyCost)
        kept = unlock_key(path, PASSPHRASE, now_ms=later, keep={old.enc_pk, old.sign_pk})
        assert kept.identity.enc_kids == (rotated.kid_enc, old.kid_enc)
        assert len(open_keyfile(path.read_bytes(), PASSPHRASE).enc_kids) == 2  # file too

        destroyed = unlock_key(path, PASSPHRASE, now_ms=later)
    assert destroyed.identity.enc_kids == (rotated.kid_enc,)
    assert open_keyfile(path.read_bytes(), PASSPHRASE).enc_kids == (rotated.kid_enc,)


def test_listed_keys_are_the_agencys_encryption_key_and_unrevoked_signing_keys() -> None:
    tf = build_taskforce()
    police = tf.ids["police"]
    roster = tf.trusted()
    assert listed_keys(roster, "police") == {police.enc_pk, police.sign_pk}
    assert listed_keys(roster, "nobody") == frozenset()
    revoked = dataclasses.replace(
        tf,
        signed=R.sign(
            R.revoke(tf.signed, "police", reason="compromised", now_ms=NOW_MS), tf.ids["coord"]
        ),
    )
    assert police.sign_pk not in listed_keys(revoked.trusted(), "police")


def test_agency_load_keeps_the_listed_secret_past_its_grace_and_logs_rotation_not_applied(
    tmp_path: Path,
) -> None:
    now = _now()
    tf = epoch_taskforce(now_ms=now - 10 * DAY_MS)
    old = tf.ids["ngo"]
    rotated = old.rotated(rng=os.urandom, now_ms=now - 8 * DAY_MS, grace_ms=DAY_MS)
    _write_key(tmp_path / "ngo.key", rotated, KIT_PASSPHRASE)

    with capture_logs() as events:
        agency = load_agency(tf, "ngo", tmp_path)
    assert old.kid_enc in agency.identity().enc_kids  # the roster still lists it
    assert old.kid_enc in open_keyfile((tmp_path / "ngo.key").read_bytes(), KIT_PASSPHRASE).enc_kids
    [late] = [e for e in events if e["event"] == "rotation_not_applied"]
    assert late["agency"] == "ngo"
    assert late["log_level"] == "warning"
    assert 7 * 24 - 1 <= late["overdue_hours"] <= 7 * 24  # 8 days ago, 1 day's grace
    assert "roster rotate" in late["hint"]
    agency.store.close()


def test_the_agent_destroys_the_retired_secret_once_the_roster_lists_the_new_key(
    tmp_path: Path,
) -> None:
    """What test_agent_epochs_secrets checks, with the rotation applied: the roster in force
    lists the new key, so the old secret goes at the end of its grace, from memory and file.
    Before the roster applies it, the agent keeps it and says why in 'agent status'."""
    now = _now()
    tf = epoch_taskforce(now_ms=now - 10 * DAY_MS)
    old = tf.ids["ngo"]
    rotated = old.rotated(rng=os.urandom, now_ms=now - 8 * DAY_MS, grace_ms=DAY_MS)
    key_path = tmp_path / "ngo.key"
    _write_key(key_path, rotated, KIT_PASSPHRASE)
    agency = load_agency(tf, "ngo", tmp_path)
    agent = live.make_agent(agency, url="nats://127.0.0.1:1", clock=_now, witness=False)
    assert not agent.destroy_expired_secrets(force=True)  # listed: kept
    assert len(agent.identity.enc_kids) == 2
    assert rotation_not_applied(agent.identity, agency.roster, _now()) is not None

    applied = _applied(tf, old, rotated, rotated_ms=now - 8 * DAY_MS, grace_ms=DAY_MS,
                       now_ms=_now())  # fmt: skip
    agency.accept_roster(applied.roster_bytes)
    assert agency.roster.members["ngo"].enc_key.pk == rotated.enc_pk
    with capture_logs() as events:
        assert agent.destroy_expired_secrets(force=True)
    assert list(agent.identity.enc_kids) == [rotated.kid_enc]
    assert agency.identity() is agent.identity
    assert open_keyfile(key_path.read_bytes(), KIT_PASSPHRASE).enc_kids == (rotated.kid_enc,)
    assert rotation_not_applied(agent.identity, agency.roster, _now()) is None
    assert "rotation_not_applied" not in [e["event"] for e in events]
    agency.store.close()


def test_rotation_not_applied_says_when_and_how_late() -> None:
    tf = build_taskforce()
    old = tf.ids["police"]
    rotated = old.rotated(rng=os.urandom, now_ms=NOW_MS, grace_ms=DAY_MS)
    roster = tf.trusted()
    assert rotation_not_applied(rotated, roster, NOW_MS + DAY_MS) is None  # within its grace
    late = rotation_not_applied(rotated, roster, NOW_MS + 3 * DAY_MS)
    assert late is not None
    assert (late.agency_id, late.rotated_ms, late.overdue_ms) == ("police", NOW_MS, 2 * DAY_MS)
    assert "2026-11-18" in late.reason and "police.rotation" in late.hint


# ---------------------------------------------------------------------------------------------
# R8, R9: keys rotate and its statement


def _police_key(tmp_path: Path) -> Path:
    path = tmp_path / "police.key"
    write_atomic(
        path,
        seal_keyfile(
            build_taskforce().ids["police"], PASSPHRASE, limits=KDF_PROFILES["insecure-test"],
            rng=DeterministicRng("fixkeys police"),
        ),
        secret=True,
    )  # fmt: skip
    return path


def _no_passphrase() -> bytes:
    raise AssertionError("the passphrase was asked before the refusal")


def test_keys_rotate_refuses_before_the_passphrase_when_a_statement_is_there(
    tmp_path: Path,
) -> None:
    key = _police_key(tmp_path)
    first = rotate_keys(key, ask_passphrase=lambda: PASSPHRASE, sign=True, now_ms=NOW_MS)
    statement = Path(first.statement_path)
    unapplied, key_bytes = statement.read_bytes(), key.read_bytes()

    with pytest.raises(InputError) as refused:
        rotate_keys(key, ask_passphrase=_no_passphrase, now_ms=NOW_MS + 60_000)
    assert refused.value.exit_code == ExitCode.ERROR
    assert "never overwritten" in refused.value.message
    assert refused.value.hint is not None and "coordinators" in refused.value.hint
    assert (statement.read_bytes(), key.read_bytes()) == (unapplied, key_bytes)

    # Another --out is fine: the first statement stays as it was.
    other = tmp_path / "second.rotation"
    rotate_keys(key, ask_passphrase=lambda: PASSPHRASE, out=other, now_ms=NOW_MS + 60_000)
    assert other.exists() and statement.read_bytes() == unapplied


def test_keys_rotate_puts_the_key_file_back_when_the_statement_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _police_key(tmp_path)
    before = key.read_bytes()
    real = write_atomic

    def statement_fails(path: Path, data: bytes, *, secret: bool = False,
                        overwrite: bool = True) -> None:  # fmt: skip
        if not secret:
            raise InputError("disk full", hint="free some space")
        real(path, data, secret=secret, overwrite=overwrite)

    monkeypatch.setattr(keys_workflow, "write_atomic", statement_fails)
    with pytest.raises(InputError):
        rotate_keys(key, ask_passphrase=lambda: PASSPHRASE, now_ms=NOW_MS)
    assert (
        open_keyfile(key.read_bytes(), PASSPHRASE).enc_pk == open_keyfile(before, PASSPHRASE).enc_pk
    )
    assert not (tmp_path / "police.rotation").exists()


@pytest.mark.parametrize("sign", [False, True])
def test_statement_only_writes_the_same_statement_again_and_the_roster_accepts_it(
    tmp_path: Path, sign: bool
) -> None:
    tf = build_taskforce()
    key = _police_key(tmp_path)
    done = rotate_keys(key, ask_passphrase=lambda: PASSPHRASE, sign=sign, now_ms=NOW_MS + 1000)
    statement = Path(done.statement_path)
    original = statement.read_bytes()
    statement.unlink()  # lost, or never written (the run died after the key file)

    again = remake_statement(key, ask_passphrase=lambda: PASSPHRASE)
    assert statement.read_bytes() == original
    assert (again.rotated_enc, again.rotated_sign, again.created_ms) == (True, sign, NOW_MS + 1000)
    _, record = R.decode_signed_roster(tf.roster_bytes)
    checked = read_rotation(original, record, now_ms=NOW_MS + 2000)
    assert checked.new_enc_pk == open_keyfile(key.read_bytes(), PASSPHRASE).enc_pk
    assert checked.rotates_sign is sign

    with pytest.raises(InputError):  # never over a statement that is there
        remake_statement(key, ask_passphrase=_no_passphrase)


def test_statement_only_refuses_a_key_file_that_was_never_rotated(tmp_path: Path) -> None:
    key = _police_key(tmp_path)
    with pytest.raises(TfshareError) as refused:
        remake_statement(key, ask_passphrase=lambda: PASSPHRASE)
    assert refused.value.exit_code == ExitCode.ERROR
    assert not (tmp_path / "police.rotation").exists()


def test_keys_rotate_writes_the_key_file_before_the_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _police_key(tmp_path)
    order: list[str] = []
    real = write_atomic

    def recorded(path: Path, data: bytes, *, secret: bool = False,
                 overwrite: bool = True) -> None:  # fmt: skip
        order.append(path.name)
        if path.suffix == ".rotation":
            # When the statement is written, the key file already holds what it names.
            held = open_keyfile(key.read_bytes(), PASSPHRASE)
            assert decode_rotation(data).new_enc_pk == held.enc_pk
        real(path, data, secret=secret, overwrite=overwrite)

    monkeypatch.setattr(keys_workflow, "write_atomic", recorded)
    rotate_keys(key, ask_passphrase=lambda: PASSPHRASE, now_ms=NOW_MS)
    assert order == ["police.key", "police.rotation"]


# ---------------------------------------------------------------------------------------------
# R7: the epoch keys of a channel the agency no longer reads


def test_epoch_keys_to_delete_takes_the_channels_the_agency_no_longer_reads_after_retention() -> (
    None
):
    t0 = NOW_MS
    tf = epoch_taskforce(now_ms=t0)
    edited = R.ungrant(tf.signed, "ngo", channel="alerts", read=True, write=False, now_ms=t0)
    roster = dataclasses.replace(tf, signed=R.sign(edited, tf.ids["coord"])).trusted()
    issued = roster.roster.issued_ms
    ring = EpochKeyring(
        [
            new_key("alerts", 1, starts_ms=t0 - 1000),
            new_key("alerts", 2, starts_ms=t0 - 500),  # newest of a channel no longer read
            new_key("bulletin", 4, starts_ms=t0 - 1000),  # still read: kept
            new_key("gone", 1, starts_ms=t0 - 1000),  # no such channel any more
        ]
    )
    before = epoch_keys_to_delete(ring, roster, "ngo", issued + EPOCH_KEY_RETENTION_MS)
    assert [(k.channel, k.epoch) for k in before] == [("alerts", 1)]  # superseded only
    after = epoch_keys_to_delete(ring, roster, "ngo", issued + EPOCH_KEY_RETENTION_MS + 1)
    assert sorted((k.channel, k.epoch) for k in after) == [("alerts", 1), ("alerts", 2),
                                                           ("gone", 1)]  # fmt: skip
    # police still reads "alerts": only the superseded key and the vanished channel's go.
    police = epoch_keys_to_delete(ring, roster, "police", issued + 10 * EPOCH_KEY_RETENTION_MS)
    assert sorted((k.channel, k.epoch) for k in police) == [("alerts", 1), ("gone", 1)]
    # A channel made direct-only: its epoch keys serve nothing new either.
    direct = R.set_channel_modes(tf.signed, "bulletin", direct=True, epoch=False, now_ms=t0)
    direct_roster = dataclasses.replace(tf, signed=R.sign(direct, tf.ids["coord"])).trusted()
    late = direct_roster.roster.issued_ms + EPOCH_KEY_RETENTION_MS + 1
    assert ("bulletin", 4) in {(k.channel, k.epoch) for k in
                               epoch_keys_to_delete(ring, direct_roster, "ngo", late)}  # fmt: skip


def test_epoch_keys_to_delete_still_takes_superseded_keys_within_the_roster_retention() -> None:
    t0 = NOW_MS
    roster = epoch_taskforce(now_ms=t0).trusted()
    old = new_key("alerts", 1, starts_ms=t0 - 3 * EPOCH_KEY_RETENTION_MS)
    ring = EpochKeyring([old, new_key("alerts", 2, starts_ms=t0 - 2 * EPOCH_KEY_RETENTION_MS)])
    assert epoch_keys_to_delete(ring, roster, "ngo", t0) == [old]


@pytest.mark.parametrize(("taken_days_ago", "deleted"), [(46, True), (10, False)])
def test_agency_load_deletes_the_epoch_keys_of_a_channel_it_no_longer_reads(
    tmp_path: Path, taken_days_ago: int, deleted: bool
) -> None:
    now = _now()
    tf = epoch_taskforce(now_ms=now - 50 * DAY_MS)
    agency = load_agency(tf, "ngo", tmp_path)
    held = new_key("alerts", 1, starts_ms=now - 49 * DAY_MS)
    state_key = tf.ids["ngo"].state_key
    agency.store.epoch_key_add("nl-north", held, state_key=state_key, received_ms=now)
    agency.store.close()

    taken = R.ungrant(tf.signed, "ngo", channel="alerts", read=True, write=False,
                      now_ms=now - taken_days_ago * DAY_MS)  # fmt: skip
    tf = dataclasses.replace(tf, signed=R.sign(taken, tf.ids["coord"]))
    agency = load_agency(tf, "ngo", tmp_path)  # as every live command loads it
    kept, _ = agency.store.epoch_keys("nl-north", state_key=state_key)
    agency.store.close()
    assert (agency.epochs.get("alerts", 1) is None) is deleted
    assert (kept == []) is deleted
