"""Feeding a MISP instance: one event per delivered message, through PyMISP's REST client.

Owns: ``feed``, which hands each message's event to a PyMISP-like client (``add_event``);
the agency builds the client with its own MISP URL and API key (``PyMISP(url, key)``),
which tfshare never stores. Tested against PyMISP's objects, not a live MISP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from tfshare.interop.common import Received
from tfshare.interop.markings import handling_of, restrictions
from tfshare.interop.misp_export import event


class MispClient(Protocol):
    """What ``feed`` needs of ``pymisp.PyMISP``."""

    def add_event(self, event: Any, pythonify: bool = False) -> Any: ...


@dataclass(frozen=True)
class Fed:
    """One message's outcome: added (with MISP's event uuid), skipped, or refused by MISP."""

    msg_id: str
    outcome: str  # "added", "skipped", "failed"
    detail: str


def feed(
    client: MispClient, messages: Iterable[Received], *, allow_restricted: bool = False
) -> list[Fed]:
    """Add each message to MISP as an event. A no_forward / H2 message is skipped unless
    ``allow_restricted`` (then its MISP distribution is "your organisation only"); MISP's
    refusal of one event (``{"errors": ...}``) is reported and the rest go on."""
    results = []
    for message in messages:
        found = restrictions(handling_of(message.record))
        if found and not allow_restricted:
            results.append(Fed(message.msg_id, "skipped", found[0][0]))
            continue
        answer = client.add_event(event(message, allow_restricted=True), pythonify=True)
        if isinstance(answer, dict) and "errors" in answer:
            results.append(Fed(message.msg_id, "failed", str(answer["errors"])[:200]))
        else:
            results.append(Fed(message.msg_id, "added", str(getattr(answer, "uuid", ""))))
    return results
