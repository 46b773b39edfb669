"""The key manager's loop: follow the roster, make epochs when due, publish their deliveries.

Owns: ``KeyManager`` (one key-manager agency on one broker): at each turn it looks at the
roster bucket (a newer roster is verified as the agents verify it, ``accept_roster``), asks
each epoch-mode channel's stream for its last sequence (the message budget), lets
``plan.plan`` say which channels need a new epoch, makes each key (32 random bytes), seals
its deliveries and persists both (``store``) before anything is published, then publishes
what is queued and removes it once JetStream acknowledged it. A broker that goes away leaves
the queue as it is: after reconnecting the same envelopes go out under the same
Nats-Msg-Id, and no second key is made for an epoch.

Logs say channel, epoch, reason and counts; never a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Final, TypeVar

import nats.js.errors
import structlog

from tfshare import transport
from tfshare.backoff import Backoff, sleep_or_stop
from tfshare.epochs import KEY_MANAGER_ROLE, DeliveryReason
from tfshare.errors import BrokerError, BrokerRefused, TfshareError, TrustError
from tfshare.keymanager.plan import (
    ReaderSet,
    Rekey,
    channel_readers,
    digest_of,
    epoch_channels,
    is_key_manager,
    plan,
    reader_sets,
    seal_deliveries,
)
from tfshare.keymanager.store import KeyManagerStore, KeyManagerStoreError, Pending
from tfshare.keys import Identity, Random
from tfshare.names import channel_subject, stream_name
from tfshare.roster import TrustedRoster
from tfshare.seal import Recipient, Sealed

log = structlog.get_logger("tfshare.keymanager")
T = TypeVar("T")

# Deliveries published in one pipelined round (a 10,000-reader re-key is 40 envelopes).
PUBLISH_CHUNK: Final = 64
# How long a stream's info may take; a refused request (no permission) only times out.
STREAM_INFO_TIMEOUT_S: Final = 2.0
# After a channel's stream could not be looked at, the message budget of that channel is not
# checked again for this long (the other reasons for a new epoch still are).
STREAM_INFO_RETRY_S: Final = 300.0


class _Refused(TimeoutError):
    """The broker refused the request (no permission): asking again will not help."""


async def _ask(conn: transport.Connection, subject: str, request: Awaitable[T]) -> T:
    """Await a JetStream API ``request`` on ``subject``. A request the broker refuses (no
    permission) is only answered by an asynchronous error: it is noticed as it arrives (a
    TimeoutError), not at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_INFO_TIMEOUT_S
    # nats-py reports the refused subject in lower case.
    refused_subject = subject.lower()
    seen = len(conn.errors)  # only a refusal of this request counts
    asked = asyncio.ensure_future(request)
    try:
        while not asked.done():
            refused = any(
                "permissions violation" in e and refused_subject in e for e in conn.errors[seen:]
            )
            if refused:
                raise _Refused
            if loop.time() > deadline:
                raise TimeoutError
            await asyncio.wait({asked}, timeout=0.02)
        return asked.result()
    finally:
        if not asked.done():
            asked.cancel()
            with contextlib.suppress(asyncio.CancelledError, *transport.NATS_ERRORS):
                await asked


async def _last_seq(conn: transport.Connection, stream: str) -> int:
    """The stream's last sequence."""
    info = await _ask(conn, f"stream.info.{stream}", conn.js.stream_info(stream))
    return int(info.state.last_seq)


async def _delivered_before(conn: transport.Connection, stream: str, subject: str) -> bool:
    """Whether ``stream`` keeps a message on ``subject`` (the key manager's own: a direct
    get of the last one, the only one its permissions let it read)."""
    try:
        await _ask(
            conn,
            f"direct.get.{stream}.{subject}",
            conn.js.get_last_msg(stream, subject, direct=True),
        )
    except nats.js.errors.NotFoundError:
        return False
    return True


def not_key_manager(roster: TrustedRoster, agency: str) -> TrustError:
    return TrustError(
        f"{agency!r} does not hold the role {KEY_MANAGER_ROLE} in roster seq {roster.seq}",
        hint=f"a coordinator gives it ('tfshare roster role ROSTER {agency} --roles "
        f"member,{KEY_MANAGER_ROLE}'), signs and publishes the roster; then run this with "
        "that roster",
    )


@dataclass
class KeyManagerStats:
    epochs: int = 0  # epochs made
    deliveries: int = 0  # delivery envelopes acknowledged by the broker
    refused: int = 0  # delivery envelopes the broker refused (set aside)
    rosters: int = 0  # newer rosters accepted
    rosters_refused: int = 0
    turns: int = 0  # looks at the roster and the streams completed


@dataclass
class KeyManager:
    """The key manager of one agency holding the role key-manager."""

    identity: Identity
    roster: TrustedRoster
    roster_bytes: bytes
    store: KeyManagerStore
    url: str
    clock: Callable[[], int]
    rng: Random = field(default=os.urandom, repr=False)
    # Verifies (anchor, rollback state), keeps and returns a roster from the bucket, as
    # ``Agent.accept_roster``; raises a TrustError for one that fails. None: not followed.
    accept_roster: Callable[[bytes], TrustedRoster] | None = None
    # How often the roster and the streams are looked at.
    every_s: float = 2.0
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    # Deliveries the broker refused are tried again after this pause (30 s, doubling to an
    # hour while they keep being refused).
    refused_backoff: Backoff = field(default_factory=lambda: Backoff(first=30.0, ceiling=3600.0))
    pause: Callable[[asyncio.Event, float], Awaitable[None]] = sleep_or_stop
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    js_domain: str | None = None
    stats: KeyManagerStats = field(default_factory=KeyManagerStats)
    # After a lost database without a backup (``keys serve --first-epoch N``): a channel
    # found delivered before (``lost_channels``) gets epoch N, not nothing. N must be above
    # every epoch the readers hold ('tfshare agent status' lists them), else they refuse it.
    first_epoch: int | None = None

    def __post_init__(self) -> None:
        self._seen_roster: bytes | None = None  # the last bucket roster refused
        self._no_stream_info: dict[str, float] = {}  # channel -> when to look again
        self._said: set[str] = set()  # conditions logged once (not every turn)
        self._readers: tuple[TrustedRoster, dict[str, ReaderSet]] | None = None
        self._lost: set[str] = set()  # channels whose deliveries predate this database
        self._looked: set[str] = set()  # channels looked at for earlier deliveries
        self._retry_refused_at: float | None = None  # loop time to retry what was refused
        self._retried = False  # set-aside deliveries were put back in the queue

    @property
    def agency(self) -> str:
        return self.identity.agency_id

    def reader_sets(self) -> dict[str, ReaderSet]:
        """The roster's readers per epoch channel: computed once per roster, not per look
        (20,000 readers on each of 256 channels)."""
        if self._readers is None or self._readers[0] is not self.roster:
            self._readers = (self.roster, reader_sets(self.roster))
        return self._readers[1]

    def check_role(self) -> None:
        """Refuse to run (TrustError, exit 6) unless this agency is an active key manager."""
        if not is_key_manager(self.roster, self.agency):
            raise not_key_manager(self.roster, self.agency)

    # -- making epochs (the plan, the key, the sealing, the store) ---------------------------

    def _due(self, last_seqs: dict[str, int], lost: Collection[str]) -> tuple[int, list[Rekey]]:
        now_ms = self.clock()
        current = {c: e.state for c, e in self.store.current().items()}
        for channel, state in current.items():
            # An epoch made while its stream could not be read counts from when it can.
            if state.start_seq is None and channel in last_seqs:
                self.store.set_start_seq(channel, state.epoch, last_seqs[channel])
        due = plan(
            self.roster, current, now_ms=now_ms, last_seqs=last_seqs, readers=self.reader_sets()
        )
        # A channel this key manager delivered keys on before, with no epoch stored: its
        # database was lost; an epoch 1 now would be refused by every reader. With
        # ``first_epoch`` the numbering goes on from there instead.
        kept: list[Rekey] = []
        for rekey in due:
            if rekey.channel in lost and rekey.channel not in current:
                if self.first_epoch is None:
                    continue
                log.warning(
                    "keymanager_state_resumed", channel=rekey.channel, epoch=self.first_epoch
                )
                kept.append(dataclasses.replace(rekey, epoch=self.first_epoch))
                continue
            kept.append(rekey)
        return now_ms, kept

    def make_epochs(self, last_seqs: dict[str, int], lost: Collection[str] = ()) -> list[Rekey]:
        """Make every epoch due now (none of the ``lost`` channels without a stored epoch);
        each is persisted with its deliveries, unpublished."""
        now_ms, due = self._due(last_seqs, lost)
        for rekey in due:
            key, first_seq = self._begin(rekey)
            sealed = self._seal(rekey, key, first_seq, now_ms)
            self._record(rekey, key, now_ms, last_seqs.get(rekey.channel), *sealed)
        return due

    async def make_epochs_off_loop(
        self, last_seqs: dict[str, int], lost: Collection[str] = ()
    ) -> list[Rekey]:
        """``make_epochs``, with the sealing (one X25519 per reader: seconds for a channel of
        20,000) in a worker thread, so the connection's pings are answered meanwhile. The
        database is used from this thread only (its connection is bound to it)."""
        now_ms, due = self._due(last_seqs, lost)
        for rekey in due:
            key, first_seq = self._begin(rekey)
            sealed = await asyncio.to_thread(self._seal, rekey, key, first_seq, now_ms)
            self._record(rekey, key, now_ms, last_seqs.get(rekey.channel), *sealed)
        return due

    def _begin(self, rekey: Rekey) -> tuple[bytes, int]:
        """The new key and the first sequence number of its deliveries."""
        count = -(-len(rekey.readers) // 256)
        return self.rng(32), self.store.reserve_seqs(rekey.channel, count)

    def _seal(
        self, rekey: Rekey, key: bytes, first_seq: int, now_ms: int
    ) -> tuple[bytes, list[Sealed]]:
        """The reader-set digest and the delivery envelopes (CPU only: no database)."""
        made_for = digest_of(rekey.readers)
        deliveries = seal_deliveries(
            identity=self.identity,
            roster=self.roster,
            channel=rekey.channel,
            epoch=rekey.epoch,
            key=key,
            starts_ms=now_ms,
            reason=rekey.reason,
            readers=rekey.readers,
            first_seq=first_seq,
            now_ms=now_ms,
            rng=self.rng,
            made_for=made_for,
        )
        return made_for, deliveries

    def _record(
        self,
        rekey: Rekey,
        key: bytes,
        now_ms: int,
        start_seq: int | None,
        made_for: bytes,
        deliveries: list[Sealed],
    ) -> None:
        self.store.record_epoch(
            channel=rekey.channel,
            epoch=rekey.epoch,
            key=key,
            nonce=self.rng(24),
            starts_ms=now_ms,
            reason=rekey.reason,
            start_seq=start_seq,
            roster_seq=self.roster.seq,
            readers=rekey.readers,
            readers_digest=made_for,
            subject=channel_subject(self.roster.taskforce, rekey.channel, self.agency),
            deliveries=deliveries,
        )
        self.stats.epochs += 1
        log.info(
            "epoch_created",
            channel=rekey.channel,
            epoch=rekey.epoch,
            reason=rekey.reason,
            readers=len(rekey.readers),
            envelopes=len(deliveries),
            roster_seq=self.roster.seq,
        )

    async def lost_channels(self, conn: transport.Connection) -> set[str]:
        """The epoch channels this key manager would make epoch 1 of (readers, no stored
        epoch) whose stream already holds a delivery of its own: its database was lost (a
        new machine, a wrong restore). Each is logged once (``keymanager_state_lost``); it
        gets no epoch from this process, the other channels are served. One direct get per
        channel, once: a channel found empty gets its epoch 1 at this turn."""
        stored = self.store.channels()
        sets = self.reader_sets()
        unknown: set[str] = set()  # not known this turn: no epoch 1 until it is
        for channel in epoch_channels(self.roster):
            if channel in stored or channel in self._lost or channel in self._looked:
                continue
            if not sets.get(channel):
                continue  # no epoch is made without readers: nothing to look for yet
            stream = stream_name(self.roster.taskforce, channel)
            subject = channel_subject(self.roster.taskforce, channel, self.agency)
            try:
                before = await _delivered_before(conn, stream, subject)
            except _Refused:
                # No permission (a broker configured before it was granted): the epoch is
                # made as before (a key manager that cannot look must still serve a new
                # channel), and the gap said once.
                self._once(
                    "keymanager_stream_unlookable",
                    channel=channel,
                    hint="the key manager needs $JS.API.DIRECT.GET on its own subject of "
                    "each epoch channel's stream ('tfshare broker up' grants it; provision "
                    "again for a new stream config) to notice a lost database",
                )
                self._looked.add(channel)
                continue
            except (TimeoutError, *transport.NATS_ERRORS) as exc:
                # A broker that did not answer: looked at again next turn, nothing made.
                log.warning(
                    "keymanager_stream_lookup_failed", channel=channel, error=type(exc).__name__
                )
                unknown.add(channel)
                continue
            self._looked.add(channel)
            if before:
                self._lost.add(channel)
                log.error(
                    "keymanager_state_lost",
                    channel=channel,
                    database=str(self.store.path),
                    hint="this key manager delivered epoch keys on this channel before, but "
                    "its database has no epoch of it: a new epoch 1 would be refused by every "
                    "reader (E_EPOCH). Stop it, restore keymanager.db from backup (the state "
                    "directory) and start it again; without a backup, start it with "
                    "--first-epoch N above every epoch the readers hold ('tfshare agent "
                    "status'). The other channels are served meanwhile",
                )
        return self._lost | unknown

    def queue_resend(self, channel: str, to: str) -> int:
        """Queue the current key of ``channel`` again for ``to`` (reason "resend"); returns
        the epoch. ``to`` must be an active reader of the channel now."""
        return queue_resend(
            self.identity, self.roster, self.store, channel, to, now_ms=self.clock(), rng=self.rng
        )

    # -- the broker -------------------------------------------------------------------------

    def retry_refused(self) -> int:
        """Put the deliveries the broker refused back in the queue once their pause is over
        (``refused_backoff``, growing while they keep being refused): a full per-sender quota
        gets room as old messages expire, an operator fixes permissions or limits, and the
        key manager must not need a restart to notice."""
        if self._retry_refused_at is None:
            return 0
        if asyncio.get_running_loop().time() < self._retry_refused_at:
            return 0
        self._retry_refused_at = None
        count = self.store.retry_refused()
        if count:
            self._retried = True
            log.info("epoch_deliveries_retried", count=count)
        return count

    def _set_aside(self, item: Pending, refused: BrokerRefused) -> None:
        self.store.refused(item.msg_id, refused.message)
        self.stats.refused += 1
        loop = asyncio.get_running_loop()
        if self._retry_refused_at is None:
            self._retry_refused_at = loop.time() + self.refused_backoff.next()
        retry_s = round(self._retry_refused_at - loop.time(), 1)
        if isinstance(refused, transport.SenderQuotaFull):
            log.error(
                "epoch_delivery_quota",
                channel=item.channel,
                epoch=item.epoch,
                retry_s=retry_s,
                reason=refused.message,
                hint="the channel's stream keeps no more messages from the key manager: "
                "provision the broker again with this tfshare (an epoch channel's quota "
                f"holds {transport.KEY_MANAGER_REKEYS_PER_MAX_AGE} re-keys of its readers) "
                "or raise --max-msgs-per-sender; tried again meanwhile",
            )
        else:
            log.error(
                "epoch_delivery_refused",
                channel=item.channel,
                epoch=item.epoch,
                retry_s=retry_s,
                reason=refused.message,
                hint=refused.hint,
            )

    async def flush(self, conn: transport.Connection) -> int:
        """Publish every queued delivery; each leaves the queue once acknowledged. A
        delivery the broker refuses (permissions, size, a full quota) is set aside, logged
        and tried again later (``retry_refused``); any other failure is raised (the rest
        stays queued for the next connection)."""
        sent = 0
        refused = 0
        queued = self.store.pending()
        for start in range(0, len(queued), PUBLISH_CHUNK):
            part = queued[start : start + PUBLISH_CHUNK]
            results = await transport.publish_many(
                conn, [(p.subject, p.envelope, p.msg_id.hex()) for p in part]
            )
            done: list[bytes] = []
            own: dict[tuple[str, int], int] = {}  # messages each epoch added to its stream
            lost: BrokerError | None = None
            for item, result in zip(part, results, strict=True):
                if isinstance(result, BrokerRefused) and not isinstance(
                    result, transport.BrokerAuthFailed
                ):
                    self._set_aside(item, result)
                    refused += 1
                elif isinstance(result, BrokerError):
                    lost = lost or result
                else:
                    done.append(item.msg_id)
                    if not result[1]:
                        own[item.channel, item.epoch] = own.get((item.channel, item.epoch), 0) + 1
                    log.info(
                        "epoch_delivered",
                        channel=item.channel,
                        epoch=item.epoch,
                        msg_id=item.msg_id.hex(),
                        stream_seq=result[0],
                        duplicate=result[1],
                    )
            if done:
                self.store.published(*done, own=own)
                sent += len(done)
                self.stats.deliveries += len(done)
            if lost is not None:
                raise lost
        if self._retried and not refused and sent:
            # What was set aside went out: the next refusal starts from a short pause again.
            self._retried = False
            self.refused_backoff.reset()
        return sent

    async def last_seqs(self, conn: transport.Connection) -> dict[str, int]:
        """Each epoch-mode channel's stream's last sequence, where it can be read."""
        seqs: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        for channel in epoch_channels(self.roster):
            if self._no_stream_info.get(channel, 0.0) > loop.time():
                continue
            name = stream_name(self.roster.taskforce, channel)
            try:
                seqs[channel] = await _last_seq(conn, name)
            except (TimeoutError, *transport.NATS_ERRORS) as exc:
                self._no_stream_info[channel] = loop.time() + STREAM_INFO_RETRY_S
                log.warning(
                    "epoch_stream_unreadable",
                    channel=channel,
                    error=type(exc).__name__,
                    retry_s=STREAM_INFO_RETRY_S,
                    hint="the message budget of this channel is not checked meanwhile; the "
                    "key manager needs $JS.API.STREAM.INFO on the channel's stream",
                )
        return seqs

    async def follow_roster(self, conn: transport.Connection) -> bool:
        """Use a newer roster from the bucket once ``accept_roster`` verified it; True if
        the roster changed."""
        if self.accept_roster is None:
            return False
        try:
            data = await transport.get_roster(conn, self.roster.taskforce)
        except TrustError as exc:  # what the bucket points to is malformed or missing
            self._once("keymanager_roster_unreadable", code=exc.code, reason=exc.message)
            return False
        self._said.discard("keymanager_roster_unreadable")
        if data is None or data in (self.roster_bytes, self._seen_roster):
            return False
        try:
            roster = self.accept_roster(data)
        except TrustError as exc:  # a verdict on these bytes: not looked at again
            self._seen_roster = data
            self.stats.rosters_refused += 1
            log.warning("keymanager_roster_refused", code=exc.code, reason=exc.message)
            return False
        except TfshareError as exc:  # it could not be kept (a full disk): tried again
            log.error("roster_update_failed", code=exc.code, reason=exc.message)
            return False
        previous, self.roster, self.roster_bytes = self.roster.seq, roster, data
        self.stats.rosters += 1
        log.info("keymanager_roster_updated", seq=roster.seq, previous_seq=previous)
        return True

    def _once(self, what: str, **fields: object) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning(what, **fields)

    async def turn(self, conn: transport.Connection) -> None:
        """One look: the roster, what is queued, the streams, new epochs, their delivery."""
        await self.follow_roster(conn)
        self.retry_refused()
        await self.flush(conn)  # what an outage left queued goes first
        if not is_key_manager(self.roster, self.agency):
            self._once(
                "keymanager_not_authorized",
                roster_seq=self.roster.seq,
                hint=not_key_manager(self.roster, self.agency).hint,
            )
            return
        if self.roster.expired(self.clock()):
            self._once("keymanager_roster_expired", roster_seq=self.roster.seq)
            return
        self._said -= {"keymanager_not_authorized", "keymanager_roster_expired"}
        seqs = await self.last_seqs(conn)
        lost = await self.lost_channels(conn)
        if await self.make_epochs_off_loop(seqs, lost):
            await self.flush(conn)
        self.stats.turns += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; reconnect with backoff while the broker is away.
        Refuses to start (TrustError) unless this agency holds the role key-manager."""
        self.check_role()
        retried = self.store.retry_refused()
        if retried:
            log.info("epoch_deliveries_retried", count=retried)
        backoff = self.reconnect_backoff
        log.info("keymanager_started", agency=self.agency, roster_seq=self.roster.seq)
        others = sorted(self.roster.key_managers - {self.agency})
        if others:
            log.warning(
                "keymanager_not_alone",
                others=others,
                hint="run one key manager per task force: two make different keys for the "
                "same epoch, and the agents refuse the second (E_EPOCH)",
            )
        while not stop.is_set():
            try:
                conn = await transport.connect(
                    self.url,
                    nkey_seed=self.identity.nats_seed_encoded(),
                    agency=self.agency,
                    name=f"tfshare-keys-{self.agency}",
                    reconnect=False,
                    tls=self.tls,
                    js_domain=self.js_domain,
                )
            except BrokerError as exc:
                retry_s = backoff.next()
                log.warning("broker_unavailable", reason=exc.message, retry_s=round(retry_s, 3))
                await self.pause(stop, retry_s)
                continue
            log.info("keymanager_connected", url=self.url)
            worked = False
            try:
                while not stop.is_set():
                    await self.turn(conn)
                    worked = True
                    await self.pause(stop, self.every_s)
            except BrokerError as exc:
                log.warning("broker_lost", reason=exc.message)
            except KeyManagerStoreError as exc:
                log.error("keymanager_store_failed", reason=exc.message, hint=exc.hint)
            finally:
                await conn.close()
            if not stop.is_set():
                # Back at once (after the first pause) from a connection that worked;
                # longer each time from one that keeps failing before its first turn.
                if worked:
                    backoff.reset()
                await self.pause(stop, backoff.next())
        log.info("keymanager_stopped", **self.stats.__dict__)


def queue_resend(
    identity: Identity,
    roster: TrustedRoster,
    store: KeyManagerStore,
    channel: str,
    to: str,
    *,
    now_ms: int,
    rng: Random,
) -> int:
    """Seal the current key of ``channel`` once more to ``to`` (reason "resend") and queue
    it; returns the epoch. Only to an active reader of the channel with its current key."""
    if not is_key_manager(roster, identity.agency_id):
        raise not_key_manager(roster, identity.agency_id)
    current = store.current().get(channel)
    if current is None:
        raise TrustError(
            f"no epoch of channel {channel!r} was made yet",
            hint="the key manager makes epoch 1 when it runs ('tfshare keys serve') and the "
            "channel allows epoch mode",
        )
    readers: list[Recipient] = (
        [r for r in channel_readers(roster, channel) if r.agency_id == to]
        if channel in roster.channels
        else []
    )
    if not readers:
        raise TrustError(
            f"{to!r} is not an active reader of channel {channel!r} in roster seq {roster.seq}",
            hint="an epoch key goes only to the channel's readers; grant read access first "
            "(the key manager then makes a new epoch for them)",
        )
    if not any((r.agency_id, r.kid) in current.state.readers for r in readers):
        # A joiner (or a reader whose key changed) must not open what was sealed under the
        # epoch before it joined: re-keying on "a reader added" exists for this.
        raise TrustError(
            f"epoch {current.state.epoch} of {channel!r} was not made for {to!r} (it joined, "
            "or its key changed, since)",
            hint="'tfshare keys serve' makes a new epoch for the channel's current readers at "
            "its next turn; no resend is needed",
        )
    if current.state.readers_digest is None:
        raise TrustError(
            f"epoch {current.state.epoch} of {channel!r} was made before key deliveries named "
            "their readers",
            hint="'tfshare keys serve' replaces it with a new epoch for the current readers "
            "at its next turn: no resend is needed",
        )
    reason: DeliveryReason = "resend"
    deliveries = seal_deliveries(
        identity=identity,
        roster=roster,
        channel=channel,
        epoch=current.state.epoch,
        key=current.key,
        starts_ms=current.state.starts_ms,
        reason=reason,
        readers=readers,
        first_seq=store.reserve_seqs(channel, 1),
        now_ms=now_ms,
        rng=rng,
        made_for=current.state.readers_digest,
    )
    store.queue_deliveries(
        channel,
        current.state.epoch,
        channel_subject(roster.taskforce, channel, identity.agency_id),
        deliveries,
    )
    log.info("epoch_resend_queued", channel=channel, epoch=current.state.epoch, to=to)
    return current.state.epoch
