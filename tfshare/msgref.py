"""Message references as people type them: the 32 hex digits of a msg_id, a unique prefix of
8 or more, or ``SENDER:MSG_ID`` naming one sender's message.

Owns: parsing such a reference and picking the one message it names among candidates, with
the refusals every command gives alike: not a message id (usage), nothing matches (input),
a prefix matching several messages (usage: more digits), one msg_id used by several senders
(usage: name the sender). Senders choose their msg_ids, so two can use the same one (a
member copying an id it has seen): tfshare never picks one of them silently.

Pure: the caller finds the candidates (an inbox, an audit log) and renders the errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from tfshare.encoding import is_name
from tfshare.errors import InputError, UsageError

MIN_PREFIX: Final = 8
MSG_ID_HEX: Final = 32
_HEX: Final = frozenset("0123456789abcdef")

T = TypeVar("T")


@dataclass(frozen=True)
class MsgRef:
    """A parsed reference: lowercase hex ``prefix`` (8 to 32 digits), ``sender`` if named."""

    prefix: str
    sender: str | None = None

    @property
    def full(self) -> bytes | None:
        """The msg_id itself when all 32 digits were given (an exact lookup), else None."""
        return bytes.fromhex(self.prefix) if len(self.prefix) == MSG_ID_HEX else None

    def matches(self, sender: str, msg_id: bytes) -> bool:
        return msg_id.hex().startswith(self.prefix) and self.sender in (None, sender)

    def __str__(self) -> str:
        return self.prefix if self.sender is None else f"{self.sender}:{self.prefix}"


def parse(text: str) -> MsgRef:
    """``MSG_ID`` or ``SENDER:MSG_ID``; MSG_ID is 8 to 32 hex digits (any case)."""
    sender, colon, digits = text.strip().rpartition(":")
    digits = digits.lower()
    if not MIN_PREFIX <= len(digits) <= MSG_ID_HEX or not set(digits) <= _HEX:
        raise UsageError(
            f"{text[:80]!r} is not a message id",
            hint="give the 32 hex digits of the msg_id ('inbox list' shows them), or at least "
            "the first 8; SENDER:MSG_ID names one sender's message",
        )
    if colon and not is_name(sender):
        raise UsageError(
            f"{sender[:40]!r} in {text[:80]!r} is not an agency id",
            hint="write SENDER:MSG_ID with the sender's agency id, e.g. police-nl:61f427ec",
        )
    return MsgRef(digits, sender if colon else None)


def pick(ref: MsgRef, candidates: Iterable[tuple[str, bytes, T]], *, where: str, hint: str) -> T:
    """The one candidate ``(sender, msg_id, item)`` that ``ref`` names (the first listed, for
    a sender that used the msg_id more than once: callers list them in their own order).

    ``where`` ends "message X is not ..." (e.g. "in the inbox"); ``hint`` says where to look."""
    found: dict[tuple[str, bytes], T] = {}
    for sender, msg_id, item in candidates:
        if ref.matches(sender, msg_id):
            found.setdefault((sender, msg_id), item)
    if not found:
        raise InputError(f"message {ref} is not {where}", hint=hint)
    ids = {msg_id for _, msg_id in found}
    if len(ids) > 1:
        raise UsageError(
            f"{ref} matches {len(ids)} messages", hint="give more digits of the msg_id"
        )
    if len(found) > 1:
        senders = ", ".join(sorted(sender for sender, _ in found))
        raise UsageError(
            f"message id {ref.prefix} was used by several senders ({senders})",
            hint="name the one you mean as SENDER:MSG_ID; a copied id may be an attempt to "
            "mislead, so tell the coordinators",
        )
    return next(iter(found.values()))
