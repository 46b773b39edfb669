"""The asyncio agent: moves envelopes between the broker, the receive pipeline and SQLite.

Owns: the consume loop (fetch, receive, persist, then acknowledge -- never the other way
round), the outbox flush (envelopes sealed while the broker was away), reconnection with
backoff, and a clean stop (finish the batch in hand and the one fetched ahead, close the
connection).

Speed: the pull request for the next batch goes out before the current one is checked, so
the broker's round trip overlaps our work; each batch is persisted in one transaction. The
checks run on the event loop's thread: on CPython with the GIL, running ``Receiver.open`` on
worker threads was measured slower (the GIL hand-offs cost more than the C calls free); the
open/settle split in ``tfshare.protocol`` is where a process pool would go.

Invariants:
- a message is acknowledged only after its outcome is persisted: delivered into the inbox
  (with its replay entry, in one transaction), counted as a duplicate, or quarantined;
- a failure to persist is never acknowledged: the message is redelivered later
  (``persist_failed``; a full disk, say: delivered once there is space again);
- one bad message never stops the agent: it is quarantined with its code and the flow goes on;
- one message that cannot be processed (a bug, an input nothing foresaw) never holds up the
  others: each message of a batch is settled in a savepoint of its own, so the others are
  persisted and acknowledged; it is retried, and after ``max_attempts`` deliveries (JetStream's
  count) quarantined with E_INTERNAL and acknowledged. The store being unavailable is not
  such a failure: then nothing is acknowledged and the agent waits, as above;
- receipts only for envelopes whose sender signature verified; unsigned junk (anyone with NATS
  credentials can publish it) is counted and logged in aggregate, never one line each;
- nothing makes it spin: a broker that refuses its NATS credentials (``broker_auth_failed``,
  not an outage: the broker's configuration must change) and a broker that keeps failing
  once connected (a missing stream, say) are retried with a growing pause;
- a revoked agency's agent stops (``AgencyRevoked``, exit 6) as soon as the roster it holds
  says so: at start, on every roster update, and when the broker refuses its credentials
  (then the roster file is read again: once refused, the agent cannot read the bucket);
- epoch keys (envelope mode 2): a delivered key is kept, sealed under the state key, in the
  same savepoint as the replay record of the message that brought it, and never reaches the
  inbox or the feed; keys are loaded from the state at start, and those past their retention
  deleted at start and daily. A message naming an epoch newer than any key held is not
  quarantined at once: its key's delivery may be behind it, so it is asked for again
  (``nak`` with a delay) and quarantined as E_EPOCH only after ``epoch_wait_ms``. What waits
  is bounded, so that waiting messages never fill the consumer (``max_ack_pending``): at
  most ``awaiting_per_channel`` per channel; an epoch more than one above the newest held,
  and a message older than the wait on a channel of which no key is held (the backlog of a
  reader that joined later), are quarantined at once. Nothing early is lost: when a new key
  of a channel is kept, the channel's E_EPOCH quarantine is received again in the same
  savepoint, and what now opens is delivered and leaves the quarantine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import structlog

from tfshare import transport
from tfshare.backoff import Backoff, sleep_or_stop
from tfshare.envelope import Envelope, Header
from tfshare.epoch_retention import epoch_keys_to_delete
from tfshare.epochs import EPOCH_KEY_SCHEMA, EpochKey, EpochKeyDelivery, EpochKeyring
from tfshare.errors import BrokerError, BrokerRefused, RejectCode, TfshareError, TrustError
from tfshare.keys import Identity
from tfshare.messages import SchemaBook
from tfshare.names import channel_subject, parse_channel_subject, readable_channels
from tfshare.protocol import (
    RECEIPT_SCHEMA,
    RECEIPTS_CHANNEL,
    Clock,
    Delivered,
    Opening,
    Outcome,
    Receiver,
    Rejection,
    log_event,
)
from tfshare.roster import TrustedRoster
from tfshare.rotation import rotation_not_applied
from tfshare.seal import Duplicate, ReceivePolicy, envelope_hash, removed_from, seal
from tfshare.store import (
    QUARANTINE_KEEP_BYTES,
    QUARANTINE_TOTAL_BYTES,
    Quarantined,
    StateStore,
    StoreError,
)
from tfshare.urls import plain_remote

log = structlog.get_logger("tfshare.agent")
Logger = Any  # structlog's loggers: the lazy proxy above, or one bound from it

PLAIN_REMOTE_HINT = "use tls://HOST:PORT for a broker on another machine"

Sidecar = Callable[[transport.Connection, asyncio.Event], Awaitable[None]]

# Unknown schemas looked up in the registry bucket per batch; the rest of a batch's unknown
# names wait for a later batch (a member naming a made-up schema in every message costs one
# lookup each, not one per message of a batch).
SCHEMA_FETCHES_PER_BATCH = 4
ERRORS_KEPT = 10  # the latest troubles ``agent status`` shows
# A message naming an epoch newer than any key held waits this long for its key (the key
# manager delivers each new key within seconds of starting the epoch), then is quarantined.
EPOCH_WAIT_MS: Final = 5 * 60 * 1000
EPOCH_RETRY_S: Final = 2.0  # ... asked for again this often meanwhile
EPOCH_PRUNE_EVERY_S: Final = 24 * 3600.0  # keys past their retention are deleted this often
SECRETS_EVERY_S: Final = 24 * 3600.0  # retired secrets past their grace are destroyed this often
AWAITING_KEPT: Final = 100_000  # messages remembered as waiting for their epoch key
# At most this many messages of one channel wait for their epoch key at a time, well under
# JetStream's max_ack_pending (256): each waiting message is unacknowledged, and a consumer
# holding max_ack_pending of them is given nothing more, not even the key they wait for.
AWAITING_PER_CHANNEL: Final = 32


class _AwaitingKey:
    """``_settle``'s answer for a message whose epoch key has not arrived yet: not
    persisted, not acknowledged, asked for again after ``epoch_retry_s``."""


AWAITING_KEY: Final = _AwaitingKey()


class _OpenFault(Exception):
    """The receive checks could not finish for one message (``Opening.fault``): no verdict
    on it, so it is retried like any other failure of its processing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


"""A job beside the consumer: runs on the agent's connection until the event is set."""


class AgencyRevoked(TrustError):
    """The roster the agent holds revoked this agency's key or removed the agency: the agent
    stops (exit 6) rather than knock on the broker forever."""


# Logged with ``broker_auth_failed``. Re-admitting the agency is never the advice: a
# revocation would be undone.
AUTH_REFUSED_HINT = (
    "the broker no longer accepts this agency's NATS key. If the agency was revoked, that is "
    "final and the agent stops as soon as the roster at --roster says so (ask the "
    "coordinators for it); never reconfigure the broker to let a revoked agency in. "
    "Otherwise the broker's configuration is older than the roster: its operator "
    "regenerates it from the current roster"
)


@dataclass
class AgentStats:
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0  # every rejection, junk included
    unverified: int = 0  # of which the sender's signature did not verify (junk)
    skipped: int = 0
    published: int = 0
    failed: int = 0  # processing failures (each retried; quarantined after max_attempts)
    epoch_keys: int = 0  # key deliveries received (tf.epoch-key/1), new keys and resends
    awaiting_key: int = 0  # times a message was put back to wait for its epoch key


@dataclass
class AgentHealth:
    """What ``agent status`` shows: the connection, the latest troubles, the last message.
    Reasons only (event names and broker errors), never content or secrets."""

    connected: bool = False
    connected_since_ms: int | None = None
    reconnects: int = 0
    last_stored_ms: int | None = None
    last_sender: str | None = None
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))

    def trouble(self, event: str, reason: str, now_ms: int) -> None:
        when = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.errors.append(f"{when} {event}: {reason}")


@dataclass
class Agent:
    """One agency's agent on one broker."""

    identity: Identity
    roster: TrustedRoster
    schemas: SchemaBook
    store: StateStore
    url: str
    clock: Clock
    policy: ReceivePolicy = field(default_factory=ReceivePolicy)
    batch: int = 32
    fetch_timeout: float = 0.5
    on_outcome: Callable[[Outcome], None] | None = None
    # Returns the roster now in force (verified against the anchor and the rollback state);
    # polled so that a roster update (say, a revocation) takes effect on the running agent.
    reload_roster: Callable[[], TrustedRoster] | None = None
    # Verifies (against the anchor and rollback state), persists and returns a roster fetched
    # from the broker's roster bucket; when set, the agent follows the bucket.
    accept_roster: Callable[[bytes], TrustedRoster] | None = None
    # Fetches a schema version (by name) from the broker's registry bucket, verifies and
    # caches it, and returns the updated schema book; None if the broker has no such record.
    fetch_schema: Callable[[transport.Connection, str], Awaitable[SchemaBook | None]] | None = None
    reload_every_s: float = 2.0
    # Send a signed tf.receipt/1 to the coordinators for every message processed (audit.md).
    receipts: bool = False
    # A schema the registry bucket did not have is looked up again after this long.
    schema_retry_s: float = 60.0
    # A batch that could not be persisted (disk full) comes back after this long.
    persist_retry_s: float = 5.0
    # Credentials the broker does not know: tried again after this long, doubling up to max.
    auth_retry_s: float = 1.0
    auth_retry_max_s: float = 30.0
    # A message whose processing fails (not the store: a bug, an unforeseen input) is tried
    # this many times in all (JetStream's delivery count), then quarantined and acknowledged.
    max_attempts: int = 5
    failed_retry_s: float = 1.0
    # What the quarantine keeps of a rejected envelope, and of all of them together.
    quarantine_keep_bytes: int = QUARANTINE_KEEP_BYTES
    quarantine_total_bytes: int = QUARANTINE_TOTAL_BYTES
    # Unsigned junk is logged as one summary line at most this often.
    junk_log_every_s: float = 10.0
    # Jobs that run beside the consumer on the agent's connection while it is up (the
    # witness of the audit log, say): each gets the connection and an event set when the
    # connection ends. A job that fails is logged and started again with the next connection;
    # it never takes the consumer down.
    sidecars: list[Sidecar] = field(default_factory=list)
    sidecar_grace_s: float = 1.0
    stats: AgentStats = field(default_factory=AgentStats)
    health: AgentHealth = field(default_factory=AgentHealth)
    # The agency's TLS settings for tls:// brokers (built once, from --tls-ca and the rest).
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    # The hub's JetStream domain when ``url`` is the agency's leaf node (profile's
    # jetstream_domain): the consumers are bound and fetched through it.
    js_domain: str | None = None
    # The epoch keys held (mode 2), shared with whoever seals for this agency in the same
    # process (the desk). Those kept in the state database are added at construction.
    epochs: EpochKeyring = field(default_factory=EpochKeyring)
    # A message naming an epoch newer than any held: asked for again every
    # ``epoch_retry_s``, quarantined (E_EPOCH) once it waited ``epoch_wait_ms``.
    epoch_wait_ms: int = EPOCH_WAIT_MS
    epoch_retry_s: float = EPOCH_RETRY_S
    # At most this many of one channel wait at a time (the rest are quarantined at once, and
    # received again when the channel's next key arrives): keep it under max_ack_pending.
    awaiting_per_channel: int = AWAITING_PER_CHANNEL
    epoch_prune_every_s: float = EPOCH_PRUNE_EVERY_S
    # Drops the retired secrets whose grace period ended by the time given from the key
    # file and returns the identity without them (``Agency.destroy_expired_secrets``);
    # called at start and every ``secrets_every_s``. None: the caller holds no key file.
    destroy_expired: Callable[[int], Identity] | None = None
    secrets_every_s: float = SECRETS_EVERY_S

    def __post_init__(self) -> None:
        # The connection and consumer in use, for the desk (None while the broker is away),
        # and the one lock under which the outbox is sent: the agent is its only sender.
        self.conn: transport.Connection | None = None
        self.consumer: transport.Consumer | None = None
        self._outbox_lock = asyncio.Lock()
        self._next_reload = 0.0
        self._seen_roster: bytes | None = None
        self._schema_attempts: dict[str, float] = {}
        self._batch_fetches: set[str] = set()  # names deferred for lookup in this batch
        self._batch_keys = 0  # epoch keys held when the batch in hand was opened
        self._fetched = False  # this connection has fetched from the consumer at least once
        self._junk: Counter[str] = Counter()  # unverified rejections not yet logged, by code
        self._junk_logged_at = float("-inf")
        # env_hash -> (when this agent first put it back to wait for its epoch key, its
        # channel), and how many wait per channel.
        self._awaiting: dict[bytes, tuple[int, str]] = {}
        self._awaiting_on: Counter[str] = Counter()
        # Quarantined messages delivered in this batch once their channel's key came
        # (``_release_quarantined``): announced with the batch.
        self._released: list[tuple[str, Outcome]] = []
        self._next_prune = float("-inf")
        self._next_secrets = float("-inf")
        # The received_ms of the last envelope quarantined: each next one is later, so the
        # quarantine reads back in arrival order (stream order), ties included.
        self._quarantined_ms = 0
        self.load_epoch_keys()
        self._use(self.roster)

    def load_epoch_keys(self) -> None:
        """Add the epoch keys kept in the state database to the keyring (opened with the
        state key); a row that does not open is counted and logged, never used."""
        keys, unreadable = self.store.epoch_keys(
            self.roster.taskforce, state_key=self.identity.state_key
        )
        for key in keys:
            if self.epochs.get(key.channel, key.epoch) is None:
                self.epochs.add(key)
        if unreadable:
            log.error(
                "epoch_keys_unreadable",
                count=unreadable,
                hint="the state database holds epoch keys sealed under another key (or "
                "altered); ask the key manager to resend them ('tfshare keys resend')",
            )

    def destroy_expired_secrets(self, *, force: bool = False) -> bool:
        """Destroy the retired secrets whose grace period is over (``destroy_expired``), at
        most every ``secrets_every_s`` unless ``force``; the receiver uses the identity
        without them from then on. Returns whether any went. Only the number is logged."""
        now = time.monotonic()
        if self.destroy_expired is None or (not force and now < self._next_secrets):
            return False
        self._next_secrets = now + self.secrets_every_s
        identity = self.destroy_expired(self.clock())
        # A key the roster still lists is kept past its grace: say so in 'agent status' too.
        late = rotation_not_applied(identity, self.roster, self.clock())
        if late is not None:
            self.health.trouble("rotation_not_applied", late.reason, self.clock())
        if identity is self.identity:
            return False
        self.identity = identity
        self._use(self.roster)
        log.info("expired_secrets_destroyed", enc_keys_held=len(identity.enc_kids))
        return True

    def prune_epoch_keys(self, *, force: bool = False) -> int:
        """Delete the epoch keys past their retention (``epoch_keys_to_delete``: superseded
        ones, and those of channels this agency no longer reads), from the state database
        first and then from memory; at most every ``epoch_prune_every_s`` unless ``force``.
        Returns how many went."""
        now = time.monotonic()
        if not force and now < self._next_prune:
            return 0
        self._next_prune = now + self.epoch_prune_every_s
        gone = epoch_keys_to_delete(self.epochs, self.roster, self.identity.agency_id, self.clock())
        if not gone:
            return 0
        self.store.epoch_keys_delete(self.roster.taskforce, gone)
        self.epochs.remove(gone)
        for key in gone:
            log.info("epoch_key_deleted", channel=key.channel, epoch=key.epoch)
        return len(gone)

    def check_membership(self) -> None:
        """Raise ``AgencyRevoked`` if the roster in force revoked this agency (its key) or
        removed it; logged as ``agency_revoked``."""
        refusal = removed_from(self.roster, self.identity.agency_id, self.identity.kid_sig)
        if refusal is None:
            return
        log.error("agency_revoked", roster_seq=self.roster.seq, reason=refusal.message)
        raise AgencyRevoked(refusal.message, hint=refusal.hint)

    def _use(self, roster: TrustedRoster) -> None:
        self.roster = roster
        self.receiver = Receiver(
            identity=self.identity,
            roster=self.roster,
            replay=self.store.replay(keep_inbox=True, clock=self.clock),
            schemas=self.schemas,
            clock=self.clock,
            policy=self.policy,
            epochs=self.epochs,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; reconnect with backoff while the broker is away."""
        backoff = Backoff(first=0.2, ceiling=5.0)
        # Refused credentials: the operator must act; 1 s, 2 s, ... (jitter small, so the
        # logged pause is the one taken within 10 %).
        auth_backoff = Backoff(first=self.auth_retry_s, ceiling=self.auth_retry_max_s, jitter=0.1)
        agency = self.identity.agency_id
        self.check_membership()
        self._warn_plain_remote()
        self.prune_epoch_keys(force=True)
        self.destroy_expired_secrets(force=True)
        connected_once = False
        while not stop.is_set():
            try:
                conn = await transport.connect(
                    self.url,
                    nkey_seed=self.identity.nats_seed_encoded(),
                    agency=agency,
                    name=f"tfshare-agent-{agency}",
                    reconnect=False,
                    tls=self.tls,
                    js_domain=self.js_domain,
                )
            except transport.BrokerAuthFailed as exc:
                # Not an outage: the broker has no user for our NATS key until its
                # configuration is regenerated from the roster -- or ever, if this agency
                # was revoked: the roster file may say so by now (the bucket is out of
                # reach). Otherwise keep running, slowly.
                self._reload_after_refusal()
                self.health.trouble("broker_auth_failed", exc.message, self.clock())
                pause = auth_backoff.next()
                log.error(
                    "broker_auth_failed",
                    url=self.url,
                    reason=exc.message,
                    retry_s=auth_backoff.current,
                    was_connected=connected_once,  # then the broker dropped our NATS user
                    hint=AUTH_REFUSED_HINT,
                )
                await sleep_or_stop(stop, pause)
                continue
            except BrokerError as exc:
                self.health.trouble("broker_unavailable", exc.message, self.clock())
                pause = backoff.next()
                log.warning("broker_unavailable", url=self.url, retry_s=backoff.current)
                await sleep_or_stop(stop, pause)
                continue
            auth_backoff.reset()
            if connected_once:
                self.health.reconnects += 1
            connected_once = True
            log.info("agent_connected", agency=agency, url=self.url)
            if not await self._session(conn, stop):
                # A connection that was consuming is re-established at once; one that keeps
                # failing before its first fetch (a missing stream, say) waits longer each time.
                if self._fetched:
                    backoff.reset()
                await sleep_or_stop(stop, backoff.next())
        self._log_junk(force=True)
        log.info("agent_stopped", agency=agency, **self.stats.__dict__)

    def _warn_plain_remote(self) -> None:
        """A ``nats://`` URL of another machine carries the agency's traffic in clear text
        (envelopes are sealed, but subjects, sizes and timing are not): said in the log and
        in ``agent status`` (issue 14: plain connections are for loopback only)."""
        for url in plain_remote(self.url):
            reason = f"{url} is a plain (unencrypted) connection to another machine"
            log.warning("plain_remote_server", url=url, hint=PLAIN_REMOTE_HINT)
            self.health.trouble(
                "plain_remote_server", f"{reason}; {PLAIN_REMOTE_HINT}", self.clock()
            )

    async def _session(self, conn: transport.Connection, stop: asyncio.Event) -> bool:
        """Consume on one connection until ``stop`` (True) or until it fails (False)."""
        self._fetched = False
        self.conn = conn
        self.health.connected, self.health.connected_since_ms = True, self.clock()
        try:
            await self._consume(conn, stop)
            return True
        except AgencyRevoked:
            raise
        except BrokerError as exc:
            self.health.trouble("broker_lost", exc.message, self.clock())
            log.warning("broker_lost", reason=exc.message)
        except StoreError as exc:
            # The outbox or roster bookkeeping could not be written (disk full, say).
            self.health.trouble("persist_failed", exc.message, self.clock())
            log.error("persist_failed", reason=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Unacknowledged messages come back: log, reconnect after a pause, go on.
            self.health.trouble("agent_error", type(exc).__name__, self.clock())
            log.error("agent_error", error=type(exc).__name__)
        finally:
            self.conn = self.consumer = None
            self.health.connected, self.health.connected_since_ms = False, None
            await conn.close()
        return False

    async def _consume(self, conn: transport.Connection, stop: asyncio.Event) -> None:
        agency = self.identity.agency_id
        # The channels of the roster in force: a roster update that grants one is read at
        # the consumer's next refresh, without a reconnect.
        consumer = transport.Consumer(
            conn,
            self.roster.taskforce,
            agency,
            channels=lambda: readable_channels(self.roster, agency),
        )
        await consumer.bind()
        self.consumer = consumer
        ahead: asyncio.Task[list[transport.Delivery]] | None = None
        ended = asyncio.Event()
        jobs = [asyncio.create_task(_run_sidecar(job, conn, ended)) for job in self.sidecars]
        try:
            while not stop.is_set():
                if self.accept_roster is not None:
                    await self.follow_roster_bucket(conn)
                else:
                    self.maybe_reload_roster()
                self.prune_epoch_keys()
                self.destroy_expired_secrets()
                await self.flush_outbox(conn)
                if ahead is None:
                    deliveries = await consumer.fetch(self.batch, self.fetch_timeout)
                else:
                    deliveries, ahead = await ahead, None
                self._fetched = True
                if deliveries:
                    # A busy stream: fetch the next batch while this one is handled.
                    ahead = asyncio.create_task(consumer.fetch(self.batch, self.fetch_timeout))
                    # Let it send the pull request before we get busy: one turn of the loop
                    # queues the request, the next lets nats-py's flusher write it out.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    await self.handle_batch(deliveries, conn)
            if ahead is not None:
                # Stopping: what was fetched ahead is handled now, not left to be redelivered
                # after the broker's ack wait.
                deliveries, ahead = await ahead, None
                if deliveries:
                    await self.handle_batch(deliveries, conn)
        finally:
            if ahead is not None:  # the connection failed: unacknowledged, so redelivered
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            # Pulls still in flight are cancelled now: left to the connection's close, what
            # they were fetching would come back only after the broker's ack wait.
            await consumer.close()
            ended.set()
            if jobs:
                # A job told that the connection ends may finish on its own (a witness round
                # in flight writes its held checkpoint); one that does not is cancelled.
                _, unfinished = await asyncio.wait(jobs, timeout=self.sidecar_grace_s)
                for job in unfinished:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)

    async def follow_roster_bucket(self, conn: transport.Connection) -> None:
        """Apply a newer roster published in the broker's bucket (verified first)."""
        if self.accept_roster is None or time.monotonic() < self._next_reload:
            return
        self._next_reload = time.monotonic() + self.reload_every_s
        data = await transport.get_roster(conn, self.roster.taskforce)
        if data is None or data == self._seen_roster:
            return
        try:
            roster = self.accept_roster(data)
        except TrustError as exc:  # a verdict on this roster: not looked at again
            self._seen_roster = data
            log.warning("roster_update_refused", code=exc.code, reason=exc.message)
            return
        except TfshareError as exc:
            # It could not be kept (a full disk, say): not a verdict, so tried again at the
            # next look -- a revocation in it must not wait for a restart.
            event = "persist_failed" if isinstance(exc, StoreError) else "roster_update_failed"
            log.error(event, what="roster", reason=exc.message)
            return
        self._seen_roster = data
        if roster.hash != self.roster.hash:
            log.info("roster_updated", seq=roster.seq, previous_seq=self.roster.seq)
            self._use(roster)
            self.check_membership()

    def _reload_after_refusal(self) -> None:
        """After the broker refused our credentials: the roster file, read again (another
        process may have updated it); a newer one is used, and stops a revoked agent."""
        if self.reload_roster is None:
            return
        try:
            roster = self.reload_roster()
        except TfshareError as exc:
            log.warning("roster_update_refused", code=exc.code, reason=exc.message)
            return
        if roster.hash != self.roster.hash:
            log.info("roster_updated", seq=roster.seq, previous_seq=self.roster.seq)
            self._use(roster)
        self.check_membership()

    def maybe_reload_roster(self) -> None:
        """Switch to a newer verified roster; a roster that fails verification is logged and
        changes nothing (the agent keeps the one it trusts)."""
        if self.reload_roster is None or time.monotonic() < self._next_reload:
            return
        self._next_reload = time.monotonic() + self.reload_every_s
        try:
            roster = self.reload_roster()
        except StoreError as exc:
            log.error("persist_failed", what="roster", reason=exc.message)
            return
        except TfshareError as exc:
            log.warning("roster_update_refused", code=exc.code, reason=exc.message)
            return
        if roster.hash != self.roster.hash:
            log.info("roster_updated", seq=roster.seq, previous_seq=self.roster.seq)
            self._use(roster)
            self.check_membership()

    async def handle(self, delivery: transport.Delivery) -> Outcome | None:
        """Receive one message, persist its outcome, then acknowledge it."""
        outcomes = await self.handle_batch([delivery])
        return outcomes[0] if outcomes else None

    async def handle_batch(
        self, deliveries: list[transport.Delivery], conn: transport.Connection | None = None
    ) -> list[Outcome]:
        """Receive a batch, persist every outcome in one transaction (one fsync), then
        acknowledge them. If the store fails nothing is acknowledged: JetStream redelivers.

        Each message is settled in a savepoint of its own: one whose processing fails for
        another reason is undone alone, retried (not acknowledged), and quarantined with
        E_INTERNAL once it has been delivered ``max_attempts`` times (``_failed``).

        A message naming a schema this agent does not know yet is checked first against the
        broker's registry bucket (registry.md): if the record is there and verifies, the
        schema is cached and the message received again."""
        outcomes: list[Outcome] = []
        handled: list[transport.Delivery] = []
        retry: list[transport.Delivery] = []
        awaiting: list[transport.Delivery] = []
        deferred: dict[str, list[transport.Delivery]] = {}
        receiver = self.receiver  # the roster may change while the batch is opened
        now_ms = self.clock()
        self._batch_fetches = set()
        self._released = []
        # A key delivered earlier in the batch opens the messages after it that named its
        # epoch: they were opened before it was settled (``_settle`` opens them again).
        self._batch_keys = len(self.epochs)
        # Receiver.open never raises: every input ends in an outcome with a code.
        openings = [receiver.open(d.data, d.subject, now_ms) for d in deliveries]
        try:
            with self.store.transaction():
                pending = list(zip(deliveries, openings, strict=True))
                while pending:
                    keys_held = len(self.epochs)
                    parked: list[tuple[transport.Delivery, Opening]] = []
                    for delivery, opening in pending:
                        result = self._settle_one(receiver, delivery, opening, now_ms, conn)
                        if result is None:
                            retry.append(delivery)
                        elif isinstance(result, _AwaitingKey):
                            parked.append((delivery, opening))
                        elif isinstance(result, str):
                            # Not persisted, not acknowledged: fetched below, then redelivered.
                            deferred.setdefault(result, []).append(delivery)
                        else:
                            handled.append(delivery)
                            outcomes.append(result)
                    # A key delivered later in the batch than a message under its epoch:
                    # that message is settled again now rather than after a redelivery.
                    pending = parked if len(self.epochs) != keys_held else []
                    if not pending:
                        awaiting = [parked_delivery for parked_delivery, _ in parked]
        except (sqlite3.Error, StoreError) as exc:
            # Rolled back whole: nothing of the batch is stored, so nothing is acknowledged.
            log.error(
                "persist_failed",
                error=type(exc).__name__,
                reason=exc.message if isinstance(exc, StoreError) else str(exc),
                messages=len(deliveries),
                retry_s=self.persist_retry_s,
            )
            self._released = []  # rolled back with the rest
            for delivery in deliveries:
                await delivery.nak(delay=self.persist_retry_s)
            return []
        for name, waiting in deferred.items():
            await self._fetch_schema(conn, name)
            for delivery in waiting:
                await delivery.nak()  # comes back now, with the schema known (or not: then
                # it is quarantined, as the name is not looked up again for a while)
        for delivery in retry:
            await delivery.nak(delay=self.failed_retry_s)
        for delivery in awaiting:
            self.stats.awaiting_key += 1
            await delivery.nak(delay=self.epoch_retry_s)
        self._announce(handled, outcomes, now_ms)
        self._announce_released(now_ms)
        for delivery in handled:
            await delivery.ack()
        self._log_junk()
        return outcomes

    def _settle_one(
        self,
        receiver: Receiver,
        delivery: transport.Delivery,
        opening: Opening,
        now_ms: int,
        conn: transport.Connection | None,
    ) -> Outcome | str | _AwaitingKey | None:
        """``_settle`` in a savepoint of its own; None if it failed and is to be retried."""
        released = len(self._released)
        try:
            with self.store.savepoint():
                return self._settle(receiver, delivery, opening, now_ms, conn)
        except (StoreError, asyncio.CancelledError):
            raise  # the store is unavailable: the whole batch waits
        except sqlite3.IntegrityError as exc:
            # A constraint this message's rows broke: a bug about this message.
            del self._released[released:]  # undone with the savepoint
            return self._failed(delivery, opening, exc)
        except sqlite3.Error:
            # Every other SQLite error is the store's (full, damaged, a missing table):
            # acknowledging the message as failed could lose a valid one.
            raise
        except Exception as exc:
            del self._released[released:]
            return self._failed(delivery, opening, exc)

    def _announce(
        self, handled: list[transport.Delivery], outcomes: list[Outcome], now_ms: int
    ) -> None:
        """Count, log and announce the stored outcomes of a batch, before their acks: one
        that fails (the node went) brings the message back as a duplicate, announced to no
        one, so announcing after the ack lost the rest of the batch for the feed."""
        # One logger for the batch: each call on structlog's lazy proxy (``log``) assembles
        # a logger of its own, a few microseconds per delivered message even with info off.
        # Bound here, not once for all, so a new configuration applies from the next batch.
        batch_log = log.bind()
        for delivery, outcome in zip(handled, outcomes, strict=True):
            self._count_and_log(delivery, outcome, batch_log)
            if is_key_delivery(outcome):
                continue  # kept as a key; no message for the inbox, the feed or the web
            if isinstance(outcome, Delivered):
                self.health.last_stored_ms = now_ms
                self.health.last_sender = outcome.message.sender
            if self.on_outcome is not None and isinstance(outcome, Delivered | Rejection):
                self.on_outcome(outcome)

    def _settle(
        self,
        receiver: Receiver,
        delivery: transport.Delivery,
        opening: Opening,
        now_ms: int,
        conn: transport.Connection | None,
    ) -> Outcome | str | _AwaitingKey:
        """One message's bookkeeping, inside its savepoint: the replay check and record (and
        a delivered epoch key with it), the receipt, the quarantine. Returns the outcome, the
        name of a schema to fetch first, or ``AWAITING_KEY``."""
        if opening.fault is not None:
            raise _OpenFault(opening.fault)  # retried, then E_INTERNAL (``_failed``)
        if _epoch_ahead(opening) and len(self.epochs) != self._batch_keys:
            opening = receiver.open(delivery.data, delivery.subject, now_ms)
            if opening.fault is not None:
                raise _OpenFault(opening.fault)
        outcome = receiver.settle(delivery.data, opening)
        if isinstance(outcome, Rejection) and outcome.epoch_ahead:
            if self._still_awaiting(delivery, outcome, now_ms):
                return AWAITING_KEY
            outcome = dataclasses.replace(
                outcome,
                reason=f"{outcome.reason}; its key did not arrive within "
                f"{self.epoch_wait_ms / 1000:g} s",
            )
        elif self._awaiting:
            self._stop_awaiting(_env_hash(outcome))
        if isinstance(outcome, Delivered) and outcome.message.schema == EPOCH_KEY_SCHEMA:
            self._keep_epoch_key(outcome, now_ms)
            record = outcome.message.record
            assert isinstance(record, EpochKeyDelivery)
            self._release_quarantined(receiver, record.channel, now_ms)
        name = outcome.schema if isinstance(outcome, Rejection) else None
        if (
            name is not None
            and conn is not None
            and self.fetch_schema is not None
            and self._may_fetch_schema(name)
        ):
            return name
        self._queue_receipt(delivery, outcome, now_ms)
        if isinstance(outcome, Rejection) and outcome.code is not RejectCode.E_NOT_RECIPIENT:
            self._quarantine(delivery, outcome)
        return outcome

    def _keep_epoch_key(self, outcome: Delivered, now_ms: int) -> None:
        """Keep a delivered epoch key in the state database, sealed, in the savepoint that
        holds its message's replay record. From the record, not only ``new_epoch_key``: a
        key the keyring took from an attempt whose savepoint was undone is kept now."""
        record = outcome.message.record
        assert isinstance(record, EpochKeyDelivery)
        self.store.epoch_key_add(
            self.roster.taskforce,
            EpochKey.of(record),
            state_key=self.identity.state_key,
            received_ms=now_ms,
        )

    def _still_awaiting(
        self, delivery: transport.Delivery, rejection: Rejection, now_ms: int
    ) -> bool:
        """Whether a message naming an epoch newer than any held goes on waiting for its key
        (True), or is quarantined as E_EPOCH now (False): once it waited ``epoch_wait_ms``;
        at once when ``awaiting_per_channel`` of its channel wait already, when its epoch is
        more than one above the newest held (the key manager delivers e+1 before anyone can
        seal under it: no key is on its way), or when no key of its channel is held and it
        is older than the wait (the backlog of a reader that joined later, whose own key is
        behind it). Each waiting message is unacknowledged, and a consumer holding
        max_ack_pending of them is given nothing more: the bound keeps the channel moving.
        A message quarantined early is received again when its channel's key arrives.

        The wait is measured from when this agent first met it (or, after a restart, from
        its delivery count at ``epoch_retry_s`` per delivery), not from when the broker
        stored it: after days offline, the stream's time would be the agent's absence, and
        the key may be just behind the message in the backlog."""
        waiting = self._awaiting.get(rejection.env_hash)
        if waiting is None:
            claimed = _claimed_epoch(delivery.data)
            channel, epoch, ts_ms = claimed if claimed is not None else (delivery.subject, 0, 0)
            newest = self.epochs.newest(channel)
            if self._awaiting_on[channel] >= self.awaiting_per_channel:
                why = f"{self.awaiting_per_channel} messages of the channel wait already"
            elif newest is not None and epoch > newest.epoch + 1:
                why = f"its epoch is more than one above the newest held ({newest.epoch})"
            elif newest is None and now_ms - ts_ms >= self.epoch_wait_ms:
                why = "no key of its channel is held and it is older than the wait"
            else:
                why = None
            if why is not None:
                log.info(
                    "epoch_key_not_awaited",
                    sender=rejection.sender,
                    msg_id=rejection.msg_id.hex() if rejection.msg_id else None,
                    subject=delivery.subject,
                    why=why,
                )
                return False
            if len(self._awaiting) >= AWAITING_KEPT:
                self._stop_awaiting(next(iter(self._awaiting)))
            waiting = self._awaiting[rejection.env_hash] = (now_ms, channel)
            self._awaiting_on[channel] += 1
            log.info(
                "epoch_key_awaited",
                sender=rejection.sender,
                msg_id=rejection.msg_id.hex() if rejection.msg_id else None,
                subject=delivery.subject,
                reason=rejection.reason,
                retry_s=self.epoch_retry_s,
                wait_s=self.epoch_wait_ms / 1000,
            )
        by_count = int(max(delivery.delivered - 1, 0) * self.epoch_retry_s * 1000)
        if max(now_ms - waiting[0], by_count) < self.epoch_wait_ms:
            return True
        self._stop_awaiting(rejection.env_hash)
        return False

    def _stop_awaiting(self, env_hash: bytes) -> None:
        waiting = self._awaiting.pop(env_hash, None)
        if waiting is not None:
            channel = waiting[1]
            self._awaiting_on[channel] -= 1
            if self._awaiting_on[channel] <= 0:
                del self._awaiting_on[channel]

    def _release_quarantined(self, receiver: Receiver, channel: str, now_ms: int) -> None:
        """After a key of ``channel`` was kept (in the same savepoint): receive again the
        channel's quarantined E_EPOCH envelopes; each that is now delivered (or was already:
        a duplicate) leaves the quarantine, the others stay as they were. A truncated
        envelope (the quarantine's size cap) cannot be received again and stays.

        Each envelope has a savepoint of its own: one that cannot be processed (a fault no
        check foresaw) stays quarantined and is logged, and never takes the key just kept,
        or the other envelopes, with it. A storage failure still fails the whole batch."""
        prefix = channel_subject(self.roster.taskforce, channel, "")
        for item in self.store.quarantined_on(RejectCode.E_EPOCH.value, prefix):
            if item.truncated or item.subject is None:
                continue
            # Only what a key now held may open (a flood naming epoch 999 stays put, unopened).
            claimed = _claimed_epoch(item.envelope)
            if claimed is None or self.epochs.get(claimed[0], claimed[1]) is None:
                continue
            released = len(self._released)
            try:
                with self.store.savepoint():
                    self._release_one(receiver, item, now_ms)
            except StoreError:
                raise
            except Exception as exc:
                del self._released[released:]
                self.stats.failed += 1
                log.error(
                    "quarantine_release_failed",
                    env_hash=item.env_hash.hex(),
                    error=type(exc).__name__,
                )

    def _release_one(self, receiver: Receiver, item: Quarantined, now_ms: int) -> None:
        """One quarantined envelope received again (see ``_release_quarantined``)."""
        assert item.subject is not None
        opening = receiver.open(item.envelope, item.subject, now_ms)
        if opening.fault is not None:
            return  # no verdict: it stays quarantined
        outcome = receiver.settle(item.envelope, opening)
        if isinstance(outcome, Rejection):
            if not outcome.epoch_ahead:
                # Its key is held and it still does not open: what it really is (a forged
                # or equivocating envelope, a revoked sender) replaces E_EPOCH, so it is
                # not opened again at every later key of the channel.
                self.store.quarantine_relabel(item.env_hash, outcome.code.value, outcome.reason)
            return
        if isinstance(outcome, Delivered) and is_key_delivery(outcome):
            self._keep_epoch_key(outcome, now_ms)
        self.store.quarantine_release(item.env_hash)
        self._queue_receipt_on(item.subject, outcome, now_ms)
        self._released.append((item.subject, outcome))
        log.info(
            "quarantine_released",
            subject=item.subject,
            env_hash=item.env_hash.hex(),
            outcome="duplicate" if isinstance(outcome, Duplicate) else "delivered",
        )

    def _announce_released(self, now_ms: int) -> None:
        """Count, log and announce what ``_release_quarantined`` delivered in this batch."""
        released, self._released = self._released, []
        for subject, outcome in released:
            self._count_and_log_on(subject, 1, outcome)
            if is_key_delivery(outcome):
                continue
            if isinstance(outcome, Delivered):
                self.health.last_stored_ms = now_ms
                self.health.last_sender = outcome.message.sender
                if self.on_outcome is not None:
                    self.on_outcome(outcome)

    def _failed(
        self, delivery: transport.Delivery, opening: Opening, exc: Exception
    ) -> Rejection | None:
        """A message whose processing failed (its savepoint undone): None while it has
        attempts left (it is retried), else its E_INTERNAL rejection, quarantined (so it is
        acknowledged and never comes back). Only the exception's type is logged."""
        self.stats.failed += 1
        error = exc.name if isinstance(exc, _OpenFault) else type(exc).__name__
        claimed = opening.result
        sender = claimed.sender
        msg_id = claimed.msg_id
        env_hash = envelope_hash(delivery.data)
        fields: dict[str, object] = {
            "error": error,
            "attempt": delivery.delivered,
            "max_attempts": self.max_attempts,
            "subject": delivery.subject,
            "env_hash": env_hash.hex(),
        }
        if delivery.delivered < self.max_attempts:
            log.error("processing_failed", retry_s=self.failed_retry_s, **fields)
            return None
        rejection = Rejection(
            RejectCode.E_INTERNAL,
            f"processing failed {delivery.delivered} times ({error})",
            env_hash,
            sender,
            msg_id,
            verified=opening.replay_key is not None,
        )
        try:
            with self.store.savepoint():
                self._quarantine(delivery, rejection)
        except StoreError:
            raise
        except Exception as again:
            # Even the quarantine fails for this message: it is acknowledged all the same
            # (bounded attempts), and this line is all that is left of it.
            log.error("quarantine_failed", quarantine_error=type(again).__name__, **fields)
            return rejection
        log.error("processing_failed_quarantined", code=rejection.code.value, **fields)
        return rejection

    def _quarantine(self, delivery: transport.Delivery, rejection: Rejection) -> None:
        received_ms = self._quarantined_ms = max(self.clock(), self._quarantined_ms + 1)
        self.store.quarantine(
            Quarantined(
                env_hash=rejection.env_hash,
                code=rejection.code.value,
                reason=rejection.reason,
                sender=rejection.sender,
                msg_id=rejection.msg_id,
                subject=delivery.subject,
                received_ms=received_ms,
                envelope=delivery.data,
                size=len(delivery.data),
            ),
            keep_bytes=self.quarantine_keep_bytes,
            total_bytes=self.quarantine_total_bytes,
            # A message waiting for its epoch key is received again from the quarantine
            # when the key comes (``_release_quarantined``): only a whole envelope can be.
            whole=rejection.epoch_ahead,
        )

    def _log_junk(self, *, force: bool = False) -> None:
        """One line for the unsigned junk rejected since the last one, at most every
        ``junk_log_every_s``: a flood of junk must not become a flood of log lines."""
        if not self._junk:
            return
        now = time.monotonic()
        if not force and now - self._junk_logged_at < self.junk_log_every_s:
            return
        self._junk_logged_at = now
        log.warning(
            "unverified_envelopes_rejected",
            count=sum(self._junk.values()),
            codes=dict(self._junk),
            total=self.stats.unverified,
        )
        self._junk.clear()

    def _queue_receipt(self, delivery: transport.Delivery, outcome: Outcome, now_ms: int) -> None:
        """Seal a receipt for a processed message into the outbox, in the batch's transaction
        (so it is sent exactly once, and only for an outcome that was stored). Receipts go to
        the readers of the receipts channel: the coordinators."""
        self._queue_receipt_on(delivery.subject, outcome, now_ms)

    def _queue_receipt_on(self, subject: str, outcome: Outcome, now_ms: int) -> None:
        if not self.receipts:
            return
        parsed = parse_channel_subject(subject)
        if parsed is None or parsed.channel == RECEIPTS_CHANNEL:
            return  # no receipts for receipts
        if isinstance(outcome, Delivered):
            message = outcome.message
            words: dict[str, str] = {
                "msg_id": message.msg_id.hex(),
                "env_hash": message.env_hash.hex(),
                "outcome": "accepted",
            }
        elif (
            isinstance(outcome, Rejection)
            and outcome.verified  # never for junk: its msg_id and sender are only claims
            and outcome.code is not RejectCode.E_NOT_RECIPIENT
            and outcome.msg_id is not None
        ):
            words = {
                "msg_id": outcome.msg_id.hex(),
                "env_hash": outcome.env_hash.hex(),
                "outcome": "rejected",
                "code": outcome.code.value,
            }
        else:
            return  # a duplicate was receipted the first time; junk and strangers' messages never
        roster = self.roster
        schema = self.schemas.lookup(RECEIPT_SCHEMA)
        agency = self.identity.agency_id
        if schema is None or agency not in roster.writers.get(RECEIPTS_CHANNEL, ()):
            return
        words["received"] = (
            dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        try:
            body = schema.to_body(schema.from_json(json.dumps(words).encode()))
            sealed = seal(
                identity=self.identity,
                roster=roster,
                channel=RECEIPTS_CHANNEL,
                to=None,
                schema=schema,
                body=body,
                seq=self.store.next_seq(RECEIPTS_CHANNEL),
                now_ms=now_ms,
                rng=os.urandom,
                epochs=self.epochs,
            )
        except TfshareError as exc:
            # A receipt that cannot be sealed (say, the roster expired for sending) must not
            # keep the message itself from being stored.
            log.warning("receipt_not_sent", code=exc.code, reason=exc.message)
            return
        subject = channel_subject(roster.taskforce, RECEIPTS_CHANNEL, agency)
        self.store.outbox_add(sealed.msg_id, subject, sealed.data, now_ms)

    def _may_fetch_schema(self, name: str) -> bool:
        """Whether to look ``name`` up in the registry bucket before settling its message:
        not if it was looked up within ``schema_retry_s``, nor beyond the batch's share of
        lookups (then it is quarantined as E_SCHEMA like any unknown schema)."""
        if name in self._batch_fetches:
            return True
        last = self._schema_attempts.get(name)
        if last is not None and time.monotonic() - last < self.schema_retry_s:
            return False
        if len(self._batch_fetches) >= SCHEMA_FETCHES_PER_BATCH:
            return False
        self._batch_fetches.add(name)
        return True

    async def _fetch_schema(self, conn: transport.Connection | None, name: str) -> None:
        now = time.monotonic()
        # Forget lookups older than the retry pause: the table stays as small as the names
        # looked up in the last ``schema_retry_s``, whatever names members make up.
        for stale in [
            n for n, t in self._schema_attempts.items() if now - t >= self.schema_retry_s
        ]:
            del self._schema_attempts[stale]
        self._schema_attempts[name] = now
        if conn is None or self.fetch_schema is None:
            return
        try:
            book = await self.fetch_schema(conn, name)
        except TfshareError as exc:
            log.warning("schema_fetch_failed", code=exc.code, reason=exc.message)
            return
        if book is not None:
            log.info("schema_fetched", schema=name)
            self.schemas = book
            self._use(self.roster)

    def _count_and_log(
        self, delivery: transport.Delivery, outcome: Outcome, logger: Logger = log
    ) -> None:
        self._count_and_log_on(delivery.subject, delivery.delivered, outcome, logger)

    def _count_and_log_on(
        self, subject: str, delivered: int, outcome: Outcome, logger: Logger = log
    ) -> None:
        if isinstance(outcome, Delivered) and is_key_delivery(outcome):
            record = outcome.message.record
            assert isinstance(record, EpochKeyDelivery)
            self.stats.epoch_keys += 1
            # Which key, never the key itself.
            logger.info(
                "epoch_key_received",
                channel=record.channel,
                epoch=record.epoch,
                starts_ms=record.starts_ms,
                reason=record.reason,
                sender=outcome.message.sender,
                msg_id=outcome.message.msg_id.hex(),
                new=outcome.new_epoch_key is not None,
            )
            return
        if isinstance(outcome, Delivered):
            self.stats.delivered += 1
            # The one line of every delivered message: its fields are built only if it is
            # written (at info, not at the usual warning).
            if _enabled(logger, logging.INFO):
                event, fields = log_event(outcome)
                logger.info(event, **fields)
            return
        event, fields = log_event(outcome)
        if isinstance(outcome, Rejection) and outcome.code is RejectCode.E_NOT_RECIPIENT:
            self.stats.skipped += 1
            logger.debug("envelope_not_for_us", **fields)
        elif isinstance(outcome, Rejection) and not outcome.verified:
            self.stats.rejected += 1
            self.stats.unverified += 1
            self._junk[outcome.code.value] += 1  # logged in aggregate (_log_junk)
        elif isinstance(outcome, Rejection):
            self.stats.rejected += 1
            logger.warning(event, subject=subject, delivered=delivered, **fields)
        elif isinstance(outcome, Duplicate):
            self.stats.duplicates += 1
            logger.info(event, delivered=delivered, **fields)

    async def send_outbox_now(self) -> bool:
        """Send the outbox at once on the agent's connection (the desk calls this right after
        queueing a message); False if the broker is away (it stays queued for later)."""
        conn = self.conn
        if conn is None:
            return False
        await self.flush_outbox(conn)
        return True

    async def flush_outbox(self, conn: transport.Connection, chunk: int = 256) -> int:
        """Publish envelopes queued while the broker was away, pipelined; each leaves the
        outbox only after JetStream acknowledged it (a repeat is dropped by its Nats-Msg-Id).
        A refused envelope is set aside so it does not block the others. One flush at a
        time: the consumer loop and the desk both call it."""
        async with self._outbox_lock:
            return await self._flush_outbox(conn, chunk)

    async def _flush_outbox(self, conn: transport.Connection, chunk: int) -> int:
        queued = self.store.outbox()
        sent = 0
        for start in range(0, len(queued), chunk):
            part = queued[start : start + chunk]
            results = await transport.publish_many(
                conn, [(subject, data, msg_id.hex()) for msg_id, subject, data in part]
            )
            done: list[bytes] = []
            lost: BrokerError | None = None
            for (msg_id, subject, _), result in zip(part, results, strict=True):
                if isinstance(result, BrokerRefused) and not isinstance(
                    result,
                    transport.BrokerAuthFailed,  # about us, not about this message
                ):
                    self.store.outbox_refused(msg_id, result.message)
                    log.error(
                        "outbox_refused",
                        msg_id=msg_id.hex(),
                        subject=subject,
                        reason=result.message,
                    )
                elif isinstance(result, BrokerError):
                    lost = lost or result  # stays queued; tried again after reconnecting
                else:
                    done.append(msg_id)
                    log.info("outbox_delivered", msg_id=msg_id.hex(), subject=subject)
            if done:
                self.store.outbox_done(*done)
            sent += len(done)
            self.stats.published += len(done)
            if lost is not None:
                raise lost
        return sent


def _enabled(logger: Logger, level: int) -> bool:
    """Whether ``logger`` writes at ``level``: structlog's filtering loggers say so
    (``is_enabled_for``); any other kind is taken to write everything."""
    is_enabled_for = getattr(logger, "is_enabled_for", None)
    return True if is_enabled_for is None else bool(is_enabled_for(level))


def is_key_delivery(outcome: Outcome) -> bool:
    """A delivered ``tf.epoch-key/1`` message: a key kept, never a message shown."""
    return isinstance(outcome, Delivered) and outcome.message.schema == EPOCH_KEY_SCHEMA


def _epoch_ahead(opening: Opening) -> bool:
    return isinstance(opening.result, Rejection) and opening.result.epoch_ahead


_claimed_envelope: Final = msgspec.msgpack.Decoder(Envelope)
_claimed_header: Final = msgspec.msgpack.Decoder(Header)


def _claimed_epoch(data: bytes) -> tuple[str, int, int] | None:
    """(channel, epoch, ts_ms) of an envelope's header (signed: only asked of a message whose
    signature verified), or None if it does not decode."""
    try:
        header = _claimed_header.decode(_claimed_envelope.decode(data).hdr)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return header.channel, int(header.epoch), int(header.ts_ms)


def _env_hash(outcome: Outcome) -> bytes:
    return outcome.message.env_hash if isinstance(outcome, Delivered) else outcome.env_hash


async def _run_sidecar(job: Sidecar, conn: transport.Connection, ended: asyncio.Event) -> None:
    try:
        await job(conn, ended)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a failing job must not take the consumer down
        name = getattr(job, "__name__", type(job).__name__)
        log.error("sidecar_failed", job=name, error=type(exc).__name__)
