"""Which epoch keys an agency deletes, given the roster in force and the time.

Owns: ``epoch_keys_to_delete``, the one rule the agent (``Agent.prune_epoch_keys``) and the
CLI (``Agency.load``) apply: a superseded key once its successor started
``EPOCH_KEY_RETENTION_MS`` ago (``EpochKeyring.expired``), and every key of a channel the
roster in force does not let the agency read in epoch mode (no such channel, a direct-only
channel, or the agency not among its active readers) once that roster was issued
``EPOCH_KEY_RETENTION_MS`` ago. Such a channel's newest key has no successor the agency will
ever receive, so without the second rule it would be kept for ever, and a key file and state
stolen years later would open everything sealed under it (PROTOCOL 8.7).

The roster that took the right away was issued no later than the one in force, so waiting for
the one in force errs on the side of keeping: what the agency received while it read stays
readable at least as long as a superseded epoch's messages.

Pure: no disk, no clock (the time is an argument).
"""

from __future__ import annotations

from tfshare.epochs import EPOCH_KEY_RETENTION_MS, EpochKey, EpochKeyring
from tfshare.roster import MODE_EPOCH, TrustedRoster


def reads_in_epoch_mode(roster: TrustedRoster, agency_id: str, channel: str) -> bool:
    """Whether the roster lets ``agency_id`` read ``channel`` in epoch mode: the channel
    exists, allows epoch mode, and lists the agency among its active readers."""
    found = roster.channels.get(channel)
    if found is None or not found.mode_policy & MODE_EPOCH:
        return False
    member = roster.members.get(agency_id)
    return agency_id in roster.readers[channel] and member is not None and member.status == "active"


def epoch_keys_to_delete(
    ring: EpochKeyring,
    roster: TrustedRoster,
    agency_id: str,
    now_ms: int,
    *,
    retention_ms: int = EPOCH_KEY_RETENTION_MS,
) -> list[EpochKey]:
    """The keys of ``ring`` that ``agency_id`` deletes at ``now_ms`` under ``roster`` (the
    module docstring gives the rule), each once, superseded keys first."""
    gone = ring.expired(now_ms, retention_ms)
    if now_ms <= roster.roster.issued_ms + retention_ms:
        return gone
    unread = {c for c in ring.channels() if not reads_in_epoch_mode(roster, agency_id, c)}
    listed = {(key.channel, key.epoch) for key in gone}
    gone.extend(
        key for key in ring if key.channel in unread and (key.channel, key.epoch) not in listed
    )
    return gone
