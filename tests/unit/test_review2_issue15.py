"""Second adversarial review of issue 15 (the operational and insider-facing parts): each test
is one finding, written to FAIL until the code is fixed. The names say the correct behaviour;
the docstrings say what goes wrong today and the fix expected.

Everything is real: keys, signatures, encryption, key files, SQLite; clocks and randomness
are fixed where the test needs them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from agent_epochs_kit import epoch_message, epoch_taskforce, load_agency, new_key
from kmkit import KM, edited, km_taskforce, trusted
from tfkit import NOW_MS, DeterministicRng, TaskForce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.epochs import EPOCH_KEY_RETENTION_MS, EpochKeyring
from tfshare.errors import ExitCode, TfshareError, TrustError
from tfshare.files import write_atomic
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.keymanager.service import KeyManager, queue_resend
from tfshare.keymanager.store import KeyManagerStore
from tfshare.protocol import Delivered, Receiver
from tfshare.registry.book import shipped
from tfshare.seal import ReceivePolicy
from tfshare.workflows import live
from tfshare.workflows.keys import rotate_keys


def _now() -> int:
    return time.time_ns() // 1_000_000


def _manager(tf: TaskForce, path: Path, *, now_ms: int = NOW_MS) -> KeyManager:
    identity = tf.ids[KM]
    return KeyManager(
        identity=identity,
        roster=trusted(tf, now_ms=now_ms),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(path, state_key=identity.state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: now_ms,
        rng=DeterministicRng(f"review2 {path} {now_ms}"),
    )


# ---------------------------------------------------------------------------------------------
# HIGH: `keys resend` hands a joiner the epoch made before it joined


def test_resend_refuses_a_reader_the_current_epoch_was_not_made_for(tmp_path: Path) -> None:
    """ngo is granted read on "alerts" after epoch 1 was made for coord, police and labour.
    Until the key manager's next turn makes epoch 2 (a key manager that is stopped, behind,
    or whose roster file the coordinator just replaced), ``keys resend --to ngo`` seals
    epoch 1 to ngo: ngo then opens every message of the epoch sealed BEFORE it joined (up to
    7 days / 100,000 messages), which re-keying on "a reader added" exists to prevent.

    Fix (tfshare/keymanager/service.py, ``queue_resend``): after choosing ``readers``,
    refuse unless ``(to, kid)`` is in ``current.state.readers`` (the epoch's own reader
    set, already loaded by ``store.current()``)::

        +    if not any((r.agency_id, r.kid) in current.state.readers for r in readers):
        +        raise TrustError(
        +            f"epoch {current.state.epoch} of {channel!r} was not made for {to!r} "
        +            "(it joined, or its key changed, since)",
        +            hint="'tfshare keys serve' makes a new epoch for the channel's current "
        +            "readers at its next turn; no resend is needed",
        +        )
    """
    before = km_taskforce()
    before = edited(
        before,
        R.ungrant(before.signed, "ngo", channel="alerts", read=True, write=False, now_ms=NOW_MS),
    )
    manager = _manager(before, tmp_path / "km.db")
    [made] = manager.make_epochs({})
    assert (made.epoch, {r.agency_id for r in made.readers}) == (
        1,
        {"coord", "police", "labour"},
    )
    manager.store.published(*(p.msg_id for p in manager.store.pending()))

    joined = edited(
        before,
        R.grant(before.signed, "ngo", channel="alerts", read=True, write=False, now_ms=NOW_MS),
    )
    with pytest.raises(TrustError) as refused:
        queue_resend(
            manager.identity, trusted(joined, now_ms=NOW_MS), manager.store, "alerts", "ngo",
            now_ms=NOW_MS + 1000, rng=DeterministicRng("resend to a joiner"),
        )  # fmt: skip
    assert refused.value.exit_code == ExitCode.TRUST
    assert manager.store.pending() == []  # nothing sealed to ngo
    manager.store.close()


# ---------------------------------------------------------------------------------------------
# MEDIUM (data loss): the inbox loses every epoch-mode message once its key's retention ends


def test_inbox_epoch_message_stays_readable_after_its_epoch_key_retention(tmp_path: Path) -> None:
    """PROTOCOL.md 8.7: "What the agency received and kept (its inbox) is its own record,
    readable with the key file and the state directory together" (design: "The inbox keeps
    opening what was received before a rotation (it stores what it needs under the state
    key)"). Today the inbox row keeps only the envelope; ``read_inbox_item`` re-derives K
    from the epoch key, and the agent deletes that key 44 days after its successor started
    (``prune_epoch_keys``, ``Agency.load``). From then on every epoch-mode message of that
    epoch in the inbox is "Unreadable E_EPOCH": with the default 7-day period, a channel's
    whole epoch-mode history disappears from the desk within ~51 days. (Direct-mode rows
    wrapped to a retired encryption key go the same way once the secret is destroyed.)

    Fix: keep the message key with the row. tfshare/store.py: schema 4 ``ALTER TABLE inbox
    ADD COLUMN sealed_key BLOB`` (K sealed under the state key, AD = L(inbox-key) ||
    sender_kid || msg_id); the replay store's ``record`` writes it for a Delivered message
    (``Opened`` carries K to the agent, never logged). tfshare/seal.py ``reopen_stored``:
    ``payload_key: bytes | None`` used instead of ``_reopen_key`` when given (commit, AEAD,
    signature still checked). tfshare/workflows/live.py ``_reopen``: open the row's
    ``sealed_key`` with ``agency.identity().state_key`` and pass it."""
    now = _now()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    old = new_key("alerts", 1, starts_ms=now - 60_000)
    message = epoch_message(tf, "police", old, seq=1, now_ms=now)
    receiver = Receiver(
        identity=tf.ids["ngo"], roster=tf.trusted(), replay=agency.store.replay(keep_inbox=True),
        schemas=shipped(), clock=_now, policy=ReceivePolicy(), epochs=EpochKeyring([old]),
    )  # fmt: skip
    assert isinstance(receiver.receive(message.data, None), Delivered)
    agency.epochs.add(old)
    [shown] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(shown, live.InboxMessage)  # readable while the key is held

    # Epoch 2 started; 44 days and a minute later epoch 1's key goes, as the agent deletes it.
    successor = new_key("alerts", 2, starts_ms=now - 1000)
    agency.epochs.add(successor)
    gone = agency.epochs.expired(successor.starts_ms + EPOCH_KEY_RETENTION_MS + 60_000)
    assert [k.epoch for k in gone] == [1]
    agency.store.epoch_keys_delete(agency.roster.taskforce, gone)
    agency.epochs.remove(gone)

    [after] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(after, live.InboxMessage), after
    assert after.opened.msg_id == message.msg_id
    agency.store.close()


# ---------------------------------------------------------------------------------------------
# MEDIUM: a second `keys rotate` overwrites the statement the coordinators have not applied


PASSPHRASE = b"review2 issue 15 passphrase"


def test_keys_rotate_never_overwrites_an_unapplied_rotation_statement(tmp_path: Path) -> None:
    """``keys rotate --sign`` writes AGENCY.rotation (k1 -> k2, signed by k1). Before the
    coordinators apply it, the agency runs ``keys rotate`` again (say --enc): the new
    statement is signed by k2 and replaces the first file (``write_atomic`` overwrites).
    The roster still lists k1, so the coordinators must refuse the second statement
    (6.4 check 2), and the first no longer exists and cannot be made again (k1 is now a
    retired secret, destroyed after the grace): the agency is locked out of its identity.

    Fix (tfshare/workflows/keys.py, ``rotate_keys``): ``write_atomic(statement_path,
    statement, overwrite=False)`` and, before asking the passphrase, refuse (InputError,
    exit 1) when ``statement_path`` exists: hint "AGENCY.rotation is not applied yet: send
    it to the coordinators and move it away first (or give --out)". Nothing else written."""
    tf = build_police()
    key_path = tmp_path / "police.key"
    write_atomic(
        key_path,
        seal_keyfile(
            tf.ids["police"],
            PASSPHRASE,
            limits=KDF_PROFILES["insecure-test"],
            rng=DeterministicRng("police key"),
        ),
        secret=True,
    )
    first = rotate_keys(
        key_path, ask_passphrase=lambda: PASSPHRASE, enc=False, sign=True, now_ms=NOW_MS
    )
    statement = Path(first.statement_path)
    unapplied = statement.read_bytes()
    key_after_first = key_path.read_bytes()

    try:
        rotate_keys(key_path, ask_passphrase=lambda: PASSPHRASE, now_ms=NOW_MS + 60_000)
    except TfshareError as refused:
        assert refused.exit_code == ExitCode.ERROR
        assert key_path.read_bytes() == key_after_first  # refused: nothing half-written
    assert statement.read_bytes() == unapplied, "the unapplied statement was overwritten"


def build_police() -> TaskForce:
    from tfkit import build_taskforce  # noqa: PLC0415

    return build_taskforce()


# ---------------------------------------------------------------------------------------------
# MEDIUM: the last epoch key of a channel the agency no longer reads is kept for ever


def test_epoch_key_of_a_channel_the_agency_no_longer_reads_is_deleted_after_retention(
    tmp_path: Path,
) -> None:
    """ngo held epoch 1 of "alerts"; the coordinators took its read right away, so the key
    manager made epoch 2 for the others and ngo never receives it. ``EpochKeyring.expired``
    only expires a key whose SUCCESSOR is held: ngo's epoch 1 is its newest key of the
    channel, so ``prune_epoch_keys`` (and ``Agency.load``) keep it for ever. PROTOCOL.md 8.7
    says a stolen key file + state opens "superseded [epoch keys] for up to 44 days"; here
    it opens everything sealed under epoch 1 (a wiretap, a stream copy) years later. The
    same holds for a channel removed from the roster or made direct-only.

    Fix (tfshare/agent.py ``prune_epoch_keys``, tfshare/workflows/live.py ``Agency.load``):
    also delete the keys of every channel the roster in force does not let this agency
    read (``agency not in roster.active_readers(channel)``, or no such channel, or a
    direct-only channel) once ``now > roster.issued_ms + EPOCH_KEY_RETENTION_MS`` (the
    roster that took the right away, or any later one, was issued at least that long
    ago); e.g. ``EpochKeyring.expired(now_ms, reads=lambda ch: ..., since_ms=...)``."""
    now = _now()
    tf = epoch_taskforce(now_ms=now)
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    held = new_key("alerts", 1, starts_ms=now - 60_000)
    agency.store.epoch_key_add("nl-north", held, state_key=tf.ids["ngo"].state_key, received_ms=now)
    agency.epochs.add(held)

    # ngo no longer reads "alerts" (a new roster, signed and accepted as the agent does).
    taken = R.ungrant(tf.signed, "ngo", channel="alerts", read=True, write=False, now_ms=now)
    taken = R.sign(taken, tf.ids["coord"])
    agency.accept_roster(encode(taken))
    assert "ngo" not in agency.roster.active_readers("alerts")

    later = now + EPOCH_KEY_RETENTION_MS + 24 * 3600 * 1000
    agent = live.make_agent(agency, url="nats://127.0.0.1:1", clock=lambda: later, witness=False)
    agent.prune_epoch_keys(force=True)
    kept, _ = agency.store.epoch_keys("nl-north", state_key=tf.ids["ngo"].state_key)
    agency.store.close()
    assert agent.epochs.get("alerts", 1) is None
    assert kept == []


# ---------------------------------------------------------------------------------------------
# HIGH (availability, at 20,000 readers): the key manager's deliveries exceed its stream quota


@pytest.mark.parametrize("channels", [10, 100])
def test_key_manager_quota_holds_a_daily_rekey_of_a_20000_reader_channel(channels: int) -> None:
    """Each stream keeps at most ``max_msgs_per_sender`` messages per sender subject over
    max_age (30 days), DiscardNew: the key manager's subject too. A re-key of 20,000 readers
    is ceil(20,000 / 256) = 79 envelopes (about 14 KiB each), and ``channel_limits`` caps
    the per-sender quota to half the channel's share in 516-KiB messages: with the default
    8 GiB and 10 channels the quota is 812 messages = 10 re-keys in 30 days; with 100
    channels 81 = ONE re-key (256 channels: 31, not even one). The next re-key (the first
    removal) is refused by the broker; the key manager sets the deliveries aside until it
    is restarted (``store.refused``), yet records the epoch as made. Senders then refuse
    the channel (its readers changed, no new key): an epoch channel of 20,000 readers goes
    down after its first removal, and stays down for up to 30 days.

    Fix: give the key manager's deliveries a budget of their own. Either (a) at
    provisioning (tfshare/workflows/live.py ``StreamLimits.channel_limits`` /
    transport.stream_config) size ``max_msgs_per_subject`` of an epoch channel at least
    ``rekeys_per_max_age x ceil(readers / 256)`` (the quota is per subject; count by bytes:
    delivery envelopes are 35x smaller than the largest message), and refuse ``broker up``
    (UsageError) when the byte share cannot hold it; or (b) in the key manager
    (keymanager/service.py ``flush``): a delivery refused for "maximum messages per
    subject" is retried every turn, not only after a restart, and logged as
    ``epoch_delivery_quota`` with the figures."""
    per_rekey = -(-20_000 // 256)
    names = [f"ch{i}" for i in range(channels)]
    # An EPOCH channel of 20,000 readers (the finding is about those; a direct-only channel
    # keeps the quota that bounds a flooder to half its share).
    limits = live.StreamLimits().channel_limits(names, epoch_readers=dict.fromkeys(names, 20_000))
    quota = limits["ch0"].max_msgs_per_sender
    assert quota >= 30 * per_rekey, (
        f"{quota} messages per sender in 30 days: {quota // per_rekey} re-key(s) of 20,000 readers"
    )


# ---------------------------------------------------------------------------------------------
# LOW/MEDIUM: `keys rotate` killed between writing the statement and the key file

_CRASH_AFTER_STATEMENT = """
import os, sys
from pathlib import Path
import tfshare.workflows.keys as keys

real = keys.write_atomic

def crashing(path, data, *, secret=False, overwrite=True):
    if secret:  # the key file: the process dies here (power cut, OOM kill, SIGKILL)
        os._exit(137)
    real(path, data, secret=secret, overwrite=overwrite)

keys.write_atomic = crashing
passphrase = sys.argv[2].encode()
keys.rotate_keys(Path(sys.argv[1]), ask_passphrase=lambda: passphrase, now_ms=int(sys.argv[3]))
"""


def test_keys_rotate_killed_midway_leaves_no_statement_for_keys_the_file_lacks(
    tmp_path: Path,
) -> None:
    """``rotate_keys`` writes AGENCY.rotation first and the key file second; it unlinks the
    statement if the key file write RAISES, but a process killed between the two (power
    loss, the OOM killer, SIGKILL) leaves a valid, signed statement naming a new encryption
    key that no file holds. The agency sends it to the coordinators as told; once applied,
    every sender wraps to a key nobody has (E_WRAP at the agency for everything direct),
    and with --sign the roster's newest signing key has no secret either.

    Fix (tfshare/workflows/keys.py ``rotate_keys``): write the key file FIRST (it keeps the
    old secret through the grace, so nothing is lost if the statement never follows), then
    the statement; and let ``keys rotate --statement-only`` make the statement again from a
    key file whose newest keys are not yet in the roster (the retired secret it needs to
    sign is still in the file), for a run that died after the key file."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from tfkit import build_taskforce  # noqa: PLC0415

    from tfshare.keyfile import open_keyfile  # noqa: PLC0415
    from tfshare.rotation import decode_rotation  # noqa: PLC0415

    tf = build_taskforce()
    key_path = tmp_path / "police.key"
    write_atomic(
        key_path,
        seal_keyfile(
            tf.ids["police"], PASSPHRASE, limits=KDF_PROFILES["insecure-test"],
            rng=DeterministicRng("police key"),
        ),
        secret=True,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_AFTER_STATEMENT, str(key_path), PASSPHRASE.decode(),
         str(NOW_MS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 137, done.stderr
    statement = tmp_path / "police.rotation"
    if statement.exists():
        named = decode_rotation(statement.read_bytes()).new_enc_pk
        held = open_keyfile(key_path.read_bytes(), PASSPHRASE)
        assert named == held.enc_pk, "the statement names an encryption key no file holds"


# ---------------------------------------------------------------------------------------------
# HIGH (silent loss): the grace runs from `keys rotate`, not from the roster applying it


def test_secret_of_the_key_the_roster_still_lists_is_not_destroyed(tmp_path: Path) -> None:
    """police ran ``keys rotate`` 8 days ago (grace 7 days); the coordinators have not
    applied the statement (holidays, a lost e-mail): the roster in force still lists the OLD
    encryption key as police's, so every sender still wraps to it. At the next command (or
    the agent's daily pass) ``unlock_key`` / ``destroy_expired`` destroy that old secret
    because its grace, counted from the statement's creation, is over: from then on police
    opens nothing sent to it (every direct message: E_WRAP / not for us), and nothing tells
    it why until someone looks at the roster.

    Fix (tfshare/workflows/live.py ``Agency.load`` and ``Agency.destroy_expired_secrets``,
    tfshare/workflows/keys.py ``unlock_key``/``destroy_expired``): take a ``keep:
    Collection[bytes]`` of public keys never to destroy — the agency's ``enc_key.pk`` and
    signing keys in the roster in force — and warn (``rotation_not_applied``: "the roster
    still lists the key you rotated on DATE: send AGENCY.rotation to the coordinators")
    instead of destroying them; the agent passes ``roster.members[me]`` keys at each pass."""
    from tfkit import example_json  # noqa: PLC0415

    from tfshare.protocol import Rejection  # noqa: PLC0415
    from tfshare.replay import MemoryReplayStore  # noqa: PLC0415
    from tfshare.seal import Recipient, seal_to  # noqa: PLC0415

    now = _now()
    tf = epoch_taskforce(now_ms=now)
    root = tmp_path / "police"
    root.mkdir()
    passphrase = b"kit passphrase of police"
    key_path = root / "police.key"
    write_atomic(
        key_path,
        seal_keyfile(
            tf.ids["police"], passphrase, limits=KDF_PROFILES["insecure-test"],
            rng=DeterministicRng("police key file"),
        ),
        secret=True,
    )  # fmt: skip
    day = 24 * 3600 * 1000
    rotate_keys(key_path, ask_passphrase=lambda: passphrase, grace_ms=7 * day, now_ms=now - 8 * day)

    agency = load_agency(tf, "police", root)  # the roster: police's key as before the rotation
    listed = agency.roster.members["police"].enc_key.pk
    assert listed == tf.ids["police"].enc_pk
    alert = shipped().lookup("tf.alert/1")
    assert alert is not None
    sealed = seal_to(
        identity=tf.ids["labour"], taskforce="nl-north", channel="alerts",
        roster_seq=agency.roster.seq, recipients=[Recipient("police", listed)], schema=alert,
        body=alert.to_body(alert.from_json(example_json("tf.alert/1"))), seq=1, now_ms=now,
        rng=DeterministicRng("to police"),
    )  # fmt: skip
    receiver = Receiver(
        identity=agency.identity(), roster=agency.roster, replay=MemoryReplayStore(),
        schemas=shipped(), clock=_now, policy=ReceivePolicy(),
    )  # fmt: skip
    outcome = receiver.receive(sealed.data, None)
    agency.store.close()
    assert not isinstance(outcome, Rejection), f"{outcome.code}: {outcome.reason}"
    assert isinstance(outcome, Delivered)
