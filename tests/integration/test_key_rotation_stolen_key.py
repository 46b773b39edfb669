"""Keys that age (issue 15): a key file stolen after a rotation and its grace period opens
nothing sealed before the rotation; stolen during the grace period it still does.

Everything is real: key files on disk (the insecure test cost), ``tfshare keys rotate``'s
workflow, the coordinators' ``read_rotation`` + ``roster.apply_rotation``, and the receiver's
``open_envelope``. Only the clock is chosen, so the grace period's end is hit exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Final

import pytest
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce, example_json

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import InputError, RejectCode, Rejected
from tfshare.files import write_atomic
from tfshare.keyfile import KDF_PROFILES, open_keyfile, seal_keyfile
from tfshare.keys import Identity
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.rotation import DAY_MS, read_rotation
from tfshare.seal import Opened, ReceivePolicy, Recipient, Sealed, open_envelope, seal_to
from tfshare.workflows import keys as keys_workflow
from tfshare.workflows.keys import (
    SecretsNotDestroyed,
    destroy_expired,
    rotate_keys,
    unlock_key,
)

PASSPHRASE: Final = b"police passphrase for the rotation test"
GRACE_MS: Final = 7 * DAY_MS
ROTATED_AT: Final = NOW_MS + 60_000
GRACE_ENDS: Final = ROTATED_AT + GRACE_MS  # the old secret is kept through this instant
# The receiving clock is the same for every attempt: only the key file differs.
RECEIVE_AT: Final = NOW_MS + 120_000


@pytest.fixture
def tf() -> TaskForce:
    return build_taskforce()


@pytest.fixture
def key_path(tf: TaskForce, tmp_path: Path) -> Path:
    """police's key file, on disk, 0600."""
    path = tmp_path / "police.key"
    data = seal_keyfile(
        tf.ids["police"],
        PASSPHRASE,
        limits=KDF_PROFILES["insecure-test"],
        rng=DeterministicRng("police-key"),
    )
    write_atomic(path, data, secret=True)
    return path


def _alert(tf: TaskForce, to_enc_pk: bytes, *, seq: int, now_ms: int) -> Sealed:
    """labour -> police on "alerts", direct mode, wrapped to ``to_enc_pk``."""
    schema = tf.schemas.lookup("tf.alert/1")
    assert isinstance(schema, Schema)
    return seal_to(
        identity=tf.ids["labour"],
        taskforce=tf.trusted().taskforce,
        channel="alerts",
        roster_seq=tf.trusted().seq,
        recipients=[Recipient("police", to_enc_pk)],
        schema=schema,
        body=schema.to_body(schema.from_json(example_json("tf.alert/1"))),
        seq=seq,
        now_ms=now_ms,
        rng=DeterministicRng(f"alert-{seq}-{now_ms}"),
    )


def _open(tf: TaskForce, sealed: Sealed, identity: Identity, roster: R.TrustedRoster) -> Opened:
    opened = open_envelope(
        sealed.data,
        identity=identity,
        roster=roster,
        replay=MemoryReplayStore(),
        schemas=tf.schemas,
        now_ms=RECEIVE_AT,
        subject=None,
        policy=ReceivePolicy(),
    )
    assert isinstance(opened, Opened)
    return opened


def _rotate_and_apply(tf: TaskForce, key_path: Path, tmp_path: Path) -> R.TrustedRoster:
    """police runs keys rotate; the coordinator reads the statement and applies it."""
    done = rotate_keys(
        key_path, ask_passphrase=lambda: PASSPHRASE, grace_ms=GRACE_MS, now_ms=ROTATED_AT
    )
    assert Path(done.statement_path) == tmp_path / "police.rotation"
    statement = Path(done.statement_path).read_bytes()
    _, roster = R.decode_signed_roster(tf.roster_bytes)
    verified = read_rotation(statement, roster, now_ms=ROTATED_AT)
    signed = R.apply_rotation(
        tf.signed,
        agency=verified.agency_id,
        new_enc_pk=verified.new_enc_pk,
        enc_bind_sig=verified.enc_bind_sig,
        new_sign_pk=verified.new_sign_pk,
        created_ms=verified.created_ms,
        grace_ms=verified.grace_ms,
        now_ms=ROTATED_AT,
    )
    signed = R.sign(signed, tf.ids["coord"])
    trusted, _ = R.verify_roster(encode(signed), anchor=tf.anchor, state=None, now_ms=RECEIVE_AT)
    return trusted


def test_key_file_stolen_after_rotation_and_grace_opens_nothing_sealed_before(
    tf: TaskForce, key_path: Path, tmp_path: Path
) -> None:
    old_enc_pk = tf.ids["police"].enc_pk
    earlier = [_alert(tf, old_enc_pk, seq=seq, now_ms=NOW_MS) for seq in (1, 2, 3)]
    roster = _rotate_and_apply(tf, key_path, tmp_path)

    # During the grace period: a command opens the key (nothing is destroyed yet), and a copy
    # stolen then still opens what was sealed before the rotation.
    during = unlock_key(key_path, PASSPHRASE, now_ms=GRACE_ENDS)
    assert len(during.identity.enc_kids) == 2
    stolen_during = open_keyfile(key_path.read_bytes(), PASSPHRASE)
    for sealed in earlier:
        assert _open(tf, sealed, stolen_during, roster).msg_id == sealed.msg_id

    # The grace period ends; the next command that opens the key file destroys the old secret.
    unlock_key(key_path, PASSPHRASE, now_ms=GRACE_ENDS + 1)
    stolen_after = open_keyfile(key_path.read_bytes(), PASSPHRASE)
    assert stolen_after.enc_kids == (stolen_during.kid_enc,)
    for sealed in earlier:
        with pytest.raises(Rejected) as info:
            _open(tf, sealed, stolen_after, roster)
        # The roster still names the old key as police's (retired_enc_keys), so the receiver
        # says so (E_WRAP: addressed to this agency, under a key the file no longer holds).
        assert info.value.code == RejectCode.E_WRAP
    # Not merely unlisted: the thief's identity has no secret for the old key.
    with pytest.raises(KeyError):
        stolen_after.x25519_kid(stolen_during.enc_kids[1], old_enc_pk)


def test_messages_sealed_to_the_new_key_open_after_the_old_one_is_destroyed(
    tf: TaskForce, key_path: Path, tmp_path: Path
) -> None:
    roster = _rotate_and_apply(tf, key_path, tmp_path)
    new_enc_pk = roster.members["police"].enc_key.pk
    assert new_enc_pk != tf.ids["police"].enc_pk
    later = _alert(tf, new_enc_pk, seq=7, now_ms=RECEIVE_AT - 1000)
    police = unlock_key(key_path, PASSPHRASE, now_ms=GRACE_ENDS + 1).identity
    assert police.enc_pk == new_enc_pk
    assert _open(tf, later, police, roster).sender == "labour"
    # Wraps to the retired key still name police while the roster lists it as retired.
    assert roster.agency_of_enc_kid[tf.ids["police"].kid_enc] == "police"


def test_an_agent_that_stays_up_destroys_the_old_secret_without_the_passphrase(
    tf: TaskForce, key_path: Path, tmp_path: Path
) -> None:
    """destroy_expired (the agent's daily task) uses the key kept at unlock."""
    earlier = _alert(tf, tf.ids["police"].enc_pk, seq=1, now_ms=NOW_MS)
    roster = _rotate_and_apply(tf, key_path, tmp_path)
    unlocked = unlock_key(key_path, PASSPHRASE, now_ms=ROTATED_AT + 1)
    assert _open(tf, earlier, unlocked.identity, roster).seq == 1
    assert destroy_expired(unlocked, now_ms=GRACE_ENDS) is unlocked
    after = destroy_expired(unlocked, now_ms=GRACE_ENDS + 1)
    with pytest.raises(Rejected) as info:
        _open(tf, earlier, after.identity, roster)
    assert info.value.code == RejectCode.E_WRAP  # police's old key, no longer held
    on_disk = open_keyfile(key_path.read_bytes(), PASSPHRASE)
    assert on_disk.enc_kids == after.identity.enc_kids == (after.identity.kid_enc,)
    assert on_disk.state_key == tf.ids["police"].state_key


def test_a_key_file_that_cannot_be_rewritten_warns_and_still_opens(
    tf: TaskForce, key_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rotate_and_apply(tf, key_path, tmp_path)

    def refused(path: Path, data: bytes, **_: object) -> None:
        # What write_atomic raises for a directory it may not write (tests may run as root,
        # for whom a chmod changes nothing).
        raise InputError(f"cannot write {str(path)!r}: permission denied", hint="check it")

    monkeypatch.setattr(keys_workflow, "write_atomic", refused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unlocked = unlock_key(key_path, PASSPHRASE, now_ms=GRACE_ENDS + 1)
    assert unlocked.identity.enc_kids == (unlocked.identity.kid_enc,)
    assert any(issubclass(w.category, SecretsNotDestroyed) for w in caught)
    text = " ".join(str(w.message) for w in caught)
    assert "still holds old secrets" in text
    assert PASSPHRASE.decode() not in text
    # The file still holds the old secret: the warning was right.
    assert len(open_keyfile(key_path.read_bytes(), PASSPHRASE).enc_kids) == 2
