"""Issue 15, second review R6: an inbox row keeps its message's payload key K, sealed under
the state key, so it stays readable (PROTOCOL.md 8.7) after the epoch key that gave K is
deleted past its retention, or the retired secret its wrap was made for is destroyed; the
state database never holds K in clear. Rows of an earlier tfshare (no sealed key) open as
they always did."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from pathlib import Path

import msgspec
import pytest
from agent_epochs_kit import epoch_message, epoch_taskforce, load_agency, new_key, state_files
from tfkit import TaskForce, example_json

from tfshare import roster as R
from tfshare.epochs import EpochKeyring
from tfshare.errors import Rejected
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.keys import Identity
from tfshare.protocol import Delivered, Receiver
from tfshare.registry.book import shipped
from tfshare.rotation import make_rotation, read_rotation
from tfshare.seal import ReceivePolicy, Recipient, Sealed, reopen_stored, seal_to
from tfshare.store import open_inbox_key
from tfshare.workflows import live

DAY_MS = 24 * 3600 * 1000
PASSPHRASE = b"kit passphrase of ngo"  # agent_epochs_kit.load_agency's


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _receiver(identity: Identity, tf: TaskForce, agency: live.Agency, **kw: object) -> Receiver:
    return Receiver(
        identity=identity, roster=tf.trusted(), replay=agency.store.replay(keep_inbox=True),
        schemas=shipped(), clock=now_ms, policy=ReceivePolicy(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _direct(tf: TaskForce, to: Identity, *, seq: int, now: int) -> Sealed:
    schema = shipped().lookup("tf.alert/1")
    assert schema is not None
    return seal_to(
        identity=tf.ids["police"], taskforce="nl-north", channel="alerts",
        roster_seq=tf.trusted().seq, recipients=[Recipient("ngo", to.enc_pk)], schema=schema,
        body=schema.to_body(schema.from_json(example_json("tf.alert/1"))), seq=seq,
        now_ms=now, rng=os.urandom,
    )  # fmt: skip


def _rotated_agency(tmp_path: Path, now: int) -> tuple[TaskForce, Identity, live.Agency]:
    """ngo rotated its encryption key a minute ago (one day's grace), the rotation applied
    to the roster; its key file holds the new key and the retired one."""
    tf = epoch_taskforce(now_ms=now)
    rotated = tf.ids["ngo"].rotated(rng=os.urandom, now_ms=now - 60_000, grace_ms=DAY_MS)
    statement = make_rotation(tf.ids["ngo"], rotated, created_ms=now - 60_000, grace_ms=DAY_MS)
    checked = read_rotation(statement, R.decode_signed_roster(tf.roster_bytes)[1], now_ms=now)
    applied = R.apply_rotation(
        tf.signed, agency="ngo", new_enc_pk=checked.new_enc_pk,
        enc_bind_sig=checked.enc_bind_sig, new_sign_pk=checked.new_sign_pk,
        created_ms=checked.created_ms, grace_ms=checked.grace_ms, now_ms=now,
    )  # fmt: skip
    tf = dataclasses.replace(tf, signed=R.sign(applied, tf.ids["coord"]))
    (tmp_path / "ngo.key").write_bytes(
        seal_keyfile(rotated, PASSPHRASE, limits=KDF_PROFILES["insecure-test"], rng=os.urandom)
    )
    return tf, rotated, load_agency(tf, "ngo", tmp_path)


def test_a_direct_message_wrapped_to_a_retired_key_stays_readable_after_the_secret_is_destroyed(
    tmp_path: Path,
) -> None:
    now = now_ms()
    tf, rotated, agency = _rotated_agency(tmp_path, now)
    old_ngo = epoch_taskforce(now_ms=now).ids["ngo"]  # the key before the rotation
    message = _direct(tf, old_ngo, seq=1, now=now)  # sealed by one who had the old card
    outcome = _receiver(agency.identity(), tf, agency).receive(message.data, None)
    assert isinstance(outcome, Delivered)
    [before] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(before, live.InboxMessage)

    # Two days on the grace is over: the agent destroys the retired secret.
    agent = live.make_agent(
        agency, url="nats://127.0.0.1:1", clock=lambda: now + 2 * DAY_MS, witness=False
    )
    assert agent.destroy_expired_secrets(force=True)
    assert list(agency.identity().enc_kids) == [rotated.kid_enc]

    [after] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(after, live.InboxMessage), after
    assert after.opened.msg_id == message.msg_id
    # Without the kept key the row no longer opens: the secret really is gone.
    with pytest.raises(Rejected):
        reopen_stored(
            message.data, identity=agency.identity(), roster=agency.roster,
            schemas=agency.registry,
        )  # fmt: skip
    agency.store.close()


def test_the_state_database_never_holds_a_message_key_in_clear(tmp_path: Path) -> None:
    now = now_ms()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now - 60_000)
    receiver = _receiver(tf.ids["ngo"], tf, agency, epochs=EpochKeyring([key]))
    keys = []
    for sealed in (
        epoch_message(tf, "police", key, seq=1, now_ms=now),
        _direct(tf, tf.ids["ngo"], seq=2, now=now),
    ):
        outcome = receiver.receive(sealed.data, None)
        assert isinstance(outcome, Delivered)
        secret = outcome.message.payload_key
        assert secret is not None and len(secret.reveal()) == 32
        assert "payload_key" not in repr(outcome.message)
        # No encoder writes it out: encoding what holds it fails instead.
        with pytest.raises(TypeError):
            msgspec.to_builtins(outcome.message)
        keys.append(secret.reveal())
    items = agency.store.inbox()
    # Each row holds its key sealed, and it opens to K with the state key only.
    opened = {
        open_inbox_key(tf.ids["ngo"].state_key, i.sender_kid, i.msg_id, i.sealed_key or b"")
        for i in items
    }
    assert opened == set(keys)
    assert "sealed_key" not in repr(items[0])
    files = state_files(agency.store.path)
    agency.store.close()
    for k in keys:
        assert k not in files


def test_a_sealed_key_moved_to_another_row_does_not_open_and_the_row_opens_as_before(
    tmp_path: Path,
) -> None:
    """The key's associated data names its message: copied to another row it does not open
    there, and that row is opened with the keys held (here: its epoch key is gone, so it is
    unreadable, E_EPOCH), never with another message's key."""
    now = now_ms()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now - 60_000)
    receiver = _receiver(tf.ids["ngo"], tf, agency, epochs=EpochKeyring([key]))
    first, second = (epoch_message(tf, "police", key, seq=s, now_ms=now) for s in (1, 2))
    for sealed in (first, second):
        assert isinstance(receiver.receive(sealed.data, None), Delivered)
    db = sqlite3.connect(agency.store.path)
    with db:
        db.execute(
            "UPDATE inbox_keys SET sealed = (SELECT sealed FROM inbox_keys WHERE msg_id = ?) "
            "WHERE msg_id = ?",
            (first.msg_id, second.msg_id),
        )
    db.close()
    shown = {
        r.item.msg_id: r for r in live.read_inbox(agency, agency.store.inbox())
    }  # the epoch key was never given to the agency's keyring
    assert isinstance(shown[first.msg_id], live.InboxMessage)
    moved = shown[second.msg_id]
    assert isinstance(moved, live.Unreadable) and moved.code == "E_EPOCH"
    agency.store.close()


def test_a_row_stored_before_the_sealed_key_opens_with_the_keys_held_and_not_without(
    tmp_path: Path,
) -> None:
    """A row of an earlier tfshare has no sealed key: it opens with the epoch key while it
    is held, and is unreadable (E_EPOCH) once it is gone, as before."""
    now = now_ms()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now - 60_000)
    message = epoch_message(tf, "police", key, seq=1, now_ms=now)
    receiver = _receiver(tf.ids["ngo"], tf, agency, epochs=EpochKeyring([key]))
    assert isinstance(receiver.receive(message.data, None), Delivered)
    db = sqlite3.connect(agency.store.path)
    with db:
        db.execute("DELETE FROM inbox_keys")
    db.close()
    [unreadable] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(unreadable, live.Unreadable) and unreadable.code == "E_EPOCH"
    agency.epochs.add(key)
    [readable] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(readable, live.InboxMessage)
    agency.store.close()
