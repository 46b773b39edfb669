"""A received message in the form every exporter takes, and the errors of this package.

Owns: ``Received`` (the builtins form of an opened message: sender, fingerprint, msg_id,
env_hash, ts, channel, schema, record, refs), its constructors from ``seal.Opened`` and from
the desk's ``api.Message``, the deterministic STIX ids, and the kind names of the schemas.

Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tfshare.errors import ExitCode, TfshareError

# The handling forbids it: exporting a no_forward / H2 message without --allow-restricted
# (E_NO_FORWARD, E_HANDLING_H2), importing under a weaker marking (E_WEAKENS_HANDLING). The
# lineage rules' own refusal (exit 3): to the CLI, passing a message on is passing it on.
from tfshare.lineage import HandlingRefused

if TYPE_CHECKING:
    from tfshare.desk.api import Message
    from tfshare.seal import Opened

# Publish's kinds and the schema subjects they name (workflows.live.KINDS, not imported:
# that module carries the NATS client).
KINDS: Final = {"alert": "tf.alert", "red-flag": "tf.red_flag", "tip": "tf.tip_summary"}
SUBJECT_KINDS: Final = {subject: kind for kind, subject in KINDS.items()}

# The namespace of every id this package derives (uuid5): the same message always gives the
# same STIX ids and MISP uuids, so a platform that imports it twice merges instead of
# duplicating, and a child's relationship can name its parent's report without having it.
NAMESPACE: Final = uuid.UUID("6d1c3a0e-5b7f-4f0a-9a51-3f2b2b9c1e16")


class InteropError(TfshareError):
    """A file to import cannot be used (not STIX, not MISP, invalid, unknown templates)."""

    exit_code = ExitCode.VALIDATION


@dataclass(frozen=True)
class LineageRef:
    """A parent named in the envelope's refs: relation name, msg_id and env_hash (hex)."""

    relation: str
    msg_id: str
    env_hash: str


@dataclass(frozen=True)
class Received:
    """A verified, decrypted message in builtins form (JSON types only)."""

    sender: str
    fingerprint: str
    msg_id: str  # 32 hex digits
    env_hash: str  # 64 hex digits: SHA-256 of the signed envelope
    ts_ms: int  # the sender's timestamp
    channel: str
    schema: str  # tf.alert/1
    record: Mapping[str, Any]
    refs: tuple[LineageRef, ...] = ()
    warning: str | None = None
    refs_known: bool = field(default=True)  # False when read through the agent (no refs)

    def __repr__(self) -> str:
        # Never the record: a repr can end up in a log or a traceback.
        return f"Received(msg_id={self.msg_id}, sender={self.sender!r}, schema={self.schema!r})"

    @property
    def subject(self) -> str:
        return self.schema.split("/", 1)[0]

    @property
    def kind(self) -> str | None:
        """alert, red-flag or tip (None for another schema)."""
        return SUBJECT_KINDS.get(self.subject)

    @property
    def sent(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ts_ms / 1000, tz=dt.UTC)


def from_opened(opened: Opened, *, warning: str | None = None) -> Received:
    """The builtins form of a message opened from the inbox (``seal.Opened``)."""
    import msgspec  # noqa: PLC0415

    from tfshare.lineage import RELATION_NAMES  # noqa: PLC0415

    record = msgspec.to_builtins(opened.record)
    return Received(
        sender=opened.sender,
        fingerprint=opened.fingerprint,
        msg_id=opened.msg_id.hex(),
        env_hash=opened.env_hash.hex(),
        ts_ms=opened.ts_ms,
        channel=opened.channel,
        schema=opened.schema,
        record=record if isinstance(record, dict) else {},
        refs=tuple(
            LineageRef(
                RELATION_NAMES.get(r.relation, str(r.relation)), r.msg_id.hex(), r.env_hash.hex()
            )
            for r in opened.refs
        ),
        warning=warning,
    )


def from_view(view: Message) -> Received:
    """The builtins form of a message the running agent showed (``api.Message``): it does not
    carry the envelope's refs, so lineage cannot be exported from it (``refs_known``). Every
    id derives from the envelope hash: a view without one (an agent older than this command)
    is refused rather than given ids another message could share."""
    if not re.fullmatch(r"[0-9a-f]{64}", view.env_hash):
        raise InteropError(
            f"the agent gave message {view.msg_id} without its envelope hash",
            hint="restart the agent with this version of tfshare",
        )
    body = view.body if isinstance(view.body, dict) else {}
    return Received(
        sender=view.sender,
        fingerprint=view.fingerprint,
        msg_id=view.msg_id,
        env_hash=view.env_hash,
        ts_ms=view.sent_ms,
        channel=view.channel,
        schema=view.schema,
        record=body,
        warning=view.warning,
        refs_known=False,
    )


def derived_id(kind: str, *parts: str) -> str:
    """``kind--<uuid5>`` from ``parts``: stable across exports."""
    return f"{kind}--{uuid.uuid5(NAMESPACE, '|'.join((kind, *parts)))}"


def report_id(env_hash: str) -> str:
    """The report of the message whose envelope hash is ``env_hash`` (a child's relationship
    names its parent by it)."""
    return derived_id("report", env_hash)


def stix_time(when: dt.datetime) -> str:
    """STIX timestamp: UTC, millisecond precision, Z."""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> dt.datetime | None:
    """An RFC 3339 date-time (the schemas' format), or None."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


__all__ = [
    "KINDS",
    "NAMESPACE",
    "HandlingRefused",
    "InteropError",
    "LineageRef",
    "Received",
    "derived_id",
    "from_opened",
    "from_view",
    "parse_time",
    "report_id",
    "stix_time",
]


def headline(message: Received, *, title_of_any_kind: bool) -> str:
    """A message's one-line name in a platform (STIX report name, MISP event info): its
    title (an alert's only, unless ``title_of_any_kind``), else what kind of message it is."""
    record = message.record
    title = record.get("title")
    if isinstance(title, str) and (title_of_any_kind or message.kind == "alert"):
        return title
    if message.kind == "red-flag":
        entity = record.get("entity")
        kind = entity.get("kind", "entity") if isinstance(entity, Mapping) else "entity"
        return f"Red flag: {kind}"
    if message.kind == "tip":
        return f"Tip summary ({record.get('source_type', 'unknown source')})"
    return f"tfshare {message.schema} message"
