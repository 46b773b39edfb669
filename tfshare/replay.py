"""The replay store interface and its in-memory implementation.

Owns: ``ReplayStore``, the one-method-per-question contract between the receive pipeline and
whatever persists what was delivered (``tfshare.store.SqliteReplayStore`` on disk), and
``MemoryReplayStore`` for tests and one-shot tools.

Entries are keyed by (sender_kid, msg_id) and remember the envelope hash, so an exact replay
is a DUPLICATE and a different envelope under the same id is equivocation.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class ReplayEntry(msgspec.Struct, frozen=True):
    """One delivered envelope, as the replay store records it. A msgspec Struct rather than a
    frozen dataclass: one is built per delivered message, and a frozen dataclass's
    field-by-field __init__ cost ten times as much on that path."""

    sender_kid: bytes
    msg_id: bytes
    env_hash: bytes
    ts_ms: int
    sender: str
    channel: str
    seq: int
    # For stores that keep an inbox (the agent): the schema and the envelope as received,
    # still encrypted, recorded in the same transaction as the replay entry.
    schema: str = ""
    envelope: bytes = b""


class ReplayStore(Protocol):
    """What the receive pipeline asks of persistent replay state."""

    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        """The env_hash recorded for this (sender_kid, msg_id), or None."""
        ...

    def last_seq(self, sender: str, channel: str) -> int | None:
        """The highest seq delivered from sender on channel, or None."""
        ...

    def record(self, entry: ReplayEntry) -> bytes | None:
        """Remember a delivered envelope (and raise the sender's seq high-water mark).

        Atomic check-and-insert: returns None if the entry is new, or the env_hash already
        stored for (sender_kid, msg_id) if another process recorded it first (then nothing
        changes and the caller reports DUPLICATE or E_EQUIVOCATION).
        """
        ...


class MemoryReplayStore:
    """A ReplayStore in a dict: for tests, benchmarks and short-lived tools."""

    def __init__(self) -> None:
        self.entries: dict[tuple[bytes, bytes], ReplayEntry] = {}
        self.seqs: dict[tuple[str, str], int] = {}

    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        entry = self.entries.get((sender_kid, msg_id))
        return entry.env_hash if entry else None

    def last_seq(self, sender: str, channel: str) -> int | None:
        return self.seqs.get((sender, channel))

    def record(self, entry: ReplayEntry) -> bytes | None:
        existing = self.entries.get((entry.sender_kid, entry.msg_id))
        if existing is not None:
            return existing.env_hash
        self.entries[(entry.sender_kid, entry.msg_id)] = entry
        key = (entry.sender, entry.channel)
        self.seqs[key] = max(entry.seq, self.seqs.get(key, entry.seq))
        return None
