"""Which channels need a new epoch, and the envelopes that deliver one (pure).

Owns: the rules of PROTOCOL.md 8.6 "New epochs" as a function of the roster in force, the
epochs made so far, the clock and the channels' stream positions (``plan``); a channel's
current readers as recipients (``channel_readers``); the key deliveries of one epoch, in
direct-mode envelopes of at most 256 readers each (``seal_deliveries``), each naming the
reader set the epoch was made for (``epochs.readers_digest``: senders use an epoch only while
it is their roster's reader set of the channel).

A reader is an active reader of the channel *with its current encryption key*: an epoch is
delivered to keys, so a reader whose key was rotated gets a new epoch too (a stolen old key
must not open what is sealed after the rotation).

Pure: no I/O, no clock, no randomness of its own; times and ``rng`` are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from tfshare.envelope import MAX_RECIPIENTS, Mode
from tfshare.epochs import (
    EPOCH_KEY_TYPE,
    KEY_MANAGER_ROLE,
    DeliveryReason,
    EpochKeyDelivery,
    readers_digest,
)
from tfshare.keys import Identity, Random
from tfshare.roster import TrustedRoster
from tfshare.seal import Recipient, Sealed, seal_to

# One delivery envelope carries the key to this many readers at most (direct mode's limit).
DELIVERY_BATCH: Final = MAX_RECIPIENTS
# PROTOCOL.md 8.6 defaults, for a roster without ``epoch_policy`` (before issue 15's roster).
DEFAULT_PERIOD_MS: Final = 7 * 24 * 3600 * 1000
DEFAULT_MAX_MESSAGES: Final = 100_000

ReaderSet = frozenset[tuple[str, bytes]]  # (agency, kid_enc of the key the epoch went to)


@dataclass(frozen=True)
class EpochState:
    """What the key manager knows of a channel's current (newest) epoch."""

    channel: str
    epoch: int
    starts_ms: int
    readers: ReaderSet
    # The channel stream's last sequence when the epoch began (after its own deliveries);
    # None while the stream could not be looked at.
    start_seq: int | None
    # The digest its deliveries name (``epochs.readers_digest`` of ``readers``' keys); None for
    # an epoch made by a tfshare whose deliveries named none: agents never seal under such an
    # epoch, so it is replaced at once (reason "members").
    readers_digest: bytes | None


@dataclass(frozen=True)
class Rekey:
    """A new epoch to make: for ``channel``, number ``epoch``, because of ``reason``, to
    ``readers``."""

    channel: str
    epoch: int
    reason: DeliveryReason
    readers: tuple[Recipient, ...]


def epoch_channels(roster: TrustedRoster) -> list[str]:
    """The channels whose mode policy allows epoch mode (bit 2)."""
    return sorted(c.name for c in roster.roster.channels if c.mode_policy & Mode.EPOCH)


def is_key_manager(roster: TrustedRoster, agency: str) -> bool:
    """An active member holding the role ``key-manager``."""
    member = roster.members.get(agency)
    return member is not None and member.status == "active" and KEY_MANAGER_ROLE in member.roles


def channel_readers(roster: TrustedRoster, channel: str) -> list[Recipient]:
    """The channel's active readers, each with its current encryption key, by agency id."""
    return [
        Recipient(agency, roster.members[agency].enc_key.pk, roster.enc_kid_of[agency])
        for agency in sorted(roster.active_readers(channel))
    ]


def reader_set(readers: Sequence[Recipient]) -> ReaderSet:
    return frozenset((r.agency_id, r.kid) for r in readers)


def digest_of(readers: Sequence[Recipient]) -> bytes:
    """The ``readers_digest`` the deliveries of an epoch made for ``readers`` name: for
    ``channel_readers(roster, channel)`` it is ``epochs.channel_readers_digest(roster,
    channel)``, what a sender holding that roster compares it with."""
    return readers_digest((r.agency_id, r.enc_pk) for r in readers)


def reader_sets(roster: TrustedRoster) -> dict[str, ReaderSet]:
    """Each epoch-mode channel's active readers with their keys (what ``plan`` compares):
    computed once per roster, not at every look."""
    kids = roster.enc_kid_of
    return {
        channel: frozenset((a, kids[a]) for a in roster.active_readers(channel))
        for channel in epoch_channels(roster)
    }


def epoch_policy(roster: TrustedRoster, channel: str) -> tuple[int, int]:
    """(period_ms, max_messages) of ``channel``: the roster's, else the defaults."""
    policy = getattr(roster, "epoch_policy", None)
    if policy is None:
        return DEFAULT_PERIOD_MS, DEFAULT_MAX_MESSAGES
    period_ms, max_messages = policy(channel)
    return int(period_ms), int(max_messages)


def why_new_epoch(
    state: EpochState | None,
    readers: ReaderSet,
    *,
    period_ms: int,
    max_messages: int,
    now_ms: int,
    last_seq: int | None,
) -> DeliveryReason | None:
    """Why the channel needs a new epoch now, or None. Membership first: it is the reason
    that must never be missed (a removed reader), whatever else is also due."""
    if state is None:
        return "initial"
    if readers != state.readers or state.readers_digest is None:
        return "members"
    if now_ms >= state.starts_ms + period_ms:
        return "period"
    if (
        last_seq is not None
        and state.start_seq is not None
        and last_seq - state.start_seq >= max_messages
    ):
        return "messages"
    return None


def plan(
    roster: TrustedRoster,
    current: Mapping[str, EpochState],
    *,
    now_ms: int,
    last_seqs: Mapping[str, int] | None = None,
    readers: Mapping[str, ReaderSet] | None = None,
) -> list[Rekey]:
    """The new epochs due under ``roster``: one per epoch-mode channel that has none yet,
    whose active readers (or their keys) changed since its epoch was delivered, whose
    period elapsed, or whose stream took ``max_messages`` since the epoch began
    (``last_seqs``: each channel's stream's last sequence, where known). ``readers``: the
    roster's ``reader_sets``, if the caller keeps them.

    A channel without active readers gets nothing: there is no one to deliver to (and its
    next reader triggers a new epoch)."""
    seqs = last_seqs or {}
    sets = reader_sets(roster) if readers is None else readers
    due: list[Rekey] = []
    for channel in epoch_channels(roster):
        now_reading = sets.get(channel, frozenset())
        if not now_reading:
            continue
        state = current.get(channel)
        period_ms, max_messages = epoch_policy(roster, channel)
        reason = why_new_epoch(
            state,
            now_reading,
            period_ms=period_ms,
            max_messages=max_messages,
            now_ms=now_ms,
            last_seq=seqs.get(channel),
        )
        if reason is not None:
            epoch = 1 if state is None else state.epoch + 1
            due.append(Rekey(channel, epoch, reason, tuple(channel_readers(roster, channel))))
    return due


def batches(readers: Sequence[Recipient], size: int = DELIVERY_BATCH) -> list[list[Recipient]]:
    """``readers`` in groups of at most ``size`` (one delivery envelope each)."""
    if size < 1:
        raise ValueError("a batch holds at least one reader")
    return [list(readers[i : i + size]) for i in range(0, len(readers), size)]


def seal_deliveries(
    *,
    identity: Identity,
    roster: TrustedRoster,
    channel: str,
    epoch: int,
    key: bytes,
    starts_ms: int,
    reason: DeliveryReason,
    readers: Sequence[Recipient],
    first_seq: int,
    now_ms: int,
    rng: Random,
    made_for: bytes | None = None,
) -> list[Sealed]:
    """The ``tf.epoch-key/1`` envelopes that deliver ``key`` to ``readers``: direct mode,
    at most 256 readers each (one X25519 and one wrap per reader), sequence numbers from
    ``first_seq`` on. Each names the reader set the epoch was made for: ``made_for`` (a
    resend to some of them passes the epoch's digest), by default ``readers``' own."""
    digest = digest_of(readers) if made_for is None else made_for
    body = EPOCH_KEY_TYPE.to_body(EpochKeyDelivery(channel, epoch, key, starts_ms, reason, digest))
    return [
        seal_to(
            identity=identity,
            taskforce=roster.taskforce,
            channel=channel,
            roster_seq=roster.seq,
            recipients=batch,
            schema=EPOCH_KEY_TYPE,
            body=body,
            seq=first_seq + i,
            now_ms=now_ms,
            rng=rng,
        )
        for i, batch in enumerate(batches(readers))
    ]
