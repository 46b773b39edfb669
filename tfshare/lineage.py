"""Lineage and handling rules: which message may be derived from which, and by whom.

Owns: the relation names and their numbers on the wire (the envelope's ``refs``), reading a
message's handling (no_forward, handling code) from its decoded body, and the rules, the same
for the CLI (which refuses) and the auditor (which flags what arrives anyway):

- reshare, escalate and merge pass a message on: refused if the parent is marked no_forward,
  or carries handling code H2 and the resharer is not its originator;
- amend and retract change a message: only its originator may;
- reply answers a request (meeting its response-class deadline): it does not pass the
  parent's content on, so any member may reply.

The originator releases a message by amending it with handling that allows passing it on;
the amendment (not the original) is then what others reshare.

Pure: no I/O; the caller finds the parent (in its inbox, or the log) and any release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from tfshare.errors import ExitCode, TfshareError

RELATIONS: Final = {"reshare": 1, "escalate": 2, "amend": 3, "merge": 4, "retract": 5, "reply": 6}
RELATION_NAMES: Final = {number: name for name, number in RELATIONS.items()}
PASSES_ON: Final = frozenset({"reshare", "escalate", "merge"})
CHANGES: Final = frozenset({"amend", "retract"})


class HandlingRefused(TfshareError):
    """The handling rules forbid deriving this message (code E_NO_FORWARD, E_HANDLING_H2 or
    E_NOT_ORIGINATOR)."""

    exit_code = ExitCode.REJECTED


@dataclass(frozen=True)
class Handling:
    no_forward: bool = False
    code: str = "H1"  # the schema's default


def handling_of(record: object) -> Handling:
    """The handling block of a decoded body (defaults where absent, as the schema says)."""
    body = msgspec.to_builtins(record)
    block = body.get("handling") if isinstance(body, Mapping) else None
    if not isinstance(block, Mapping):
        return Handling()
    return Handling(no_forward=block.get("no_forward") is True, code=str(block.get("code") or "H1"))


def violation(
    relation: str, *, parent_sender: str, parent: Handling, by: str
) -> tuple[str, str] | None:
    """(code, why) if ``by`` may not derive a ``relation`` child from the parent, else None."""
    if relation in CHANGES:
        if by != parent_sender:
            return "E_NOT_ORIGINATOR", f"only {parent_sender} may {relation} its own message"
        return None
    if relation in PASSES_ON:
        if parent.no_forward:
            return "E_NO_FORWARD", "the message is marked no_forward"
        if parent.code == "H2" and by != parent_sender:
            return (
                "E_HANDLING_H2",
                f"handling code H2: only {parent_sender} may pass it on until it releases it",
            )
    return None


def check(relation: str, *, parent_sender: str, parent: Handling, by: str) -> None:
    """Raise ``HandlingRefused`` where ``violation`` finds one."""
    if relation not in RELATIONS:
        raise HandlingRefused(
            f"unknown relation {relation!r}", hint=f"use one of {', '.join(RELATIONS)}"
        )
    found = violation(relation, parent_sender=parent_sender, parent=parent, by=by)
    if found is not None:
        code, why = found
        raise HandlingRefused(
            f"cannot {relation} this message: {why}",
            hint="ask the originator to release it (an amendment whose handling allows "
            "passing it on) and reshare that",
            code=code,
        )
