"""The desk's local API: typed requests and answers between the CLI and the running agent.

Owns: the message types (msgspec structs, tagged), the API version, the framing on the Unix
socket, and the socket's place in the state directory. Pure: no I/O here.

A conversation is one connection: the client sends ``Hello`` and one request; the agent
answers ``Welcome`` (or ``Failed`` for a version it does not speak), then one answer, or for
``Follow`` a stream of ``FeedItem`` until either side closes. Each frame is a 4-byte
big-endian length and a msgpack-encoded struct; a frame over ``MAX_FRAME`` is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

API_VERSION = 1
SOCKET_NAME = "agent.sock"
LOCK_NAME = "agent.lock"
MAX_FRAME = 8 * 1024 * 1024  # a full inbox listing or a 512 KiB body, with room


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


# -- requests ---------------------------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", frozen=True):
    version: int
    client: str = "tfshare-cli"


class StatusRequest(msgspec.Struct, tag="status", frozen=True):
    pass


class PublishRequest(msgspec.Struct, tag="publish", frozen=True):
    """A message to seal and send. ``body`` is the JSON body the CLI assembled (file, stdin,
    ``--field``s and prompts); ``fields`` are applied on top of it by the agent."""

    kind: str
    channel: str | None = None
    to: list[str] | None = None
    body: bytes | None = None
    fields: list[str] = msgspec.field(default_factory=list)
    queue: bool = True
    derive: tuple[str, str] | None = None  # (relation, parent msg_id text)
    wait_s: float = 2.0  # how long to wait for the broker's acknowledgement

    def __repr__(self) -> str:
        # Never the body or the fields: a repr can end up in a log or a traceback.
        return (
            f"PublishRequest(kind={self.kind!r}, channel={self.channel!r}, derive={self.derive!r})"
        )


class InboxListRequest(msgspec.Struct, tag="inbox.list", frozen=True):
    limit: int = 1000


class InboxShowRequest(msgspec.Struct, tag="inbox.show", frozen=True):
    ref: str  # msg_id text (msgref syntax)


class InboxSearchRequest(msgspec.Struct, tag="inbox.search", frozen=True):
    text: str


class QuarantineRequest(msgspec.Struct, tag="inbox.quarantine", frozen=True):
    limit: int = 100


class FollowRequest(msgspec.Struct, tag="follow", frozen=True):
    include_existing: bool = False


class SchemaRequest(msgspec.Struct, tag="schema", frozen=True):
    kind: str  # alert, red-flag, tip


class DiscloseRequest(msgspec.Struct, tag="audit.disclose", frozen=True):
    ref: str


class LoginRequest(msgspec.Struct, tag="web.login", frozen=True):
    """A one-time login link for the web inbox (``tfshare web open``)."""


Request = (
    StatusRequest
    | PublishRequest
    | InboxListRequest
    | InboxShowRequest
    | InboxSearchRequest
    | QuarantineRequest
    | FollowRequest
    | SchemaRequest
    | DiscloseRequest
    | LoginRequest
)


# -- answers ----------------------------------------------------------------------------------


class Welcome(msgspec.Struct, tag="welcome", frozen=True):
    version: int
    agency: str
    taskforce: str


class Failed(msgspec.Struct, tag="failed", frozen=True):
    """A ``TfshareError`` raised in the agent, carried to the CLI as it would have printed."""

    message: str
    hint: str
    exit_code: int
    kind: str = "TfshareError"
    code: str | None = None  # the reject code (E_NO_FORWARD...), as the direct path says it


class ChannelBacklog(msgspec.Struct, frozen=True):
    channel: str
    pending: int  # messages the broker holds for this agency, not yet fetched


class EpochKeysHeld(msgspec.Struct, frozen=True):
    """A channel's epoch keys the agent holds (never the keys): the newest and how many
    older ones are kept (until their retention ends)."""

    channel: str
    epoch: int  # the newest held
    starts: str  # when it started, ISO 8601 UTC
    older: int  # older epochs still kept


class Status(msgspec.Struct, tag="status", frozen=True):
    agency: str
    taskforce: str
    pid: int
    started: str  # ISO 8601 UTC
    connected: bool
    server: str
    connected_since: str | None
    reconnects: int
    roster_seq: int
    backlog: list[ChannelBacklog]
    outbox: int
    outbox_refused: int
    inbox: int
    quarantine: int
    last_message: str | None  # when the last message was stored
    last_sender: str | None
    delivered: int
    rejected: int
    duplicates: int
    failed: int
    published: int
    witness: str | None  # the last checkpoint this agent co-signed, "size N at TIME"
    errors: list[str]  # the latest errors, newest last (event names and reasons, no secrets)
    web: str | None  # the web inbox's address, if it runs
    epoch_keys: list[EpochKeysHeld] = msgspec.field(default_factory=list)


class Published(msgspec.Struct, tag="published", frozen=True):
    msg_id: str
    subject: str
    recipients: list[str]  # direct mode; [] in epoch mode (every reader of the epoch)
    queued: bool
    reason: str | None
    seq: int | None
    flushed: int
    channel: str = ""
    epoch: int = 0  # epoch mode: the epoch it was sealed under


class InboxRow(msgspec.Struct, frozen=True):
    msg_id: str
    sender: str
    channel: str
    schema: str
    sent: str
    received: str


class InboxRows(msgspec.Struct, tag="inbox.rows", frozen=True):
    rows: list[InboxRow]


class Message(msgspec.Struct, tag="message", frozen=True):
    """A received message, decrypted and verified, for display. ``body`` is the decoded body
    (JSON types); ``warning`` what a reader must be told first (a compromised sender)."""

    msg_id: str
    sender: str
    fingerprint: str
    channel: str
    schema: str
    sent: str
    received: str
    warning: str | None
    body: Any
    env_hash: str = ""
    roster_seq: int = 0
    sent_ms: int = 0
    received_ms: int = 0

    def __repr__(self) -> str:
        # Never the body (plaintext): a repr can end up in a log or a traceback.
        return f"Message(msg_id={self.msg_id!r}, sender={self.sender!r}, schema={self.schema!r})"


class Unreadable(msgspec.Struct, tag="unreadable", frozen=True):
    msg_id: str
    sender: str
    code: str
    reason: str


class SearchResult(msgspec.Struct, tag="search", frozen=True):
    matches: list[Message]
    unreadable: list[Unreadable]


class QuarantineRow(msgspec.Struct, frozen=True):
    env_hash: str
    code: str
    reason: str
    sender: str | None
    subject: str
    received: str
    size: int
    kept: int


class QuarantineRows(msgspec.Struct, tag="quarantine.rows", frozen=True):
    rows: list[QuarantineRow]


class FeedItem(msgspec.Struct, tag="feed", frozen=True):
    """One stored message, pushed as soon as it is stored: a message or why it cannot be
    shown."""

    item: Message | Unreadable


class SchemaDocument(msgspec.Struct, tag="schema.document", frozen=True):
    name: str  # subject/version
    document: Any  # the JSON Schema


class Disclosure(msgspec.Struct, tag="disclosure", frozen=True):
    data: bytes  # the disclosure file's bytes (it names the message key of one message only)
    msg_id: str
    sender: str = ""

    def __repr__(self) -> str:
        return f"Disclosure(msg_id={self.msg_id!r}, data=<{len(self.data)} bytes>)"


class LoginLink(msgspec.Struct, tag="web.link", frozen=True):
    url: str
    expires: str

    def __repr__(self) -> str:
        # The one-time token is printed once, for the analyst; never in a log.
        return f"LoginLink(url=<secret>, expires={self.expires!r})"


Answer = (
    Welcome
    | Failed
    | Status
    | Published
    | InboxRows
    | Message
    | SearchResult
    | QuarantineRows
    | FeedItem
    | SchemaDocument
    | Disclosure
    | LoginLink
)

_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Hello | Request)
_answer_decoder = msgspec.msgpack.Decoder(Answer)


class FrameError(Exception):
    """A frame that is too large or does not decode (the peer is not a tfshare of this API)."""


def frame(message: msgspec.Struct) -> bytes:
    data = _encoder.encode(message)
    if len(data) > MAX_FRAME:
        raise FrameError(f"a frame of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return len(data).to_bytes(4, "big") + data


def frame_length(prefix: bytes) -> int:
    size = int.from_bytes(prefix, "big")
    if size > MAX_FRAME:
        raise FrameError(f"a frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    return size


def decode_request(data: bytes) -> Hello | Request:
    try:
        return _request_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise FrameError(f"not a request of API version {API_VERSION}: {exc}") from None


def decode_answer(data: bytes) -> Answer:
    try:
        return _answer_decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise FrameError(f"not an answer of API version {API_VERSION}: {exc}") from None
