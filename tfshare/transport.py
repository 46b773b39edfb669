"""NATS / JetStream adapter: the only module that imports nats.

Owns: connecting as an agency (its NATS nkey, its private inbox prefix) or as the broker
administrator; provisioning the task force's stream with its limits (``StreamLimits``) and
each reader's durable pull consumers, one per channel it reads, fetched fairly (``Consumer``);
publishing an envelope with its ``Nats-Msg-Id`` (JetStream drops a repeat inside the
duplicate window); fetching and acknowledging; the KV buckets (roster, registry records and
the keys of the registry bucket, checkpoints); request-reply (``request``, and
``serve_requests`` for a service answering on a subject). Every nats error becomes a ``BrokerError``
(exit 4) with a hint, so callers never see nats exceptions. Some are not transient and
say so: ``BrokerAuthFailed`` (the broker has no user with these NATS credentials),
``MessageTooLarge`` (over the broker's max_payload or the stream's maximum message size),
``SenderQuotaFull`` (this sender's subject holds as many messages as the stream keeps per
sender) and ``StreamFull`` (the stream holds its max_bytes).

Never: look inside envelopes; this layer moves opaque bytes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
import nkeys  # type: ignore[import-untyped,unused-ignore]
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)

from tfshare.broker import (
    CHECKPOINT_KEY,
    ROSTER_KEY,
    audit_bucket,
    audit_durable_name,
    audit_subject,
    durable_name,
    inbox_prefix,
    is_auditor,
    legacy_durable_name,
    parse_schema_key,
    readable_channels,
    reader_durable_prefix,
    roster_bucket,
    schema_bucket,
    schema_key,
    stream_name,
    stream_subjects,
    witness_bucket,
)
from tfshare.envelope import MAX_ENVELOPE
from tfshare.errors import BrokerError, BrokerRefused
from tfshare.roster import TrustedRoster

log = structlog.get_logger("tfshare.transport")

NATS_ERRORS: Final = (nats.errors.Error, OSError, TimeoutError)
DAY_S: Final = 24 * 3600
# JetStream's error code for "message size exceeds maximum allowed" (the stream's max_msg_size).
JS_MESSAGE_TOO_LARGE: Final = 10054
# ... for a stream limit reached under DiscardNew: "maximum messages per subject exceeded"
# (this sender's quota), "maximum bytes exceeded" / "maximum messages exceeded" (the stream).
JS_STREAM_LIMIT: Final = 10077
# ... for "insufficient resources": the server's JetStream storage (max_file_store) is full.
JS_INSUFFICIENT_RESOURCES: Final = 10023
JS_INSUFFICIENT_STORAGE: Final = 10047  # "insufficient storage resources available"
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
# The stream's largest message: the largest envelope, and room for its headers.
MAX_MSG_SIZE: Final = MAX_ENVELOPE + 4096
_PROVISION_HINT: Final = (
    "the task force's stream or consumers are missing on the broker: run 'tfshare broker up', "
    "or 'tfshare broker provision' for a nats-server you run yourself; tfshare retries"
)


class BrokerAuthFailed(BrokerRefused):
    """The broker has no user with these NATS credentials ("Authorization Violation"): its
    configuration does not know this agency's NATS key. Retrying the same credentials cannot
    help until the broker is reconfigured, so this is never treated like an outage."""


class NoResponders(BrokerError):
    """A request found nobody subscribed to its subject: the service is not running (the
    broker says so at once; nothing was delivered)."""


class NoAnswer(BrokerError):
    """A request was delivered but no reply came in time."""


class MessageTooLarge(BrokerRefused):
    """The broker refuses a message for its size: over the server's max_payload, or over the
    stream's maximum message size. Sending it again cannot help."""


def _auth_violation(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def auth_failed(url: str, agency: str | None, nkey_seed: bytes) -> BrokerAuthFailed:
    """The error for credentials the broker does not know; names the (public) NATS user."""
    if agency is None:
        return BrokerAuthFailed(
            f"the broker at {url} refused the administrator's NATS credentials "
            "(authorization violation)",
            hint="the running nats-server was configured with another admin key: regenerate "
            "its configuration from this broker directory (tfshare broker config) and reload it",
        )
    try:
        user = str(nkeys.from_seed(nkey_seed).public_key.decode())
    except Exception:  # a malformed seed: the key file check would have caught it first
        user = "?"
    return BrokerAuthFailed(
        f"the broker at {url} refused the NATS credentials of agency {agency!r} "
        f"(authorization violation: it has no user {user})",
        hint="the broker does not know this agency's NATS key: regenerate the broker config "
        "from the current roster ('tfshare broker config', or 'tfshare roster publish' to a "
        "'tfshare broker up' broker) and reload nats-server; check --server is this task "
        "force's broker",
    )


class SenderQuotaFull(BrokerRefused):
    """The stream already keeps as many messages from this sender on this channel as it
    keeps per sender (max_msgs_per_subject, DiscardNew per subject): the broker refuses the
    new one rather than drop an older one. Room comes back as old messages expire."""


class StreamFull(BrokerRefused):
    """The task force's stream (or the server's JetStream storage) is full: DiscardNew
    refuses every new message rather than delete older ones that readers have not read."""


def quota_full(subject: str) -> SenderQuotaFull:
    return SenderQuotaFull(
        f"publish refused: sender quota full on {subject} (the broker already keeps as many "
        "messages from this agency on this channel as it keeps per sender)",
        hint="nothing was sent; room comes back as this agency's older messages on the "
        "channel expire (the stream's max age). If this agency did not send that many, its "
        "key may be in the wrong hands: tell the coordinators. Operators set the quota with "
        "'tfshare broker up/provision --max-msgs-per-sender'",
    )


def stream_full(subject: str, what: str) -> StreamFull:
    return StreamFull(
        f"publish refused on {subject}: the task force's stream on the broker is full ({what})",
        hint="nothing was sent, and nothing already accepted was dropped; tell the broker's "
        "operator: raise 'tfshare broker up/provision --max-bytes' (and the disk JetStream "
        "may use, --max-file-store), or lower the per-sender quota",
    )


def _limit_refusal(subject: str, exc: BaseException) -> BrokerRefused | None:
    """The refusal for a stream limit reached, or None if ``exc`` is something else."""
    if not isinstance(exc, nats.js.errors.APIError):
        return None
    description = (exc.description or "").lower()
    if exc.err_code == JS_STREAM_LIMIT and "per subject" in description:
        return quota_full(subject)
    if exc.err_code == JS_STREAM_LIMIT:
        return stream_full(subject, exc.description or "a stream limit")
    if exc.err_code in (JS_INSUFFICIENT_RESOURCES, JS_INSUFFICIENT_STORAGE):
        return stream_full(subject, "JetStream storage")
    return None


def too_large(subject: str, size: int, limit: int | None = None) -> MessageTooLarge:
    if limit is not None:
        return MessageTooLarge(
            f"the envelope for {subject} ({size} bytes with its headers) is larger than the "
            f"broker accepts (max_payload {limit} bytes)",
            hint="tfshare envelopes are up to 512 KiB: set max_payload to at least 1MB in the "
            "broker's configuration (see broker_config/) and restart nats-server",
        )
    return MessageTooLarge(
        f"the broker's stream refuses the envelope for {subject} ({size} bytes): over its "
        "maximum message size",
        hint="tfshare seals envelopes of at most 512 KiB; if the stream's limit is lower, "
        "provision it again ('tfshare broker up' or 'tfshare broker provision')",
    )


def broker_error(exc: BaseException, *, doing: str) -> BrokerError:
    text = str(exc) or type(exc).__name__
    if "permissions violation" in text:
        return BrokerError(
            f"the broker refused {doing}: permission denied",
            hint="check the agency's NATS user in the roster and the broker configuration",
        )
    if _auth_violation(exc):
        return BrokerAuthFailed(
            f"the broker refused {doing}: authorization violation",
            hint="the broker does not know these NATS credentials: regenerate the broker "
            "config from the current roster and reload nats-server",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerError(
            f"the broker's TLS certificate was not accepted while {doing} "
            f"({exc.verify_message or exc.reason})",
            hint="a task force CA must be trusted: set SSL_CERT_FILE to its certificate; the "
            "host in --server must match the broker's certificate",
        )
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return BrokerError(
            f"no JetStream stream answered while {doing}: the task force's stream is missing",
            hint=_PROVISION_HINT,
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.js.errors.NotFoundError):
        return BrokerError(
            f"JetStream could not serve the request while {doing} ({type(exc).__name__}): the "
            "stream or the consumer is missing, or JetStream is unavailable",
            hint=_PROVISION_HINT,
        )
    return BrokerError(
        f"broker unavailable while {doing} ({type(exc).__name__})",
        hint="check the server address and that the broker is running; tfshare retries",
    )


def _headers_size(msg_id: str) -> int:
    """Bytes of the NATS header block nats-py sends with a Nats-Msg-Id (the server counts
    them against max_payload, nats-py's own check does not)."""
    return len(f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode())


def _oversize(conn: Connection, subject: str, data: bytes, msg_id: str) -> MessageTooLarge | None:
    """Refuse before sending what the server would refuse: a message over its max_payload
    makes nats-server close the whole connection."""
    size = len(data) + _headers_size(msg_id)
    limit = int(conn.client.max_payload)
    return too_large(subject, size, limit) if limit and size > limit else None


def _publish_failure(
    conn: Connection, subject: str, data: bytes, exc: BaseException
) -> BrokerError:
    if conn.refused(subject):
        return BrokerRefused(
            f"the broker refused publishing on {subject}: permission denied",
            hint="the roster does not let this agency write that channel (or the broker's "
            "configuration is older than the roster)",
        )
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == JS_MESSAGE_TOO_LARGE:
        return too_large(subject, len(data))
    return _limit_refusal(subject, exc) or broker_error(exc, doing=f"publishing on {subject}")


@dataclass
class Connection:
    """A connection to the broker with its JetStream context."""

    client: Client
    agency: str | None
    # Asynchronous errors the server reported (permission violations arrive this way, not
    # as the publish's own failure, which only times out).
    errors: list[str] = field(default_factory=list)

    def refused(self, subject: str) -> bool:
        return any("permissions violation" in e and subject in e for e in self.errors)

    _js: Any = field(default=None, repr=False)

    @property
    def js(self) -> Any:
        # One context per connection: each context subscribes for its async publish acks
        # once, so a context per call left a subscription behind every time.
        if self._js is None:
            self._js = self.client.jetstream()
        return self._js

    async def close(self) -> None:
        """Close now. Everything we publish is awaited until JetStream acknowledges it, and
        every fetched message is acknowledged (or not) before we get here, so there is
        nothing to drain (and draining a pull subscription can wait for a long time)."""
        try:
            await asyncio.wait_for(self.client.close(), timeout=5)
        except (TimeoutError, *NATS_ERRORS):
            return


async def connect(
    url: str,
    *,
    nkey_seed: bytes,
    agency: str | None,
    name: str,
    reconnect: bool = True,
    connect_timeout: float = 2.0,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
) -> Connection:
    """Connect with an nkey seed ("SU..."); ``agency`` selects its private inbox prefix."""

    errors: list[str] = []

    async def _record(exc: Exception) -> None:
        errors.append(str(exc))
        if error_cb is not None:
            await error_cb(exc)

    options: dict[str, Any] = {
        "servers": [url],
        "name": name,
        "nkeys_seed_str": nkey_seed.decode("ascii"),
        "allow_reconnect": reconnect,
        "connect_timeout": connect_timeout,
        "max_reconnect_attempts": -1 if reconnect else 0,
        "reconnect_time_wait": 0.5,
        # A broker that stops reading must not hold a publish forever: nats-py's forced
        # flush (a full write buffer) swallows cancellation, so it needs its own limit.
        "flush_timeout": connect_timeout * 2,
        "error_cb": _record,
    }
    if agency is not None:
        options["inbox_prefix"] = inbox_prefix(agency).encode()
    try:
        # nats-py can keep trying a dead server well past connect_timeout: bound it here.
        client = await asyncio.wait_for(nats.connect(**options), timeout=connect_timeout * 2)
    except (TimeoutError, *NATS_ERRORS) as exc:
        if _auth_violation(exc) or any("authorization violation" in e.lower() for e in errors):
            raise auth_failed(url, agency, nkey_seed) from None
        raise broker_error(exc, doing=f"connecting to {url}") from None
    return Connection(client, agency, errors)


# Defaults of the limits an operator sets (``tfshare broker up/provision``; README, Limits).
DEFAULT_MAX_BYTES: Final = 8 * GIB
DEFAULT_MAX_MSGS_PER_SENDER: Final = 5000
DEFAULT_MAX_ACK_PENDING: Final = 256
DEFAULT_MAX_WAITING: Final = 16


def stream_config(
    taskforce: str,
    *,
    max_age_days: float = 30,
    duplicate_window_s: float = 120,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_msgs_per_sender: int = DEFAULT_MAX_MSGS_PER_SENDER,
) -> StreamConfig:
    """The task force's stream. Every limit refuses the NEW message (DiscardNew), never
    deletes an old one: DiscardOld would make room for a flooder by silently dropping other
    members' messages that readers may not have fetched yet. Each sender publishes only on
    its own subjects (tf.<tf>.ch.<channel>.<sender>), so a per-subject limit with
    discard_new_per_subject is a per-sender, per-channel quota: a flooder fills its own
    quota and then only its own publishes are refused (``SenderQuotaFull``); max_bytes bounds
    the whole stream on disk (``StreamFull`` once reached, for everyone: so keep one sender's
    worst case, max_msgs_per_sender x max_msg_size, well below it)."""
    return StreamConfig(
        name=stream_name(taskforce),
        subjects=stream_subjects(taskforce),
        storage=StorageType.FILE,
        max_age=max_age_days * DAY_S,
        duplicate_window=duplicate_window_s,
        max_msg_size=MAX_MSG_SIZE,
        max_bytes=max_bytes,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=max_msgs_per_sender,
        discard_new_per_subject=True,
    )


def reader_consumer_config(
    durable: str,
    subjects: list[str],
    *,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    max_waiting: int = DEFAULT_MAX_WAITING,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    opt_start_seq: int | None = None,
) -> ConsumerConfig:
    """A durable pull consumer. ``max_ack_pending`` bounds what one reader holds unacknowledged
    on one consumer (a flood waits on the broker, not in the reader's memory); ``max_waiting``
    bounds its outstanding pull requests (tfshare keeps one or two per consumer)."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=deliver_policy,
        opt_start_seq=opt_start_seq,
        ack_wait=30,
        max_deliver=-1,
        filter_subjects=subjects,
        max_ack_pending=max_ack_pending,
        max_waiting=max_waiting,
    )


async def _consumer_info(js: Any, stream: str, durable: str) -> Any | None:
    try:
        return await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        return None


async def _provision_reader(
    js: Any,
    roster: TrustedRoster,
    agency: str,
    channels: list[str],
    *,
    max_ack_pending: int,
    max_waiting: int,
) -> None:
    """One durable per channel the agency reads. A consumer that exists keeps where it
    starts (JetStream cannot change it) and gets the current limits. Migration from the
    single all-channels consumer of older versions: a new channel consumer starts after the
    old one's ack floor (for a channel the old one covered), so what was acknowledged is not
    delivered again; then the old one is deleted -- left in place it would only keep a
    second, unused cursor, and an agent of an older version bound to it would go on reading
    beside the new one instead of failing visibly until upgraded."""
    stream = stream_name(roster.taskforce)
    legacy = await _consumer_info(js, stream, legacy_durable_name(agency))
    legacy_subjects: set[str] = set()
    if legacy is not None:
        legacy_subjects = set(legacy.config.filter_subjects or [])
        if legacy.config.filter_subject:
            legacy_subjects.add(legacy.config.filter_subject)
    for channel in channels:
        durable = durable_name(agency, channel)
        subject = f"tf.{roster.taskforce}.ch.{channel}.*"
        existing = await _consumer_info(js, stream, durable)
        if existing is not None:
            policy = existing.config.deliver_policy or DeliverPolicy.ALL
            start = existing.config.opt_start_seq
        elif legacy is not None and subject in legacy_subjects and legacy.ack_floor.stream_seq:
            policy, start = DeliverPolicy.BY_START_SEQUENCE, legacy.ack_floor.stream_seq + 1
        else:
            policy, start = DeliverPolicy.ALL, None
        await js.add_consumer(
            stream,
            reader_consumer_config(
                durable,
                [subject],
                max_ack_pending=max_ack_pending,
                max_waiting=max_waiting,
                deliver_policy=policy,
                opt_start_seq=start,
            ),
        )
    if legacy is not None:
        await js.delete_consumer(stream, legacy_durable_name(agency))
        log.info("legacy_consumer_migrated", agency=agency, channels=len(channels))


async def provision(
    admin: Connection,
    roster: TrustedRoster,
    *,
    max_age_days: float = 30,
    duplicate_window_s: float = 120,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_msgs_per_sender: int = DEFAULT_MAX_MSGS_PER_SENDER,
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
    max_waiting: int = DEFAULT_MAX_WAITING,
) -> None:
    """Create or update the task force's stream, its KV buckets, every active reader's
    durable consumers (one per channel it reads) and the audit service's consumer."""
    js = admin.js
    config = stream_config(
        roster.taskforce,
        max_age_days=max_age_days,
        duplicate_window_s=duplicate_window_s,
        max_bytes=max_bytes,
        max_msgs_per_sender=max_msgs_per_sender,
    )
    try:
        await js.create_key_value(
            KeyValueConfig(bucket=roster_bucket(roster.taskforce), history=16, direct=True)
        )
        await js.create_key_value(
            KeyValueConfig(bucket=schema_bucket(roster.taskforce), history=1, direct=True)
        )
        await js.create_key_value(
            KeyValueConfig(bucket=audit_bucket(roster.taskforce), history=64, direct=True)
        )
        await js.create_key_value(
            KeyValueConfig(bucket=witness_bucket(roster.taskforce), history=64, direct=True)
        )
        # Update a stream that exists rather than add it again: adding checks the storage
        # reservation of max_bytes before it notices the stream is there, and would count
        # the stream's own reservation twice ("insufficient storage resources").
        try:
            await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
        for member in roster.roster.members:
            channels = readable_channels(roster, member.agency_id)
            if member.status != "active" or not channels:
                continue
            await _provision_reader(
                js,
                roster,
                member.agency_id,
                channels,
                max_ack_pending=max_ack_pending,
                max_waiting=max_waiting,
            )
        for member in roster.roster.members:
            if member.status == "active" and is_auditor(roster, member.agency_id):
                # The audit service's own consumer: every channel, acknowledged only once
                # the entry is committed to the log.
                await js.add_consumer(
                    stream_name(roster.taskforce),
                    reader_consumer_config(
                        audit_durable_name(member.agency_id),
                        stream_subjects(roster.taskforce),
                        max_ack_pending=max(max_ack_pending, 1024),
                        max_waiting=max_waiting,
                    ),
                )
    except nats.js.errors.APIError as exc:
        if exc.err_code in (JS_INSUFFICIENT_RESOURCES, JS_INSUFFICIENT_STORAGE):
            raise BrokerError(
                "the broker cannot reserve the stream's max_bytes: JetStream's storage limit "
                "(max_file_store) is smaller",
                hint="give JetStream more disk (--max-file-store, or TFSHARE_MAX_FILE_STORE in "
                "your own template) or provision with a smaller --max-bytes",
            ) from None
        log.error("provision_refused", code=exc.err_code, description=exc.description)
        raise broker_error(exc, doing="provisioning the stream and consumers") from None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="provisioning the stream and consumers") from None


async def put_roster(conn: Connection, taskforce: str, data: bytes) -> int:
    """Store a signed roster in the task force's roster bucket; returns the KV revision."""
    try:
        kv = await conn.js.key_value(roster_bucket(taskforce))
        revision: int = await kv.put(ROSTER_KEY, data)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing the roster") from None
    return revision


async def get_roster(conn: Connection, taskforce: str) -> bytes | None:
    """The signed roster in the bucket, or None if none was published yet."""
    try:
        kv = await conn.js.key_value(roster_bucket(taskforce))
        entry = await kv.get(ROSTER_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching the roster") from None
    return bytes(entry.value) if entry.value is not None else None


async def publish_checkpoint(conn: Connection, taskforce: str, note: bytes) -> None:
    """Announce a signed checkpoint on the audit subject and keep it in the audit bucket."""
    try:
        await conn.client.publish(audit_subject(taskforce, "checkpoint"), note)
        kv = await conn.js.key_value(audit_bucket(taskforce))
        await kv.put(CHECKPOINT_KEY, note)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a checkpoint") from None


async def get_checkpoint(conn: Connection, taskforce: str) -> bytes | None:
    """The latest signed checkpoint in the audit bucket, or None."""
    try:
        kv = await conn.js.key_value(audit_bucket(taskforce))
        entry = await kv.get(CHECKPOINT_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching the checkpoint") from None
    return bytes(entry.value) if entry.value is not None else None


async def put_cosignature(conn: Connection, taskforce: str, agency: str, data: bytes) -> None:
    """Keep this agency's latest witness cosignature in the witness bucket (key = agency)."""
    try:
        kv = await conn.js.key_value(witness_bucket(taskforce))
        await kv.put(agency, data)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a witness cosignature") from None


async def get_cosignature(conn: Connection, taskforce: str, agency: str) -> bytes | None:
    """The latest witness cosignature ``agency`` published, or None."""
    try:
        kv = await conn.js.key_value(witness_bucket(taskforce))
        entry = await kv.get(agency)
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching a witness cosignature") from None
    return bytes(entry.value) if entry.value is not None else None


async def subscribe_checkpoints(
    conn: Connection, taskforce: str, on_note: Callable[[bytes], None]
) -> None:
    """Call ``on_note`` with every checkpoint the audit service announces from now on."""

    async def handler(msg: Msg) -> None:
        on_note(bytes(msg.data))

    try:
        await conn.client.subscribe(audit_subject(taskforce, "checkpoint"), cb=handler)
        await conn.client.flush()
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="subscribing to checkpoints") from None


async def put_schema_record(
    conn: Connection, taskforce: str, subject: str, version: int, data: bytes
) -> None:
    """Store a registry record, write-once: a version already there is never replaced."""
    try:
        kv = await conn.js.key_value(schema_bucket(taskforce))
        await kv.create(schema_key(subject, version), data)
    except nats.js.errors.KeyWrongLastSequenceError:
        return  # already published (by us or another coordinator): versions never change
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="publishing a schema record") from None


async def get_schema_record(
    conn: Connection, taskforce: str, subject: str, version: int
) -> bytes | None:
    try:
        kv = await conn.js.key_value(schema_bucket(taskforce))
        entry = await kv.get(schema_key(subject, version))
    except nats.js.errors.KeyNotFoundError:
        return None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="fetching a schema record") from None
    return bytes(entry.value) if entry.value is not None else None


async def schema_keys(conn: Connection, taskforce: str) -> list[tuple[str, int]]:
    """(subject, version) of every record in the registry bucket, sorted; keys that are not
    ``<subject>.v<version>`` are left out. Read with a stream-info request filtered on the
    bucket's subjects (a permission every member already has for reading the bucket), not
    with a KV watcher, which would need a consumer of its own; a bucket that does not exist
    (a broker provisioned before the registry) has no records."""
    bucket = schema_bucket(taskforce)
    prefix = f"$KV.{bucket}."
    try:
        info = await conn.js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    except nats.js.errors.NotFoundError:
        return []
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing="listing the registry records") from None
    subjects = info.state.subjects or {}
    keys = (parse_schema_key(s[len(prefix) :]) for s in subjects if s.startswith(prefix))
    return sorted(key for key in keys if key is not None)


async def serve_requests(
    conn: Connection,
    subject: str,
    answer: Callable[[bytes], bytes],
    *,
    reply_allowed: Callable[[str], bool],
) -> None:
    """Answer every request on ``subject`` with ``answer(request bytes)``, on its reply
    subject, until the connection closes. ``answer`` must not raise; a message without a
    reply subject is not a request and is dropped. A reply that cannot be sent (the
    connection went away) is dropped too: the requester times out and asks again.

    ``reply_allowed`` guards the reply subject: the broker's ``allow_responses`` lets the
    service publish to whatever reply subject a requester names, so a member could otherwise
    aim the answer at a KV key or a channel it may not write itself. Requests whose reply
    subject is not an agency's private inbox are dropped, unanswered."""

    async def handler(msg: Msg) -> None:
        if not msg.reply or not reply_allowed(msg.reply):
            if msg.reply:
                log.warning("request_reply_refused", subject=subject, reply=msg.reply[:120])
            return
        response = answer(bytes(msg.data))
        try:
            await conn.client.publish(msg.reply, response)
        except NATS_ERRORS:
            return

    try:
        await conn.client.subscribe(subject, cb=handler)
        await conn.client.flush()
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"subscribing to {subject}") from None


async def request(conn: Connection, subject: str, data: bytes, *, timeout: float) -> bytes:
    """Send one request on ``subject`` and return the first reply. The reply comes back on
    this agency's private inbox prefix. ``NoResponders`` if nobody serves the subject,
    ``BrokerRefused`` if this user may not publish there, ``BrokerError`` on a timeout."""
    try:
        reply = await conn.client.request(subject, data, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise NoResponders(
            f"nobody answers requests on {subject}",
            hint="the service for this subject is not running on the broker",
        ) from None
    except (nats.errors.TimeoutError, TimeoutError):
        # A refused publish is reported asynchronously; the request itself only times out.
        await _settle(conn)
        if conn.refused(subject):
            raise BrokerRefused(
                f"the broker refused a request on {subject}: permission denied",
                hint="this agency's NATS user may not send it (not a member, or the broker's "
                "configuration is older than the roster)",
            ) from None
        raise NoAnswer(
            f"no answer on {subject} within {timeout:g} s",
            hint="the service may be busy or stopping; try again (or with a longer timeout)",
        ) from None
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"sending a request on {subject}") from None
    return bytes(reply.data)


async def _settle(conn: Connection) -> None:
    """Give asynchronous server errors (permission violations) a round trip to arrive."""
    try:
        await conn.client.flush(timeout=1)
    except (TimeoutError, *NATS_ERRORS):
        return


async def publish(
    conn: Connection, subject: str, data: bytes, *, msg_id: str, timeout: float = 5.0
) -> tuple[int, bool]:
    """Publish one envelope and wait for JetStream's ack: (stream sequence, duplicate?)."""
    oversize = _oversize(conn, subject, data, msg_id)
    if oversize is not None:
        raise oversize
    try:
        ack = await conn.js.publish(subject, data, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
    except NATS_ERRORS as exc:
        raise _publish_failure(conn, subject, data, exc) from None
    return int(ack.seq), bool(ack.duplicate)


async def publish_many(
    conn: Connection, items: Sequence[tuple[str, bytes, str]], *, timeout: float = 5.0
) -> list[tuple[int, bool] | BrokerError]:
    """Publish (subject, envelope, msg_id) items pipelined -- all in flight at once -- and
    wait for JetStream's acks. One result per item, in order: (stream sequence, duplicate?)
    or the ``BrokerError`` for that item (``BrokerRefused`` for a permission denial,
    ``MessageTooLarge`` for one the broker would refuse for its size: never sent)."""
    if not items:
        return []
    js = conn.js  # one context: it owns the futures of its pending publishes
    futures: list[asyncio.Future[Any] | MessageTooLarge] = []
    try:
        # One deadline for the whole submission rather than nats-py's per-call wait_stall:
        # that wraps every call in a task, so each message was written to the socket alone
        # (a syscall and a loop turn each); without it the client writes them in bulk.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with asyncio.timeout(timeout):
            for subject, data, msg_id in items:
                oversize = _oversize(conn, subject, data, msg_id)
                if oversize is not None:
                    futures.append(oversize)  # sending it would cost the whole connection
                    continue
                futures.append(
                    await js.publish_async(subject, data, headers={"Nats-Msg-Id": msg_id})
                )
                if loop.time() > deadline:  # a cancellation nats-py swallowed, say
                    raise TimeoutError
    except NATS_ERRORS as exc:  # TimeoutError among them
        for future in futures:
            if isinstance(future, asyncio.Future):
                future.cancel()
        raise broker_error(exc, doing="publishing") from None
    pending = [f for f in futures if isinstance(f, asyncio.Future)]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    results: list[tuple[int, bool] | BrokerError] = []
    for (subject, data, _), future in zip(items, futures, strict=True):
        if isinstance(future, MessageTooLarge):
            results.append(future)
            continue
        if not future.done():
            future.cancel()
            failure: BaseException = TimeoutError()
        elif future.exception() is not None:
            failure = future.exception() or TimeoutError()
        else:
            ack = future.result()
            results.append((int(ack.seq), bool(ack.duplicate)))
            continue
        results.append(_publish_failure(conn, subject, data, failure))
    return results


@dataclass
class Delivery:
    """One message from the consumer; ``ack`` only after the outcome is persisted."""

    subject: str
    data: bytes
    delivered: int  # how many times JetStream has delivered it (1 = first)
    message: Msg

    async def ack(self) -> None:
        await self.message.ack()

    async def nak(self, delay: float | None = None) -> None:
        await self.message.nak(delay=delay)


@dataclass
class _Lane:
    """One durable consumer of a ``Consumer``: its subscription, the pull in flight (at
    most one) and what it fetched that was not handed out yet."""

    durable: str
    sub: Any
    pull: asyncio.Task[list[Msg]] | None = None
    ready: deque[Msg] = field(default_factory=deque)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A pull left behind when its connection closed: its error is not news."""
    if not task.cancelled():
        task.exception()


class Consumer:
    """An agency's durable pull consumers, one per channel it reads (or, with ``audit``, its
    audit service's single consumer over every channel), behind one ``fetch``.

    Fair by construction: each consumer has at most one pull in flight, asking for its share
    of the batch; ``fetch`` returns as soon as any consumer has messages, and hands them out
    in turn (one from each consumer with messages, starting with a different one each call).
    A pull still waiting when ``fetch`` returns stays in flight for the next call, so nothing
    fetched is dropped. A backlog on one channel therefore costs another channel at most one
    share of a batch, never the backlog.

    The channel consumers are found on the broker by name (their common prefix), and looked
    up again every ``refresh_s``, so a channel granted to the agency later is read without a
    reconnect. ``channels`` names them instead (no lookup)."""

    def __init__(
        self,
        conn: Connection,
        taskforce: str,
        agency: str,
        *,
        audit: bool = False,
        channels: Sequence[str] | None = None,
        refresh_s: float = 30.0,
    ):
        self.conn = conn
        self.taskforce = taskforce
        self.agency = agency
        self.audit = audit
        self.channels = None if channels is None else list(channels)
        self.refresh_s = refresh_s
        self._lanes: dict[str, _Lane] = {}
        self._bound = False
        self._next_refresh = 0.0
        self._turn = 0

    @property
    def durables(self) -> list[str]:
        """The durable consumers this one reads, in a stable order."""
        return sorted(self._lanes)

    async def _wanted(self) -> list[str]:
        if self.audit:
            return [audit_durable_name(self.agency)]
        if self.channels is not None:
            return [durable_name(self.agency, channel) for channel in self.channels]
        prefix = reader_durable_prefix(self.agency)
        names: list[str] = []
        offset = 0
        subject = f"$JS.API.CONSUMER.NAMES.{stream_name(self.taskforce)}"
        while True:
            request = json.dumps({"offset": offset}).encode()
            reply = await self.conn.client.request(subject, request, timeout=5)
            answer = json.loads(reply.data)
            if "error" in answer:
                raise nats.js.errors.APIError.from_error(answer["error"])
            page = [str(n) for n in answer.get("consumers") or []]
            names += [n for n in page if n.startswith(prefix)]
            offset += len(page)
            if not page or offset >= int(answer.get("total", 0)):
                return sorted(names)

    async def bind(self) -> None:
        """Bind to every consumer this agency reads (again: new ones added, gone ones left)."""
        try:
            wanted = await self._wanted()
            for durable in wanted:
                if durable in self._lanes:
                    continue
                sub = await self.conn.js.pull_subscribe_bind(
                    durable,
                    stream_name(self.taskforce),
                    inbox_prefix=f"{inbox_prefix(self.agency)}.".encode(),
                )
                self._lanes[durable] = _Lane(durable, sub)
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing=f"binding the consumers of {self.agency}") from None
        for durable in set(self._lanes) - set(wanted):
            lane = self._lanes.pop(durable)  # the agency no longer reads that channel
            if lane.pull is not None:
                lane.pull.cancel()
        self._bound = True
        loop = asyncio.get_running_loop()
        self._next_refresh = loop.time() + self.refresh_s

    async def _pull(self, lane: _Lane, batch: int, timeout: float) -> list[Msg]:
        try:
            messages: list[Msg] = await lane.sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, nats.js.errors.FetchTimeoutError, TimeoutError):
            return []
        return messages

    def _collect(self) -> None:
        """Move the results of finished pulls to their lanes; a pull's broker error ends
        the fetch (the caller reconnects)."""
        for lane in self._lanes.values():
            if lane.pull is None or not lane.pull.done():
                continue
            pull, lane.pull = lane.pull, None
            if pull.cancelled():
                continue
            exc = pull.exception()
            if exc is not None:
                raise broker_error(exc, doing=f"fetching from consumer {lane.durable}") from None
            lane.ready.extend(pull.result())

    def _hand_out(self, batch: int) -> list[Delivery]:
        lanes = [self._lanes[d] for d in self.durables]
        if not lanes:
            return []
        self._turn = (self._turn + 1) % len(lanes)
        order = lanes[self._turn :] + lanes[: self._turn]
        taken: list[Msg] = []
        while len(taken) < batch and any(lane.ready for lane in order):
            for lane in order:
                if lane.ready and len(taken) < batch:
                    taken.append(lane.ready.popleft())
        return [Delivery(m.subject, bytes(m.data), int(m.metadata.num_delivered), m) for m in taken]

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``timeout``."""
        loop = asyncio.get_running_loop()
        if not self._bound or loop.time() >= self._next_refresh:
            await self.bind()
        if not self._lanes:  # reads no channel (yet): nothing will come
            await asyncio.sleep(timeout)
            return []
        share = max(1, -(-batch // len(self._lanes)))
        deadline = loop.time() + timeout
        while True:
            self._collect()
            if any(lane.ready for lane in self._lanes.values()):
                break
            for lane in self._lanes.values():
                if lane.pull is None:
                    lane.pull = asyncio.create_task(self._pull(lane, share, timeout))
                    lane.pull.add_done_callback(_retrieve)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            pulls = [lane.pull for lane in self._lanes.values() if lane.pull is not None]
            done, _ = await asyncio.wait(
                pulls, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
        return self._hand_out(batch)

    async def backlog(self) -> dict[str, int]:
        """Messages not yet delivered, per durable consumer (needs CONSUMER.INFO rights)."""
        result: dict[str, int] = {}
        for durable in self.durables:
            try:
                info = await self.conn.js.consumer_info(stream_name(self.taskforce), durable)
            except NATS_ERRORS as exc:
                raise broker_error(exc, doing=f"reading consumer {durable}") from None
            result[durable] = int(info.num_pending)
        return result

    async def close(self) -> None:
        """Stop the pulls in flight (what they fetched comes back after the ack wait)."""
        pulls = [lane.pull for lane in self._lanes.values() if lane.pull is not None]
        for pull in pulls:
            pull.cancel()
        await asyncio.gather(*pulls, return_exceptions=True)
        for lane in self._lanes.values():
            lane.pull = None


async def reader_backlog(
    admin: Connection, taskforce: str, agency: str, channels: Sequence[str]
) -> tuple[int, int]:
    """(not yet delivered, delivered but not acknowledged) over an agency's channel
    consumers: what the single consumer's num_pending and num_ack_pending were."""
    pending = ack_pending = 0
    try:
        for channel in channels:
            info = await admin.js.consumer_info(
                stream_name(taskforce), durable_name(agency, channel)
            )
            pending += int(info.num_pending)
            ack_pending += int(info.num_ack_pending)
    except NATS_ERRORS as exc:
        raise broker_error(exc, doing=f"reading the consumers of {agency}") from None
    return pending, ack_pending
