"""The sans-I/O receive pipeline: bytes (+ subject) in, one outcome out.

Owns: ``Receiver``, which runs ``open_envelope`` and turns its result into exactly one of
``Delivered``, ``Duplicate`` or ``Rejection``; records delivered envelopes in the replay
store (only those); and notes sequence anomalies (gaps and reordering are delivered, not
refused: no order is assumed, the anomaly is reported for the log).

``receive`` is ``open`` then ``settle``. They are separate so that an agent can run the
costly, stateless part (``open``: signature, key agreement, decryption, schema) for a batch on
several cores, and the part that touches the replay store (``settle``) in arrival order on
one thread, with exactly the outcomes ``receive`` gives.

Like h11, it never reads a socket or a file and never logs: the agent and the CLI move bytes
in, persist, log and acknowledge.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from tfshare.epochs import EPOCH_KEY_SCHEMA, EpochKey, EpochKeyDelivery, EpochKeyring
from tfshare.errors import RejectCode, Rejected, RosterRejected
from tfshare.keys import Identity
from tfshare.messages import SchemaBook
from tfshare.replay import ReplayEntry, ReplayStore
from tfshare.roster import TrustedRoster
from tfshare.seal import Duplicate, Opened, ReceivePolicy, envelope_hash, open_envelope

RECEIPTS_CHANNEL = "receipts"
"""The channel receipts travel on (audit.md): every member writes, coordinators read. A task
force without it sends no receipts."""
RECEIPT_SCHEMA = "tf.receipt/1"

Clock = Callable[[], int]
"""Milliseconds since the Unix epoch (``time.time_ns() // 1_000_000`` in production)."""

SeqNote = Literal["gap", "reorder"] | None


class Delivered(msgspec.Struct, frozen=True):
    """A delivered message. Structs, not frozen dataclasses, for what is built once per
    message (this, ``Opening``): a frozen dataclass's __init__ costs several times more."""

    message: Opened
    seq_note: SeqNote
    roster_expired: bool
    # A key delivery that added a key to ``Receiver.epochs``: the caller keeps it (sealed
    # at rest) with the replay record, and never shows it in an inbox.
    new_epoch_key: EpochKey | None = None


@dataclass(frozen=True)
class Rejection:
    """Why an envelope was refused; safe to log (no plaintext). ``sender`` and ``msg_id`` are
    as claimed by the header, when it decoded; ``verified`` says whether the sender's
    signature verified (a later check failed), so that they are more than a claim. Anyone
    with NATS credentials can publish unsigned junk: only a verified rejection is worth a
    signed receipt or a log line of its own."""

    code: RejectCode
    reason: str
    env_hash: bytes
    sender: str | None = None
    msg_id: bytes | None = None
    # E_SCHEMA: the schema named inside the plaintext (for fetching it; not logged).
    schema: str | None = field(default=None, repr=False)
    verified: bool = False
    # E_EPOCH: the epoch is newer than any key held; its delivery may be behind it.
    epoch_ahead: bool = False


Outcome = Delivered | Duplicate | Rejection


class Receiver:
    """One agency's receive pipeline over a verified roster and a replay store."""

    def __init__(
        self,
        *,
        identity: Identity,
        roster: TrustedRoster,
        replay: ReplayStore,
        schemas: SchemaBook,
        clock: Clock,
        policy: ReceivePolicy,
        epochs: EpochKeyring | None = None,
    ) -> None:
        self.identity = identity
        # The epoch keys held (mode 2). ``settle`` adds each key delivered; the caller
        # persists it (``Delivered.new_epoch_key``).
        self.epochs = epochs if epochs is not None else EpochKeyring()
        self.roster = roster
        self.replay = replay
        self.schemas = schemas
        self.clock = clock
        self.policy = policy
        # The highest seq delivered per (sender, channel), as the replay store keeps it: read
        # from the store once per pair, then kept here, so a delivery costs no extra query.
        # It only feeds the gap/reorder note of the log, never a verdict.
        self._last_seqs: dict[tuple[str, str], int | None] = {}
        # A store that keeps an inbox (the agent's) keeps each message's payload key with its
        # row, sealed under the state key: the row stays readable after the epoch key or the
        # retired secret that gave the key is gone (PROTOCOL.md 8.7).
        self._record_keyed: Callable[[ReplayEntry, bytes, bytes], bytes | None] | None = getattr(
            replay, "record_keyed", None
        )

    def receive(self, data: bytes, subject: str | None = None) -> Outcome:
        """Check one envelope and settle it against the replay store."""
        return self.settle(data, self.open(data, subject, self.clock()))

    def open(self, data: bytes, subject: str | None, now_ms: int) -> Opening:
        """Every check except the replay store's, without touching it.

        Thread-safe and free of shared state, so an agent can run it for many envelopes at
        once (libsodium releases the GIL). The replay check is only deferred, not skipped:
        ``settle`` must follow, in arrival order, on one thread."""
        deferred = _DeferredReplay()
        try:
            self.roster.check_receivable(now_ms)
            result = open_envelope(
                data,
                identity=self.identity,
                roster=self.roster,
                replay=deferred,
                schemas=self.schemas,
                now_ms=now_ms,
                subject=subject,
                policy=self.policy,
                epochs=self.epochs,
            )
        except RosterRejected as exc:
            return Opening(
                Rejection(exc.reject_code, exc.message, envelope_hash(data)), None, now_ms
            )
        except Rejected as exc:
            rejection = Rejection(
                exc.reject_code,
                exc.message,
                envelope_hash(data),
                exc.sender,
                exc.msg_id,
                exc.schema,
                # The replay question is asked right after the signature verified (check 6).
                verified=deferred.key is not None,
                epoch_ahead=exc.epoch_ahead,
            )
            return Opening(rejection, deferred.key, now_ms)
        except Exception as exc:
            # Last resort: every input ends in one outcome with a code. Each primitive call
            # is guarded (tfshare.primitives), so this is a bug or an input no check foresaw;
            # the envelope is refused, never delivered. Only the exception's type is kept.
            # ``fault`` tells a caller that can try again (the agent) that this is no verdict
            # on the envelope: a MemoryError says nothing about the input.
            internal = Rejection(
                RejectCode.E_INTERNAL,
                f"the receiver could not check this envelope ({type(exc).__name__})",
                envelope_hash(data),
                verified=deferred.key is not None,
            )
            return Opening(internal, deferred.key, now_ms, fault=type(exc).__name__)
        # open_envelope returns Duplicate only when the store says so; ours never does.
        assert isinstance(result, Opened)
        return Opening(result, deferred.key, now_ms)

    def settle(self, data: bytes, opening: Opening) -> Outcome:
        """The replay check ``open`` deferred, then the record: the outcome is exactly what
        a single-threaded ``receive`` would have given. Not thread-safe (one writer)."""
        result = opening.result
        if isinstance(result, Rejection):
            if opening.replay_key is not None:
                # The signature verified and a later check failed; a replay of an envelope
                # we already hold is still a DUPLICATE, a different one still equivocation.
                seen = self.replay.lookup(*opening.replay_key)
                if seen is not None and result.sender is not None and result.msg_id is not None:
                    return self._seen(seen, result.env_hash, result.sender, result.msg_id)
            return result
        new_key: EpochKey | None = None
        if result.schema == EPOCH_KEY_SCHEMA:
            # A key delivery is checked against the keys held now, in arrival order: an
            # older epoch, or a second key for one held, is refused before it is recorded.
            assert isinstance(result.record, EpochKeyDelivery)
            try:
                if self.epochs.check_delivery(result.record):
                    new_key = EpochKey.of(result.record)
            except Rejected as exc:
                seen = self.replay.lookup(result.sender_kid, result.msg_id)
                if seen is not None:  # the same delivery again: a duplicate, not an attack
                    return self._seen(seen, result.env_hash, result.sender, result.msg_id)
                return Rejection(
                    exc.reject_code,
                    exc.message,
                    result.env_hash,
                    result.sender,
                    result.msg_id,
                    verified=True,
                )
        pair = (result.sender, result.channel)
        if pair in self._last_seqs:
            last = self._last_seqs[pair]
        else:
            last = self._last_seqs[pair] = self.replay.last_seq(*pair)
        note: SeqNote = None
        if last is not None and result.seq != last + 1:
            note = "gap" if result.seq > last + 1 else "reorder"
        entry = ReplayEntry(
            sender_kid=result.sender_kid,
            msg_id=result.msg_id,
            env_hash=result.env_hash,
            ts_ms=result.ts_ms,
            sender=result.sender,
            channel=result.channel,
            seq=result.seq,
            schema=result.schema,
            envelope=data,
        )
        if self._record_keyed is not None:
            key = result.payload_key.reveal() if result.payload_key is not None else b""
            existing = self._record_keyed(entry, key, self.identity.state_key)
        else:
            existing = self.replay.record(entry)
        if existing is not None:
            # Delivered before (or by another process between our checks and now).
            return self._seen(existing, result.env_hash, result.sender, result.msg_id)
        self._last_seqs[pair] = result.seq if last is None else max(last, result.seq)
        if new_key is not None:
            self.epochs.add(new_key)
        return Delivered(result, note, self.roster.expired(opening.now_ms), new_key)

    @staticmethod
    def _seen(stored: bytes, env_hash: bytes, sender: str, msg_id: bytes) -> Outcome:
        if hmac.compare_digest(stored, env_hash):
            return Duplicate(msg_id, env_hash, sender)
        return Rejection(
            RejectCode.E_EQUIVOCATION,
            "same msg_id, different content",
            env_hash,
            sender,
            msg_id,
            verified=True,  # only asked once the signature verified
        )


class Opening(msgspec.Struct, frozen=True):
    """What ``Receiver.open`` found: the result of every check but the replay store's, and
    the (sender_kid, msg_id) still to look up there -- set once the signature verified."""

    result: Opened | Rejection
    replay_key: tuple[bytes, bytes] | None
    now_ms: int
    # Set when the checks could not finish (the exception's type): ``result`` is then an
    # E_INTERNAL rejection, final for a one-shot caller, worth another try for an agent.
    fault: str | None = None


class _DeferredReplay:
    """A replay store that answers "not seen" and remembers that it was asked: the question
    is put again to the real store in ``Receiver.settle``. Never shared between threads."""

    def __init__(self) -> None:
        self.key: tuple[bytes, bytes] | None = None

    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        self.key = (sender_kid, msg_id)
        return None

    def last_seq(self, sender: str, channel: str) -> int | None:
        raise AssertionError("open_envelope does not ask for sequence numbers")

    def record(self, entry: ReplayEntry) -> bytes | None:
        raise AssertionError("open_envelope records nothing")


def log_event(outcome: Outcome) -> tuple[str, dict[str, object]]:
    """The log event for an outcome: its name and fields. Ids, codes and hashes only, never
    plaintext; the agent and the CLI pass these to structlog unchanged."""
    if isinstance(outcome, Rejection):
        fields: dict[str, object] = {
            "code": outcome.code.value,
            "reason": outcome.reason,
            "env_hash": outcome.env_hash.hex(),
        }
        if outcome.sender is not None:
            fields["sender"] = outcome.sender
        if outcome.msg_id is not None:
            fields["msg_id"] = outcome.msg_id.hex()
        return "envelope_rejected", fields
    if isinstance(outcome, Duplicate):
        return "envelope_duplicate", {
            "code": "DUPLICATE",
            "sender": outcome.sender,
            "msg_id": outcome.msg_id.hex(),
            "env_hash": outcome.env_hash.hex(),
        }
    message = outcome.message
    fields = {
        "sender": message.sender,
        "channel": message.channel,
        "schema": message.schema,
        "seq": message.seq,
        "msg_id": message.msg_id.hex(),
        "env_hash": message.env_hash.hex(),
    }
    if outcome.seq_note:
        fields["seq_anomaly"] = outcome.seq_note
    return "envelope_delivered", fields
