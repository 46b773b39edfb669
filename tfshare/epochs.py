"""Epoch mode (envelope mode 2): one key per channel and epoch, for audiences of any size.

Owns: the message-key derivation ``K = H(L(msgkey) || msg_id || sender_kid, key = EK)``, the
built-in key-delivery message type ``tf.epoch-key/1`` (what the key manager seals, in direct
mode, to each reader), the ``EpochKeyring`` a sender and a receiver hold, the rules that make
an epoch acceptable (held, not superseded beyond the grace period) and the sender's choice
between direct and epoch mode. PROTOCOL.md section 8.4 is the normative text.

Pure: no I/O, no clock; times are arguments. Keys never appear in a repr.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec

from tfshare.encoding import (
    MAX_UINT,
    Bytes32,
    Name,
    Uint,
    blake2b_256,
    decode_canonical,
    encode,
    label,
    u32,
)
from tfshare.envelope import Mode
from tfshare.errors import RejectCode, Rejected, TrustError, ValidationError

if TYPE_CHECKING:
    from tfshare.roster import TrustedRoster

L_MSGKEY: Final = label("tfshare/v1/msgkey")
L_BUILTIN_SCHEMA: Final = label("tfshare/v1/builtin-schema")
L_EPOCH_READERS: Final = label("tfshare/v1/epoch-readers")

EPOCH_KEY_SUBJECT: Final = "tf.epoch-key"
EPOCH_KEY_SCHEMA: Final = "tf.epoch-key/1"
# The role whose members alone may deliver epoch keys (and publish on every epoch channel).
KEY_MANAGER_ROLE: Final = "key-manager"

# A message sealed under epoch e is accepted until this long after epoch e+1 started (by the
# sender's clock, ts_ms): senders switch as soon as they hold the new key, and this covers a
# message sealed in the seconds before the new key reached its sender. After it: E_EPOCH.
EPOCH_GRACE_MS: Final = 15 * 60 * 1000
# A receiver keeps a superseded epoch key this long after its successor started, so that a
# backlog the streams still hold (the receive window, envelope.DEFAULT_MAX_AGE_MS) opens; then
# it deletes the key, and nothing sealed under it opens again from that agent's state.
EPOCH_KEY_RETENTION_MS: Final = 44 * 24 * 3600 * 1000
# Above this many active readers a channel that allows both modes is sealed in epoch mode:
# direct mode costs one X25519 and one wrap per reader per message, epoch mode none.
DIRECT_AUDIENCE_MAX: Final = 64

DeliveryReason = Literal["initial", "members", "period", "messages", "resend"]
EpochNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_UINT)]


def message_key(epoch_key: bytes, msg_id: bytes, sender_kid: bytes) -> bytes:
    """K of one epoch-mode message: a fresh key per message, so disclosing one K (to an
    auditor) opens that message only, never the epoch."""
    return blake2b_256(L_MSGKEY + msg_id + sender_kid, key=epoch_key)


# ---------------------------------------------------------------------------------------------
# The reader set an epoch was made for


def readers_digest(readers: Iterable[tuple[str, bytes]]) -> bytes:
    """The digest of a channel's reader set: ``H(L(epoch-readers) || for each (agency_id,
    enc_pk) in ascending agency_id byte order: u32(agency_id) || enc_pk)``.

    Each key delivery names the set it was made for, and a sender uses an epoch only while
    that set is still the channel's (PROTOCOL.md 8.3a): a reader removed, suspended, without
    read access, or whose key was rotated, changes it, and so does a reader added."""
    ordered = sorted((agency.encode(), bytes(pk)) for agency, pk in readers)
    digest = hashlib.blake2b(L_EPOCH_READERS, digest_size=32)
    for agency, pk in ordered:
        digest.update(u32(agency))
        digest.update(pk)
    return digest.digest()


# Per roster and channel: hashing 20,000 readers costs about a millisecond, too much for every
# message, and a verified roster never changes.
_roster_digests: Final[weakref.WeakKeyDictionary[TrustedRoster, dict[str, bytes]]] = (
    weakref.WeakKeyDictionary()
)


def channel_readers_digest(roster: TrustedRoster, channel: str) -> bytes:
    """``readers_digest`` of ``channel``'s ACTIVE readers with their CURRENT encryption keys in
    ``roster`` (the key manager's readers, ``keymanager.plan.channel_readers``); computed once
    per roster and channel. ``KeyError`` for a channel the roster does not have."""
    digests = _roster_digests.get(roster)
    if digests is None:
        digests = _roster_digests.setdefault(roster, {})
    digest = digests.get(channel)
    if digest is None:
        members = roster.members
        digest = digests[channel] = readers_digest(
            (agency, members[agency].enc_key.pk) for agency in roster.active_readers(channel)
        )
    return digest


# ---------------------------------------------------------------------------------------------
# The key delivery: a built-in message type


class EpochKeyDelivery(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """The body of a ``tf.epoch-key/1`` message: one channel's key for one epoch, and the
    digest of the reader set it was made for (``readers_digest``)."""

    channel: Name
    epoch: EpochNumber
    key: Bytes32
    starts_ms: Uint
    reason: DeliveryReason
    readers_digest: Bytes32

    def __repr__(self) -> str:
        return (
            f"EpochKeyDelivery(channel={self.channel!r}, epoch={self.epoch}, "
            f"starts_ms={self.starts_ms}, reason={self.reason!r}, key=<secret>)"
        )


_delivery_decoder: Final = msgspec.msgpack.Decoder(EpochKeyDelivery)


class _EpochKeyType:
    """``tf.epoch-key/1`` as a ``messages.MessageType``: built into every implementation (its
    fingerprint is fixed, PROTOCOL.md 8.4), never taken from the registry."""

    name: Final = EPOCH_KEY_SCHEMA
    subject: Final = EPOCH_KEY_SUBJECT
    fingerprint: Final = blake2b_256(L_BUILTIN_SCHEMA + EPOCH_KEY_SCHEMA.encode())

    def from_json(self, data: bytes) -> object:
        raise ValidationError(
            "epoch keys are made by the key manager, not written by hand",
            hint="run 'tfshare keys serve' as the task force's key manager",
        )

    def to_body(self, record: object) -> bytes:
        if not isinstance(record, EpochKeyDelivery):
            raise TypeError("a tf.epoch-key/1 body is an EpochKeyDelivery")
        return encode(record)

    def from_body(self, body: bytes) -> object:
        return decode_canonical(body, _delivery_decoder)

    def to_builtins(self, record: object) -> Any:
        # The key itself never leaves this module in a display form.
        if not isinstance(record, EpochKeyDelivery):
            raise TypeError("a tf.epoch-key/1 body is an EpochKeyDelivery")
        return {
            "channel": record.channel,
            "epoch": record.epoch,
            "starts_ms": record.starts_ms,
            "reason": record.reason,
            "readers_digest": record.readers_digest.hex(),
        }


EPOCH_KEY_TYPE: Final = _EpochKeyType()


def decode_delivery(body: bytes) -> EpochKeyDelivery:
    """Strictly decode a delivery body; raises ``DECODE_ERRORS``."""
    delivery = EPOCH_KEY_TYPE.from_body(body)
    assert isinstance(delivery, EpochKeyDelivery)
    return delivery


# ---------------------------------------------------------------------------------------------
# The keyring


@dataclass(frozen=True)
class EpochKey:
    """One held epoch key. ``readers_digest``: the reader set it was made for (the
    delivery's); b"" when unknown (a key kept by an earlier tfshare): such a key opens
    messages but is never used to seal one (``made_for_readers``)."""

    channel: str
    epoch: int
    key: bytes = field(repr=False)
    starts_ms: int
    readers_digest: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, delivery: EpochKeyDelivery) -> EpochKey:
        return cls(
            delivery.channel,
            delivery.epoch,
            delivery.key,
            delivery.starts_ms,
            delivery.readers_digest,
        )


def made_for_readers(key: EpochKey, roster: TrustedRoster) -> bool:
    """Whether ``key`` was made for its channel's current readers in ``roster`` (a sender
    seals under it only then: after a removal the removed reader still holds it)."""
    return len(key.readers_digest) == 32 and key.readers_digest == channel_readers_digest(
        roster, key.channel
    )


def _epoch_error(message: str, *, ahead: bool = False) -> Rejected:
    exc = Rejected(RejectCode.E_EPOCH, message)
    exc.epoch_ahead = ahead
    return exc


class EpochKeyring:
    """The epoch keys an agency holds, by channel and epoch.

    Readers (``get``, ``current``...) run lock-free on any thread: each change replaces a
    channel's dict instead of mutating it. Changes (``add``, ``remove``) take a lock, so two
    threads adding at once (the agent and the desk) do not lose one of the keys.
    """

    __slots__ = ("_by_channel", "_changing")

    def __init__(self, keys: Iterable[EpochKey] = ()) -> None:
        self._by_channel: dict[str, dict[int, EpochKey]] = {}
        self._changing = threading.Lock()
        for key in keys:
            self.add(key)

    def __repr__(self) -> str:
        held = ", ".join(f"{c}:{sorted(e)}" for c, e in sorted(self._by_channel.items()))
        return f"EpochKeyring({held})"

    def __len__(self) -> int:
        return sum(len(epochs) for epochs in self._by_channel.values())

    def __iter__(self) -> Any:
        for epochs in list(self._by_channel.values()):
            yield from sorted(epochs.values(), key=lambda k: k.epoch)

    def channels(self) -> list[str]:
        return sorted(self._by_channel)

    def get(self, channel: str, epoch: int) -> EpochKey | None:
        epochs = self._by_channel.get(channel)
        return None if epochs is None else epochs.get(epoch)

    def newest(self, channel: str) -> EpochKey | None:
        epochs = self._by_channel.get(channel)
        return None if not epochs else epochs[max(epochs)]

    def current(self, channel: str, now_ms: int) -> EpochKey | None:
        """The key a sender uses now: the highest epoch held that has started."""
        epochs = self._by_channel.get(channel)
        if not epochs:
            return None
        started = [e for e, k in epochs.items() if k.starts_ms <= now_ms]
        return epochs[max(started)] if started else None

    def successor_start(self, channel: str, epoch: int) -> int | None:
        """When the first held epoch after ``epoch`` started, or None if none is held."""
        epochs = self._by_channel.get(channel) or {}
        later = [e for e in epochs if e > epoch]
        return epochs[min(later)].starts_ms if later else None

    def check_delivery(self, delivery: EpochKeyDelivery) -> bool:
        """Whether ``delivery`` adds a key (True) or repeats one held (False, a resend).

        Raises ``Rejected`` E_EPOCH for an epoch older than the newest held (a replayed or
        withheld old key would roll a channel back), or for a held epoch with another key (a
        key manager that equivocates)."""
        held = self.get(delivery.channel, delivery.epoch)
        if held is not None:
            if held.key != delivery.key or held.starts_ms != delivery.starts_ms:
                raise _epoch_error(
                    f"a second, different key for epoch {delivery.epoch} of {delivery.channel!r}"
                )
            return False
        newest = self.newest(delivery.channel)
        if newest is not None and delivery.epoch < newest.epoch:
            raise _epoch_error(
                f"key for epoch {delivery.epoch} of {delivery.channel!r} is older than "
                f"epoch {newest.epoch} held"
            )
        return True

    def add(self, key: EpochKey) -> None:
        with self._changing:
            epochs = dict(self._by_channel.get(key.channel) or {})
            epochs[key.epoch] = key
            self._by_channel[key.channel] = epochs

    def remove(self, keys: Iterable[EpochKey]) -> None:
        with self._changing:
            for key in keys:
                epochs = dict(self._by_channel.get(key.channel) or {})
                epochs.pop(key.epoch, None)
                if epochs:
                    self._by_channel[key.channel] = epochs
                else:
                    self._by_channel.pop(key.channel, None)

    def expired(self, now_ms: int, retention_ms: int = EPOCH_KEY_RETENTION_MS) -> list[EpochKey]:
        """Superseded keys whose successor started more than ``retention_ms`` ago: to delete.
        The newest key of a channel is never expired here (it has no successor)."""
        gone: list[EpochKey] = []
        for channel, epochs in list(self._by_channel.items()):
            for epoch, key in epochs.items():
                start = self.successor_start(channel, epoch)
                if start is not None and now_ms > start + retention_ms:
                    gone.append(key)
        return gone

    def key_for_message(self, channel: str, epoch: int, ts_ms: int) -> bytes:
        """The epoch key that opens a message of ``channel`` sealed under ``epoch`` at
        ``ts_ms`` (receiver check 7, mode 2); raises ``Rejected`` E_EPOCH.

        ``epoch_ahead`` on the exception marks an epoch newer than any held: its key may
        still be on its way (the delivery can be behind the message in the stream)."""
        key = self.get(channel, epoch)
        if key is None:
            newest = self.newest(channel)
            if newest is None or epoch > newest.epoch:
                raise _epoch_error(f"no key for epoch {epoch} of {channel!r} yet", ahead=True)
            raise _epoch_error(
                f"the key for epoch {epoch} of {channel!r} is not held (never delivered to "
                "this agency, or deleted after its retention)"
            )
        start = self.successor_start(channel, epoch)
        if start is not None and ts_ms > start + EPOCH_GRACE_MS:
            raise _epoch_error(
                f"sealed under epoch {epoch} of {channel!r} after its successor started "
                "(and its grace period ended)"
            )
        return key.key


# ---------------------------------------------------------------------------------------------
# The sender's choice


@dataclass(frozen=True)
class ModeChoice:
    mode: Mode
    key: EpochKey | None  # the epoch key when mode is EPOCH


def choose_mode(
    *,
    channel: str,
    mode_policy: int,
    active_readers: int,
    named_recipients: bool,
    current: EpochKey | None,
    readers_changed: bool = False,
    sender: str | None = None,
    sender_reads: bool = True,
) -> ModeChoice:
    """Direct or epoch mode for one message, by the channel's policy and audience size.

    ``--to`` subsets are direct (an epoch key reaches every reader). A channel that allows
    both is sealed in epoch mode above ``DIRECT_AUDIENCE_MAX`` readers when a key is held.
    ``current``: the epoch key usable now, None if none; ``readers_changed``: a current key
    is held but was made for other readers than the roster's (``made_for_readers``), so it is
    not usable (the refusal says so). ``sender_reads``: whether the sender (``sender``) is a
    reader of the channel: epoch keys go to readers only, so a writer that does not read
    never holds one (the refusal says that, not "no key yet"). Raises ``TrustError`` when
    the policy cannot be met.
    """
    direct_ok = bool(mode_policy & Mode.DIRECT)
    epoch_ok = bool(mode_policy & Mode.EPOCH)
    if named_recipients:
        if not direct_ok:
            raise TrustError(
                f"channel {channel!r} takes epoch mode only: a message to some of its readers "
                "(--to) cannot be sealed on it",
                hint="send to the whole channel, or use a channel that allows direct mode",
            )
        return ModeChoice(Mode.DIRECT, None)
    if epoch_ok and current is not None and (not direct_ok or active_readers > DIRECT_AUDIENCE_MAX):
        return ModeChoice(Mode.EPOCH, current)
    if direct_ok and active_readers <= 256:
        return ModeChoice(Mode.DIRECT, None)
    if epoch_ok and not sender_reads:
        who = "this agency" if sender is None else repr(sender)
        raise TrustError(
            f"{who} writes channel {channel!r} but does not read it: epoch keys go to readers only",
            hint="ask the coordinators for read access to the channel (roster grant --read), "
            "or to allow direct mode on it (roster channel --modes direct,epoch)",
        )
    if epoch_ok and readers_changed:
        raise TrustError(
            f"the readers of channel {channel!r} changed: waiting for the key manager's new "
            "epoch (the epoch key held was made for the readers before the change, and a "
            "removed reader still holds it)",
            hint="try again in a minute; if it lasts, the key manager ('tfshare keys serve') "
            "is down or behind, or this agency's roster is not the key manager's: tell the "
            "coordinators. 'tfshare agent status' lists the epoch keys held",
        )
    if epoch_ok:
        raise TrustError(
            f"no epoch key for channel {channel!r} yet",
            hint="the key manager ('tfshare keys serve') delivers it; is it running? "
            "'tfshare agent status' lists the epoch keys held",
        )
    raise TrustError(
        f"channel {channel!r} has {active_readers} readers; direct mode takes at most 256",
        hint="ask the coordinators to allow epoch mode on it (roster channel --modes)",
    )


def delivery_problem(delivery: EpochKeyDelivery, channel: str) -> str | None:
    """Why a decoded delivery cannot be for the envelope it came in, or None."""
    if delivery.channel != channel:
        return f"a key for channel {delivery.channel!r} delivered on {channel!r}"
    return None
