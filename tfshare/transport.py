"""NATS / JetStream adapter: the only module that imports nats.

Owns: connecting as an agency (its NATS nkey, its private inbox prefix) or as the broker
administrator; provisioning the task force's stream and each reader's durable pull consumer;
publishing an envelope with its ``Nats-Msg-Id`` (JetStream drops a repeat inside the
duplicate window); fetching and acknowledging. Every nats error becomes a ``BrokerError``
(exit 4) with a hint, so callers never see nats exceptions.

Never: look inside envelopes; this layer moves opaque bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
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
    ROSTER_KEY,
    durable_name,
    inbox_prefix,
    readable_channels,
    roster_bucket,
    schema_bucket,
    schema_key,
    stream_name,
    stream_subjects,
)
from tfshare.envelope import MAX_ENVELOPE
from tfshare.errors import BrokerError, BrokerRefused
from tfshare.roster import TrustedRoster

NATS_ERRORS: Final = (nats.errors.Error, OSError, TimeoutError)
DAY_S: Final = 24 * 3600


def broker_error(exc: BaseException, *, doing: str) -> BrokerError:
    text = str(exc) or type(exc).__name__
    if "permissions violation" in text or "Authorization" in text:
        return BrokerError(
            f"the broker refused {doing}: permission denied",
            hint="check the agency's NATS user in the roster and the broker configuration",
        )
    return BrokerError(
        f"broker unavailable while {doing} ({type(exc).__name__})",
        hint="check the server address and that the broker is running; tfshare retries",
    )


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

    @property
    def js(self) -> Any:
        return self.client.jetstream()

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
        "error_cb": _record,
    }
    if agency is not None:
        options["inbox_prefix"] = inbox_prefix(agency).encode()
    try:
        # nats-py can keep trying a dead server well past connect_timeout: bound it here.
        client = await asyncio.wait_for(nats.connect(**options), timeout=connect_timeout * 2)
    except (TimeoutError, *NATS_ERRORS) as exc:
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


async def publish(
    conn: Connection, subject: str, data: bytes, *, msg_id: str, timeout: float = 5.0
) -> tuple[int, bool]:
    """Publish one envelope and wait for JetStream's ack: (stream sequence, duplicate?)."""
    try:
        ack = await conn.js.publish(subject, data, timeout=timeout, headers={"Nats-Msg-Id": msg_id})
    except NATS_ERRORS as exc:
        if conn.refused(subject):
            raise BrokerRefused(
                f"the broker refused publishing on {subject}: permission denied",
                hint="the roster does not let this agency write that channel (or the broker's "
                "configuration is older than the roster)",
            ) from None
        raise broker_error(exc, doing=f"publishing on {subject}") from None
    return int(ack.seq), bool(ack.duplicate)


async def publish_many(
    conn: Connection, items: Sequence[tuple[str, bytes, str]], *, timeout: float = 5.0
) -> list[tuple[int, bool] | BrokerError]:
    """Publish (subject, envelope, msg_id) items pipelined -- all in flight at once -- and
    wait for JetStream's acks. One result per item, in order: (stream sequence, duplicate?)
    or the ``BrokerError`` (``BrokerRefused`` for a permission denial) for that item."""
    if not items:
        return []
    js = conn.js  # one context: it owns the futures of its pending publishes
    futures: list[asyncio.Future[Any]] = []
    try:
        for subject, data, msg_id in items:
            futures.append(
                await js.publish_async(
                    subject, data, wait_stall=timeout, headers={"Nats-Msg-Id": msg_id}
                )
            )
    except NATS_ERRORS as exc:
        for future in futures:
            future.cancel()
        raise broker_error(exc, doing="publishing") from None
    await asyncio.wait(futures, timeout=timeout)
    results: list[tuple[int, bool] | BrokerError] = []
    for (subject, _, _), future in zip(items, futures, strict=False):
        if not future.done():
            future.cancel()
            failure: BaseException = TimeoutError()
        elif future.exception() is not None:
            failure = future.exception() or TimeoutError()
        else:
            ack = future.result()
            results.append((int(ack.seq), bool(ack.duplicate)))
            continue
        if conn.refused(subject):
            results.append(
                BrokerRefused(
                    f"the broker refused publishing on {subject}: permission denied",
                    hint="the roster does not let this agency write that channel (or the "
                    "broker's configuration is older than the roster)",
                )
            )
        else:
            results.append(broker_error(failure, doing=f"publishing on {subject}"))
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
    """An agency's durable pull consumer."""

    def __init__(self, conn: Connection, taskforce: str, agency: str) -> None:
        self.conn = conn
        self.taskforce = taskforce
        self.agency = agency
        self._sub: Any = None

    async def bind(self) -> None:
        try:
            self._sub = await self.conn.js.pull_subscribe_bind(
                durable_name(self.agency),
                stream_name(self.taskforce),
                inbox_prefix=f"{inbox_prefix(self.agency)}.".encode(),
            )
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing="binding the consumer") from None

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages; an empty list when none arrived within ``timeout``."""
        if self._sub is None:
            await self.bind()
        try:
            messages = await self._sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, nats.js.errors.FetchTimeoutError, TimeoutError):
            return []
        except NATS_ERRORS as exc:
            raise broker_error(exc, doing="fetching messages") from None
        return [
            Delivery(m.subject, bytes(m.data), int(m.metadata.num_delivered), m) for m in messages
        ]
