"""Test kit for the agent's side of epoch mode (issue 15): a task force with epoch channels and
a key manager, key deliveries sealed as the key manager seals them, agencies loaded as the CLI
loads them.

Channels of ``epoch_taskforce``:
- "alerts": mode policy 3 (direct or epoch: epoch above 64 readers); coord, police, ngo,
  labour (and the ``extra_readers``) read; police and labour write.
- "bulletin": mode policy 2 (epoch only); coord, police, ngo, labour read; police writes.
"keymgr" holds the role key-manager and writes no channel: the broker lets a key manager
publish on its sender subject of every epoch channel, and receivers take key deliveries, and
nothing else, from it (seal.py checks 4 and 9b).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import msgspec
from tfkit import TaskForce, identity

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.epochs import EPOCH_KEY_TYPE, EpochKey, EpochKeyDelivery, readers_digest
from tfshare.keyfile import KDF_PROFILES, seal_keyfile
from tfshare.registry.book import shipped
from tfshare.seal import Recipient, Sealed, seal_to, seal_to_epoch
from tfshare.workflows.exchange import Credentials
from tfshare.workflows.keys import InsecureKeyCost
from tfshare.workflows.live import Agency

TASKFORCE = "nl-north"
KEY_MANAGER = "keymgr"
READERS = ("coord", "police", "ngo", "labour")


def epoch_taskforce(*, now_ms: int, extra_readers: int = 0) -> TaskForce:
    """The kit's epoch task force (see the module docstring), issued an hour before ``now_ms``.
    ``extra_readers`` more members ("reader-1"...) read "alerts" (a large audience)."""
    extra = [f"reader-{i}" for i in range(1, extra_readers + 1)]
    names = [*READERS, KEY_MANAGER, *extra, "outsider"]
    ids = {name: identity(name) for name in names}
    t = now_ms - 3_600_000
    signed = R.new_roster(
        TASKFORCE, [ids["coord"].card_body()], threshold=1, now_ms=t, valid_days=90
    )
    for name in ("police", "ngo", "labour", *extra):
        signed = R.add_member(signed, ids[name].card_body(), role="member", now_ms=t)
    signed = R.add_member(signed, ids[KEY_MANAGER].card_body(), role="key-manager", now_ms=t)
    _, roster = R.decode_signed_roster(encode(signed))
    channels = [
        R.Channel("alerts", [*READERS, *extra], ["police", "labour"], 1, 3, []),
        R.Channel("bulletin", list(READERS), ["police"], 1, 2, []),
    ]
    signed = R.edit(signed, msgspec.structs.replace(roster, channels=channels), now_ms=t)
    signed = R.sign(signed, ids["coord"])
    _, roster = R.decode_signed_roster(encode(signed))
    return TaskForce(ids=ids, signed=signed, anchor=R.anchor_of(roster), now_ms=now_ms)


def made_for(channel: str, *, extra_readers: int = 0) -> bytes:
    """The reader-set digest of ``channel`` in ``epoch_taskforce(extra_readers=...)`` (the
    kit's identities are fixed: the same whatever ``now_ms``)."""
    extra = [f"reader-{i}" for i in range(1, extra_readers + 1)] if channel == "alerts" else []
    return readers_digest((name, identity(name).enc_pk) for name in (*READERS, *extra))


def new_key(channel: str, epoch: int, *, starts_ms: int, extra_readers: int = 0) -> EpochKey:
    """A new random key for ``channel``, made (as the key manager makes it) for the channel's
    readers in ``epoch_taskforce(extra_readers=...)``."""
    return EpochKey(
        channel,
        epoch,
        os.urandom(32),
        starts_ms,
        made_for(channel, extra_readers=extra_readers),
    )


def key_delivery(
    tf: TaskForce,
    key: EpochKey,
    *,
    to: Sequence[str],
    seq: int,
    now_ms: int,
    reason: str = "initial",
    sender: str = KEY_MANAGER,
) -> Sealed:
    """A ``tf.epoch-key/1`` message carrying ``key`` to the readers ``to``, sealed in direct
    mode by the key manager (as ``tfshare keys serve`` seals it)."""
    trusted = tf.trusted()
    delivery = EpochKeyDelivery(
        key.channel,
        key.epoch,
        key.key,
        key.starts_ms,
        reason,  # type: ignore[arg-type]
        key.readers_digest,
    )
    return seal_to(
        identity=tf.ids[sender],
        taskforce=trusted.taskforce,
        channel=key.channel,
        roster_seq=trusted.seq,
        recipients=[Recipient(name, trusted.members[name].enc_key.pk) for name in to],
        schema=EPOCH_KEY_TYPE,
        body=EPOCH_KEY_TYPE.to_body(delivery),
        seq=seq,
        now_ms=now_ms,
        rng=os.urandom,
    )


def epoch_message(
    tf: TaskForce,
    sender: str,
    key: EpochKey,
    *,
    seq: int,
    now_ms: int,
    schema: str = "tf.alert/1",
) -> Sealed:
    """An alert sealed by ``sender`` on ``key``'s channel in epoch mode under ``key``, as a
    sender holding that key seals for a large audience (``seal.seal_to_epoch``)."""
    from tfkit import example_json  # noqa: PLC0415

    message_type = shipped().lookup(schema)
    assert message_type is not None
    trusted = tf.trusted()
    return seal_to_epoch(
        identity=tf.ids[sender],
        taskforce=trusted.taskforce,
        channel=key.channel,
        roster_seq=trusted.seq,
        epoch_key=key,
        schema=message_type,
        body=message_type.to_body(message_type.from_json(example_json(schema))),
        seq=seq,
        now_ms=now_ms,
        rng=os.urandom,
    )


def load_agency(tf: TaskForce, name: str, root: Path) -> Agency:
    """The agency as the CLI loads it (``Agency.load``): key file unlocked with its
    passphrase, roster verified against the anchor, state database opened."""
    root.mkdir(parents=True, exist_ok=True)
    passphrase = b"kit passphrase of " + name.encode()
    key_path = root / f"{name}.key"
    if not key_path.exists():
        key_path.write_bytes(
            seal_keyfile(
                tf.ids[name], passphrase, limits=KDF_PROFILES["insecure-test"], rng=os.urandom
            )
        )
    (root / "tf.roster").write_bytes(tf.roster_bytes)
    (root / "tf.anchor").write_bytes(encode(tf.anchor))
    with warnings.catch_warnings():
        # The kit's key files use the insecure test cost on purpose.
        warnings.simplefilter("ignore", InsecureKeyCost)
        return Agency.load(
            Credentials(key_path, passphrase),
            roster_path=root / "tf.roster",
            anchor_path=root / "tf.anchor",
            state_dir=root / "state",
            registry_dir=root / "registry",
        )


def state_files(state_db: Path) -> bytes:
    """Every byte of a SQLite database on disk: the file and its write-ahead log."""
    data = b""
    for suffix in ("", "-wal", "-journal"):
        path = Path(f"{state_db}{suffix}")
        if path.exists():
            data += path.read_bytes()
    return data
