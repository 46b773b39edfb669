"""Received messages as the desk shows them (``api.Message``), from either path: the running
agent's, or a command that opened the inbox itself.

Owns: the one conversion from a verified, decrypted message to its display form, so the CLI
and the web inbox show the same thing whichever path the message took.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import msgspec

from tfshare.desk import api

if TYPE_CHECKING:
    from tfshare.seal import Opened
    from tfshare.store import Quarantined
    from tfshare.workflows.live import InboxMessage, Unreadable


def iso(ms: int) -> str:
    """The CLI's spelling of a time (``cli.common.iso``): the same in both paths."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def message_view(opened: Opened, *, received_ms: int, warning: str | None = None) -> api.Message:
    return api.Message(
        msg_id=opened.msg_id.hex(),
        sender=opened.sender,
        fingerprint=opened.fingerprint,
        channel=opened.channel,
        schema=opened.schema,
        sent=iso(opened.ts_ms),
        received=iso(received_ms),
        warning=warning,
        body=msgspec.to_builtins(opened.record),
        env_hash=opened.env_hash.hex(),
        roster_seq=opened.roster_seq,
        sent_ms=opened.ts_ms,
        received_ms=received_ms,
    )


def read_view(read: InboxMessage | Unreadable) -> api.Message | api.Unreadable:
    from tfshare.workflows.live import Unreadable  # noqa: PLC0415 - the NATS client: direct path only

    if isinstance(read, Unreadable):
        return api.Unreadable(read.item.msg_id.hex(), read.item.sender, read.code, read.reason)
    return message_view(read.opened, received_ms=read.item.received_ms, warning=read.warning)


def quarantine_rows(quarantined: list[Quarantined]) -> list[api.QuarantineRow]:
    return [
        api.QuarantineRow(
            q.env_hash.hex(),
            str(q.code),
            q.reason,
            q.sender,
            q.subject or "",
            iso(q.received_ms),
            q.size if q.size is not None else len(q.envelope),
            len(q.envelope),
        )
        for q in quarantined
    ]
