"""NATS / JetStream adapter: the only module that imports nats.

Owns: connecting as an agency (its NATS nkey, its private inbox prefix) or as the broker
administrator; provisioning the task force's stream and each reader's durable pull consumer;
publishing an envelope with its ``Nats-Msg-Id`` (JetStream drops a repeat inside the
duplicate window); fetching and acknowledging; the KV buckets (roster, registry records and
the keys of the registry bucket, checkpoints); request-reply (``request``, and
``serve_requests`` for a service answering on a subject). Every nats error becomes a ``BrokerError``
(exit 4) with a hint, so callers never see nats exceptions. Two of them are not transient and
say so: ``BrokerAuthFailed`` (the broker has no user with these NATS credentials) and
``MessageTooLarge`` (over the broker's max_payload or the stream's maximum message size).

Never: look inside envelopes; this layer moves opaque bytes.
"""

from __future__ import annotations

import asyncio
import ssl
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
    parse_schema_key,
    readable_channels,
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
    return broker_error(exc, doing=f"publishing on {subject}")


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


async def provision(
    admin: Connection,
    roster: TrustedRoster,
    *,
    max_age_days: float = 30,
    duplicate_window_s: float = 120,
) -> None:
    """Create or update the task force's stream and every active reader's durable consumer."""
    js = admin.js
    config = StreamConfig(
        name=stream_name(roster.taskforce),
        subjects=stream_subjects(roster.taskforce),
        storage=StorageType.FILE,
        max_age=max_age_days * DAY_S,
        duplicate_window=duplicate_window_s,
        max_msg_size=MAX_ENVELOPE + 4096,
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
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)
        for member in roster.roster.members:
            channels = readable_channels(roster, member.agency_id)
            if member.status != "active" or not channels:
                continue
            await js.add_consumer(
                stream_name(roster.taskforce),
                ConsumerConfig(
                    durable_name=durable_name(member.agency_id),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=30,
                    max_deliver=-1,
                    filter_subjects=[
                        f"tf.{roster.taskforce}.ch.{channel}.*" for channel in channels
                    ],
                ),
            )
        for member in roster.roster.members:
            if member.status == "active" and is_auditor(roster, member.agency_id):
                # The audit service's own consumer: every channel, acknowledged only once
                # the entry is committed to the log.
                await js.add_consumer(
                    stream_name(roster.taskforce),
                    ConsumerConfig(
                        durable_name=audit_durable_name(member.agency_id),
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=30,
                        max_deliver=-1,
                        filter_subjects=stream_subjects(roster.taskforce),
                    ),
                )
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


class Consumer:
    """An agency's durable pull consumer (or, with ``audit``, its audit service's)."""

    def __init__(self, conn: Connection, taskforce: str, agency: str, *, audit: bool = False):
        self.conn = conn
        self.taskforce = taskforce
        self.agency = agency
        self.durable = audit_durable_name(agency) if audit else durable_name(agency)
        self._sub: Any = None

    async def bind(self) -> None:
        try:
            self._sub = await self.conn.js.pull_subscribe_bind(
                self.durable,
                stream_name(self.taskforce),
                inbox_prefix=f"{inbox_prefix(self.agency)}.".encode(),
            )
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing=f"binding consumer {self.durable}") from None

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``timeout``."""
        if self._sub is None:
            await self.bind()
        try:
            messages = await self._sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, nats.js.errors.FetchTimeoutError, TimeoutError):
            return []
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing=f"fetching from consumer {self.durable}") from None
        return [
            Delivery(m.subject, bytes(m.data), int(m.metadata.num_delivered), m) for m in messages
        ]
