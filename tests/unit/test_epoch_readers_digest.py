"""Review issue 15, finding F3: a sender never seals under an epoch made for another reader set.

Every key delivery names the digest of the reader set it was made for (``readers_digest``: the
channel's active readers with their current encryption keys); a sender uses its current epoch
only while that digest is the channel's in the sender's roster (``epochs.made_for_readers``).
After a removal, a suspension, a read right taken away, a key rotation or an addition, the
channel is sealed in direct mode where the policy allows it, else refused (TrustError, exit 6,
"waiting for the key manager's new epoch") until the key manager's epoch for the new reader
set is held; then that epoch is used at once.

Here: the digest itself (definition, what changes it, what does not, order, the cache), the
sender's rule through ``seal()``, the agent's state (key and digest sealed together; a row of
an earlier tfshare opens with no digest and never seals), and the key manager (deliveries name
the digest, a resend names the same, an epoch stored without one is replaced).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import threading
from pathlib import Path

import msgspec
import pytest
from agent_epochs_kit import epoch_taskforce as large_taskforce
from agent_epochs_kit import made_for
from hypothesis import given
from hypothesis import strategies as st
from kmkit import KM as KMKIT_KM
from kmkit import km_taskforce, open_delivery, without
from kmkit import trusted as km_trusted
from test_epoch_mode import (
    ALERT,
    ALERT_BODY,
    EK1,
    EK2,
    S1,
    S2,
    WRITER,
    alerts_readers,
    deliver,
    delivered,
    epoch_message,
    epoch_taskforce,
    key,
    keyring,
    receiver,
    trusted,
)
from tfkit import NOW_MS, DeterministicRng, TaskForce, identity

from tfshare import primitives, sqlite_db
from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.envelope import Mode
from tfshare.epochs import (
    EpochKey,
    EpochKeyring,
    channel_readers_digest,
    choose_mode,
    made_for_readers,
    readers_digest,
)
from tfshare.errors import ExitCode, TrustError
from tfshare.keymanager import store as km_store
from tfshare.keymanager.plan import channel_readers, digest_of
from tfshare.keymanager.service import KeyManager, queue_resend
from tfshare.keymanager.store import KeyManagerStore
from tfshare.rotation import DAY_MS, make_rotation, read_rotation
from tfshare.seal import Sealed, claimed_header, seal
from tfshare.store import NONCE_BYTES, StateStore, _epoch_key_ad, seal_epoch_key

# ---------------------------------------------------------------------------------------------
# The digest


def _alerts(tf: TaskForce, signed: R.SignedRoster) -> bytes:
    return channel_readers_digest(trusted(tf, signed), "alerts")


def _edited(tf: TaskForce, roster: R.Roster) -> R.SignedRoster:
    return R.sign(R.edit(tf.signed, roster, now_ms=S2), tf.ids["coord"])


def _with_status(tf: TaskForce, agency: str, status: str) -> R.SignedRoster:
    roster = R.decode_roster(tf.signed.roster)
    members = [
        msgspec.structs.replace(m, status=status) if m.agency_id == agency else m
        for m in roster.members
    ]
    return _edited(tf, msgspec.structs.replace(roster, members=members))


def _rotated(tf: TaskForce, agency: str) -> R.SignedRoster:
    """``agency`` rotated its encryption key (keys rotate; roster rotate applied)."""
    before = tf.ids[agency]
    created = S2
    after = before.rotated(rng=DeterministicRng("digest-rotation"), now_ms=created, grace_ms=DAY_MS)
    statement = make_rotation(before, after, created_ms=created, grace_ms=DAY_MS)
    verified = read_rotation(statement, R.decode_roster(tf.signed.roster), now_ms=created)
    rotated = R.apply_rotation(
        tf.signed,
        agency=verified.agency_id,
        new_enc_pk=verified.new_enc_pk,
        enc_bind_sig=verified.enc_bind_sig,
        new_sign_pk=verified.new_sign_pk,
        created_ms=verified.created_ms,
        grace_ms=verified.grace_ms,
        now_ms=created + 60_000,
    )
    return R.sign(rotated, tf.ids["coord"])


def test_the_digest_is_blake2b_of_the_label_and_each_reader_by_agency_id() -> None:
    """PROTOCOL.md 8.6: H(L("tfshare/v1/epoch-readers") || for each reader in ascending
    agency_id byte order: u32(agency_id) || enc_pk), re-derived with hashlib only."""
    tf = epoch_taskforce()
    roster = trusted(tf)
    readers = sorted(roster.active_readers("alerts"), key=str.encode)
    preimage = b"tfshare/v1/epoch-readers\x00"
    for agency in readers:
        preimage += len(agency).to_bytes(4, "big") + agency.encode()
        preimage += roster.members[agency].enc_key.pk
    expected = hashlib.blake2b(preimage, digest_size=32).digest()
    assert channel_readers_digest(roster, "alerts") == expected == alerts_readers()
    # the key manager's readers (plan.channel_readers) give the same digest
    assert digest_of(channel_readers(roster, "alerts")) == expected


def test_the_digest_changes_on_removal_suspension_ungrant_rotation_and_addition() -> None:
    tf = epoch_taskforce()
    before = _alerts(tf, tf.signed)
    removed = R.sign(R.revoke(tf.signed, "ngo", reason="retired", now_ms=S2), tf.ids["coord"])
    ungranted = R.sign(
        R.ungrant(tf.signed, "ngo", channel="alerts", read=True, write=False, now_ms=S2),
        tf.ids["coord"],
    )
    outsider = identity("outsider")
    added = R.add_member(tf.signed, outsider.card_body(), role="member", now_ms=S2)
    added = R.grant(added, "outsider", channel="alerts", read=True, write=False, now_ms=S2)
    changes = {
        "removal": removed,
        "suspension": _with_status(tf, "ngo", "suspended"),
        "ungrant": ungranted,
        "rotation": _rotated(tf, "ngo"),
        "addition": R.sign(added, tf.ids["coord"]),
    }
    tf_added = TaskForce(
        ids={**tf.ids, "outsider": outsider}, signed=tf.signed, anchor=tf.anchor, now_ms=tf.now_ms
    )
    digests = {name: _alerts(tf_added, signed) for name, signed in changes.items()}
    for name, digest in digests.items():
        assert digest != before, name
    # the same readers left, whichever way ngo stopped reading: the same set
    assert digests["removal"] == digests["suspension"] == digests["ungrant"]
    assert len({digests["removal"], digests["rotation"], digests["addition"]}) == 3


def test_the_digest_is_unchanged_when_a_non_reader_or_a_write_right_changes() -> None:
    """A member added who does not read the channel, a reader given write access, another
    channel's readers: not the channel's reader set."""
    tf = epoch_taskforce()
    before = _alerts(tf, tf.signed)
    added = R.add_member(tf.signed, identity("outsider").card_body(), role="member", now_ms=S2)
    written = R.grant(added, "ngo", channel="alerts", read=True, write=True, now_ms=S2)
    other = R.grant(written, "outsider", channel="tips", read=True, write=False, now_ms=S2)
    after = R.sign(other, tf.ids["coord"])
    assert trusted(tf, after).seq > trusted(tf).seq
    assert _alerts(tf, after) == before


readers_lists = st.lists(
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12),
        st.binary(min_size=32, max_size=32),
    ),
    max_size=20,
    unique_by=lambda r: r[0],
)


@given(readers_lists, st.randoms(use_true_random=False))
def test_the_digest_does_not_depend_on_the_order_readers_are_given(
    readers: list[tuple[str, bytes]], rnd: object
) -> None:
    shuffled = list(readers)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert readers_digest(shuffled) == readers_digest(readers)


@given(readers_lists.filter(bool), st.integers(0, 255), st.integers(0, 31))
def test_the_digest_changes_when_any_readers_key_changes(
    readers: list[tuple[str, bytes]], flip: int, at: int
) -> None:
    agency, pk = readers[0]
    changed = bytearray(pk)
    changed[at] ^= flip or 1
    assert readers_digest([(agency, bytes(changed)), *readers[1:]]) != readers_digest(readers)
    assert readers_digest(readers[1:]) != readers_digest(readers)


def test_the_channels_digest_is_computed_once_per_roster() -> None:
    """20,000 readers are not hashed per message: the same roster gives the same object."""
    roster = trusted(epoch_taskforce())
    first = channel_readers_digest(roster, "alerts")
    assert channel_readers_digest(roster, "alerts") is first


# ---------------------------------------------------------------------------------------------
# The sender's rule


def _removed() -> tuple[TaskForce, R.SignedRoster, bytes]:
    """The epoch-only task force, its roster after ngo's removal at S2, and the digest of the
    remaining readers (what the key manager's epoch 2 is made for)."""
    tf = epoch_taskforce(2)
    after = R.sign(R.revoke(tf.signed, "ngo", reason="retired", now_ms=S2), tf.ids["coord"])
    return tf, after, channel_readers_digest(trusted(tf, after), "alerts")


def _seal(
    tf: TaskForce, signed: R.SignedRoster, epochs: EpochKeyring, *, sender: str = WRITER
) -> Sealed:
    return seal(
        identity=tf.ids[sender],
        roster=trusted(tf, signed),
        channel="alerts",
        to=None,
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng("readers-digest"),
        epochs=epochs,
    )


def test_after_a_removal_the_sender_refuses_the_epoch_the_removed_reader_holds() -> None:
    """Epoch-only channel: the key held (epoch 1) was made for the readers with ngo; the
    sender's roster removed ngo. Refused, exit 6, and the refusal says why (not "no key")."""
    tf, after, _ = _removed()
    with pytest.raises(TrustError) as refused:
        _seal(tf, after, keyring(key()))
    assert refused.value.exit_code == ExitCode.TRUST
    assert "readers of channel 'alerts' changed" in refused.value.message
    assert "waiting for the key manager's new epoch" in refused.value.message
    assert refused.value.hint and "keys serve" in refused.value.hint
    with pytest.raises(TrustError) as no_key:
        _seal(tf, after, keyring())
    assert no_key.value.message == "no epoch key for channel 'alerts' yet"
    # Under the roster the key was made for, the same key seals.
    assert claimed_header(_seal(tf, tf.signed, keyring(key())).data).epoch == 1


def test_the_new_epoch_is_used_as_soon_as_its_delivery_is_held() -> None:
    """police accepts the key manager's delivery of epoch 2 (made for the readers after the
    removal) and seals under it at once; labour opens it, ngo does not hold it."""
    tf, after, made_for_after = _removed()
    box = receiver(tf, WRITER, keys=[key()], signed=after)
    rekey = deliver(
        tf,
        roster=trusted(tf, after),
        epoch=2,
        key_bytes=EK2,
        starts_ms=S2,
        reason="members",
        seed="rekey",
        seq=2,
        made_for=made_for_after,
    )
    new_key = delivered(box.receive(rekey.data)).new_epoch_key
    assert new_key is not None and new_key.readers_digest == made_for_after
    sealed = _seal(tf, after, box.epochs)
    assert claimed_header(sealed.data).epoch == 2
    labour = receiver(tf, "labour", keys=[key(), key(2, EK2, S2, made_for_after)], signed=after)
    assert delivered(labour.receive(sealed.data)).message.epoch == 2


def test_a_sender_whose_roster_is_behind_the_key_managers_does_not_use_the_new_epoch() -> None:
    """police still holds the roster before the removal; the key manager's epoch 2 (made for
    the readers after it) is not sealed under until police takes the new roster."""
    tf, after, made_for_after = _removed()
    ring = keyring(key(), key(2, EK2, S2, made_for_after))
    with pytest.raises(TrustError, match="waiting for the key manager's new epoch"):
        _seal(tf, tf.signed, ring)
    assert claimed_header(_seal(tf, after, ring).data).epoch == 2


def test_a_key_without_a_digest_opens_messages_but_never_seals_one() -> None:
    """A key kept by an earlier tfshare (no digest): receiving still works; sending under it
    is refused, since which readers it was made for is unknown."""
    tf = epoch_taskforce(2)
    old = EpochKey("alerts", 1, EK1, S1)
    assert old.readers_digest == b"" and not made_for_readers(old, trusted(tf))
    with pytest.raises(TrustError, match="waiting for the key manager's new epoch"):
        _seal(tf, tf.signed, keyring(old))
    message = epoch_message(tf, key())
    assert delivered(receiver(tf, "ngo", keys=[old]).receive(message.data)).message.epoch == 1


def test_a_channel_allowing_both_modes_falls_back_to_direct_after_a_removal() -> None:
    """66 readers on "alerts" (mode policy 3): epoch mode with the key made for them; after
    reader-1's removal (65 readers, still above 64) direct mode to the 65 remaining readers
    until the new epoch arrives, then epoch mode again."""
    now = NOW_MS
    tf = large_taskforce(now_ms=now, extra_readers=62)
    roster = tf.trusted()
    assert len(roster.active_readers("alerts")) == 66
    held = EpochKey("alerts", 1, EK1, now - 60_000, made_for("alerts", extra_readers=62))
    removed = R.sign(R.revoke(tf.signed, "reader-1", reason="retired", now_ms=now - 1000),
                     tf.ids["coord"])  # fmt: skip
    after, _ = R.verify_roster(encode(removed), anchor=tf.anchor, state=None, now_ms=now)

    def sealed_with(roster: R.TrustedRoster, ring: EpochKeyring) -> Sealed:
        return seal(
            identity=tf.ids["police"], roster=roster, channel="alerts", to=None,
            schema=ALERT, body=ALERT_BODY, seq=1, now_ms=now, rng=os.urandom, epochs=ring,
        )  # fmt: skip

    assert sealed_with(roster, keyring(held)).epoch == 1
    fallback = sealed_with(after, keyring(held))
    assert fallback.epoch == 0 and len(fallback.recipients) == 65
    assert "reader-1" not in fallback.recipients
    new = EpochKey("alerts", 2, EK2, now - 500, channel_readers_digest(after, "alerts"))
    assert sealed_with(after, keyring(held, new)).epoch == 2


def test_choose_mode_says_readers_changed_apart_from_no_key() -> None:
    """Both allowed and at most 256 readers: direct; above 256, or epoch only: refused with
    the reader-change message."""

    def choose(mode_policy: int, readers: int) -> Mode:
        return choose_mode(
            channel="alerts",
            mode_policy=mode_policy,
            active_readers=readers,
            named_recipients=False,
            current=None,
            readers_changed=True,
        ).mode

    assert choose(3, 200) is Mode.DIRECT
    assert choose(1, 200) is Mode.DIRECT
    for mode_policy, readers in ((3, 257), (2, 10)):
        with pytest.raises(TrustError, match="readers of channel 'alerts' changed"):
            choose(mode_policy, readers)


# ---------------------------------------------------------------------------------------------
# The keyring under two threads


def test_keys_added_from_several_threads_at_once_are_all_kept() -> None:
    """The agent and the desk may add at the same time: no add is lost (a lock around the
    copy-and-replace; readers take none)."""
    ring = EpochKeyring()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:

        def add(first: int) -> None:
            for epoch in range(first, first + 400):
                ring.add(EpochKey("alerts", epoch, EK1, S1, alerts_readers()))

        threads = [threading.Thread(target=add, args=(1 + 400 * i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(ring) == 2400
    newest = ring.newest("alerts")
    assert newest is not None and newest.epoch == 2400


# ---------------------------------------------------------------------------------------------
# The agent's state


STATE_KEY = bytes(range(32))


def test_the_agents_state_keeps_the_digest_sealed_with_the_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    held = key()
    assert store.epoch_key_add("nl-north", held, state_key=STATE_KEY, received_ms=1)
    assert store.epoch_keys("nl-north", state_key=STATE_KEY) == ([held], 0)
    [row] = store._db.execute("SELECT sealed FROM epoch_keys").fetchall()
    assert len(row[0]) == NONCE_BYTES + 64 + 16
    assert alerts_readers() not in bytes(row[0])  # sealed, not beside the key in the clear
    store.close()
    with pytest.raises(ValueError):
        seal_epoch_key(STATE_KEY, "nl-north", key(readers=bytes(31)), bytes(24))


def test_a_row_of_an_earlier_tfshare_opens_without_a_digest_and_never_seals(
    tmp_path: Path,
) -> None:
    """A 32-byte sealed plaintext (the key alone) reads as readers_digest b"": the agent
    opens with it, and seal() does not use it."""
    store = StateStore(tmp_path / "state.db")
    nonce = bytes(range(NONCE_BYTES))
    ad = _epoch_key_ad("nl-north", "alerts", 1, S1)
    sealed = nonce + primitives.aead_encrypt(EK1, ad, nonce, STATE_KEY)
    store._db.execute(
        "INSERT INTO epoch_keys VALUES (?, ?, ?, ?, ?, ?)", ("nl-north", "alerts", 1, S1, sealed, 1)
    )
    store._db.commit()
    [loaded], unreadable = store.epoch_keys("nl-north", state_key=STATE_KEY)
    store.close()
    assert unreadable == 0
    assert (loaded.key, loaded.readers_digest) == (EK1, b"")
    tf = epoch_taskforce(2)
    with pytest.raises(TrustError, match="waiting for the key manager's new epoch"):
        _seal(tf, tf.signed, keyring(loaded))


# ---------------------------------------------------------------------------------------------
# The key manager


def _manager(tf: TaskForce, path: Path, *, now_ms: int = NOW_MS) -> KeyManager:
    ident = tf.ids[KMKIT_KM]
    return KeyManager(
        identity=ident,
        roster=km_trusted(tf, now_ms=now_ms),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(path, state_key=ident.state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: now_ms,
        rng=DeterministicRng(f"km digest {now_ms}"),  # (a seed is cut at 64 bytes)
    )


def test_deliveries_and_resends_name_the_reader_set_of_their_epoch(tmp_path: Path) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "keymanager.db")
    manager.make_epochs({})
    expected = channel_readers_digest(manager.roster, "alerts")
    [queued] = manager.store.pending()
    delivery = open_delivery(tf, "ngo", queued.envelope, roster=manager.roster, now_ms=NOW_MS)
    assert delivery.readers_digest == expected
    assert manager.store.current()["alerts"].state.readers_digest == expected
    manager.store.published(queued.msg_id)
    queue_resend(
        manager.identity, manager.roster, manager.store, "alerts", "ngo",
        now_ms=NOW_MS + 60_000, rng=DeterministicRng("resend"),
    )  # fmt: skip
    [again] = manager.store.pending()
    resent = open_delivery(tf, "ngo", again.envelope, roster=manager.roster, now_ms=NOW_MS)
    assert (resent.reason, resent.key) == ("resend", delivery.key)
    assert resent.readers_digest == expected  # the epoch's readers, not ngo's alone


def test_after_a_removal_the_new_epoch_names_the_remaining_readers(tmp_path: Path) -> None:
    tf = km_taskforce()
    db = tmp_path / "keymanager.db"
    first = _manager(tf, db)
    first.make_epochs({})
    before = first.store.current()["alerts"].state.readers_digest
    first.store.close()
    gone = without(tf, "labour", now_ms=NOW_MS + 1000)
    second = _manager(gone, db, now_ms=NOW_MS + 2000)
    [rekey] = second.make_epochs({})
    assert (rekey.epoch, rekey.reason) == (2, "members")
    after = second.store.current()["alerts"].state.readers_digest
    assert after == channel_readers_digest(second.roster, "alerts") != before
    second.store.close()


def test_an_epoch_stored_without_a_digest_is_replaced_and_not_resent(tmp_path: Path) -> None:
    """A key manager database of schema 1 (before deliveries named their readers) is upgraded
    in place; its epoch has no digest, so agents would never seal under it: the next turn
    makes a new epoch for the same readers ("members"), and a resend of the old one is
    refused."""
    tf = km_taskforce()
    db = tmp_path / "keymanager.db"
    conn = sqlite_db.open_database(
        db, km_store.KEYMANAGER_DATABASE, kind=km_store.KeyManagerStoreError
    )
    sqlite_db.migrate(conn, km_store.KEYMANAGER_DATABASE, db, km_store.MIGRATIONS[:1])
    state_key = tf.ids[KMKIT_KM].state_key
    nonce = bytes(24)
    sealed = primitives.aead_encrypt(bytes(32), km_store._ad("alerts", 1, S1), nonce, state_key)
    with conn:
        conn.execute(
            "INSERT INTO epochs VALUES ('alerts', 1, ?, ?, ?, 'initial', 5, 0, 1)",
            (nonce, sealed, S1),
        )
        roster = km_trusted(tf, now_ms=NOW_MS)
        conn.executemany(
            "INSERT INTO epoch_readers VALUES ('alerts', 1, ?, ?)",
            [(r.agency_id, r.kid) for r in channel_readers(roster, "alerts")],
        )
    conn.close()
    manager = _manager(tf, db)
    assert manager.store.current()["alerts"].state.readers_digest is None
    with pytest.raises(TrustError, match="made before key deliveries named their readers"):
        queue_resend(
            manager.identity, manager.roster, manager.store, "alerts", "ngo",
            now_ms=NOW_MS, rng=DeterministicRng("resend-old"),
        )  # fmt: skip
    [rekey] = manager.make_epochs({})
    assert (rekey.epoch, rekey.reason) == (2, "members")
    assert manager.store.current()["alerts"].state.readers_digest == channel_readers_digest(
        manager.roster, "alerts"
    )
    assert manager.make_epochs({}) == []
    manager.store.close()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT count(*) FROM epochs").fetchone() == (2,)
