"""What the agency's desk does, in the running agent's process.

Owns: the ``Desk`` - the one holder of the unlocked key, the inbox, the outbox and the feed
while the agent runs. The CLI (through ``server``) and the web inbox call its methods; each
answer is an ``api`` struct. A message the agent stores is pushed to every subscriber at once
(the agent already decrypted it to check it: no second key use, no polling).

The outbox has one owner: a publish through the desk seals the message into the outbox (the
same transaction as the sent list, ``live.seal_and_keep``) and asks the agent to send it on
its own connection under its outbox lock. With the broker away it is queued at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import structlog

from tfshare import msgref, transport
from tfshare.agent import Agent, is_key_delivery
from tfshare.desk import api
from tfshare.desk.views import iso, message_view, quarantine_rows, read_view
from tfshare.envelope import Envelope, Header, Ref
from tfshare.epochs import EpochKeyring
from tfshare.errors import BrokerError, BrokerRefused, RejectCode, Rejected, UsageError
from tfshare.protocol import Delivered, Outcome
from tfshare.roster import Revocation
from tfshare.store import InboxItem
from tfshare.workflows import live
from tfshare.workflows.audit import disclosure_bytes
from tfshare.workflows.schemas import resolve
from tfshare.workflows.witness import held_path, load_held


class LoginIssuer(Protocol):
    """The web inbox, as the desk sees it: where it listens, and one-time login links."""

    @property
    def url(self) -> str: ...

    def login_link(self) -> api.LoginLink: ...


log = structlog.get_logger("tfshare.desk")

VIEWS_CACHED = 5_000  # decrypted messages kept for the web inbox's pages
FEED_QUEUE = 10_000  # items a slow subscriber may fall behind before it is dropped
# ... and bytes (the items' msgpack size): 10 000 items of a member's 450 KiB bodies would be
# 4.5 GB held in the agent for one `listen` suspended with Ctrl-Z.
FEED_QUEUE_BYTES = 64 * 1024 * 1024
_sizer = msgspec.msgpack.Encoder()


@dataclass(eq=False)  # each subscription is itself: hashed by identity, kept in a set
class Subscription:
    """One subscriber's queue of feed items (``Desk.subscribe``), with the bytes they hold."""

    queue: asyncio.Queue[api.FeedItem | None] = field(
        default_factory=lambda: asyncio.Queue(FEED_QUEUE)
    )
    held: int = 0  # bytes of the items waiting in ``queue``
    dropped: bool = False  # let go for falling too far behind (not: the desk closed)
    _sizes: collections.deque[int] = field(default_factory=collections.deque)

    def offer(self, item: api.FeedItem, size: int) -> bool:
        """Queue ``item``; False (nothing queued) if the subscriber is too far behind."""
        if self.held + size > FEED_QUEUE_BYTES and self._sizes:
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        self._sizes.append(size)
        self.held += size
        return True

    def end(self) -> None:
        """End the feed: what waits is dropped, the reader sees the end next."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self._sizes.clear()
        self.held = 0
        self.queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[api.FeedItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[api.FeedItem]:
        while True:
            item = await self.queue.get()
            if item is None:  # dropped (too slow) or the desk closed
                return
            if self._sizes:
                self.held -= self._sizes.popleft()
            yield item


@dataclass
class Desk:
    """The agency's desk: the agent, its agency (key unlocked once), and the feed."""

    agency: live.Agency
    agent: Agent
    clock: Callable[[], int]
    started_ms: int = 0
    web: LoginIssuer | None = None  # the web inbox, when it runs
    _subscribers: set[Subscription] = field(default_factory=set)
    _backlog: dict[str, int] = field(default_factory=dict)
    # Messages already decrypted and verified, by (msg_id, sender key id): the web inbox
    # lists and filters on decrypted fields at every page load, and opening each stored
    # message again each time would hold the agent's loop (receiving, the feeds) for
    # ~0.25 ms per message. Bounded; in the agent's memory only, as the key is.
    _views: OrderedDict[tuple[bytes, bytes], api.Message] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.started_ms = self.started_ms or self.clock()
        # The agent tells the desk of each outcome once it is stored and acknowledged.
        self.agent.on_outcome = self._on_outcome

    @property
    def agency_id(self) -> str:
        return self.agent.identity.agency_id

    @property
    def taskforce(self) -> str:
        return self.agency.roster.taskforce

    # -- the feed -----------------------------------------------------------------------

    def _on_outcome(self, outcome: Outcome) -> None:
        if not isinstance(outcome, Delivered) or not self._subscribers:
            return
        if is_key_delivery(outcome):
            return  # an epoch key is kept by the agent, never shown
        opened = outcome.message
        warning = _warning(self.agency.roster.revoked.get(opened.sender_kid))
        item = api.FeedItem(message_view(opened, received_ms=self.clock(), warning=warning))
        size = len(_sizer.encode(item))
        for sub in list(self._subscribers):
            if not sub.offer(item, size):
                # A subscriber that does not read is let go rather than held in memory; it
                # sees the end of its feed and can reconnect (and list the inbox).
                self._subscribers.discard(sub)
                log.warning("feed_subscriber_dropped", queued=sub.queue.qsize(), held=sub.held)
                sub.dropped = True
                sub.end()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """The feed: every message stored from now on, the moment it is stored."""
        sub = Subscription()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        for sub in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        self._subscribers.clear()

    # -- reading --------------------------------------------------------------------------

    def status(self) -> api.Status:
        agent, health, store = self.agent, self.agent.health, self.agency.store
        inbox_count, (quarantine_count, _) = store.inbox_count(), store.quarantine_usage()
        witness = None
        held = load_held(held_path(store.path.parent), self.taskforce)
        if held is not None:
            witness = f"checkpoint of size {held[1].size}"
        return api.Status(
            agency=self.agency_id,
            taskforce=self.taskforce,
            pid=os.getpid(),
            started=iso(self.started_ms),
            connected=health.connected,
            server=agent.url,
            connected_since=(iso(health.connected_since_ms) if health.connected_since_ms else None),
            reconnects=health.reconnects,
            roster_seq=self.agency.roster.seq,
            backlog=[api.ChannelBacklog(c, n) for c, n in sorted(self._backlog.items())],
            outbox=len(store.outbox()),
            outbox_refused=len(store.outbox_refusals()),
            inbox=inbox_count,
            quarantine=quarantine_count,
            last_message=iso(health.last_stored_ms) if health.last_stored_ms else None,
            last_sender=health.last_sender,
            delivered=agent.stats.delivered,
            rejected=agent.stats.rejected,
            duplicates=agent.stats.duplicates,
            failed=agent.stats.failed,
            published=agent.stats.published,
            witness=witness,
            errors=list(health.errors),
            web=self.web.url if self.web is not None else None,
            epoch_keys=epoch_keys_held(agent.epochs),
        )

    async def refresh_backlog(self) -> None:
        """Ask the broker how many messages wait for this agency (for ``status``)."""
        consumer = self.agent.consumer
        if consumer is None:
            self._backlog = {}
            return
        try:
            self._backlog = await asyncio.wait_for(consumer.backlog(), timeout=1.0)
        except (BrokerError, TimeoutError):
            self._backlog = {}

    def inbox(self, limit: int = 1000) -> api.InboxRows:
        return api.InboxRows(
            [
                api.InboxRow(
                    i.msg_id.hex(), i.sender, i.channel, i.schema, iso(i.ts_ms), iso(i.received_ms)
                )
                for i in self.agency.store.inbox(limit=limit)
            ]
        )

    def find(self, ref_text: str) -> InboxItem:
        ref = msgref.parse(ref_text)
        received, _ = self.agency.store.find_by_prefix(ref.prefix)
        item: InboxItem = msgref.pick(
            ref,
            [(i.sender, i.msg_id, i) for i in received],
            where="in the inbox",
            hint="see 'tfshare inbox list'",
        )
        return item

    def view(self, item: InboxItem) -> api.Message | api.Unreadable:
        """A stored message for display: from the cache of verified views when its row
        still says what the verified envelope said, else opened and verified again. The
        warning (a sender revoked as compromised since) is always judged by the roster now."""
        key = (item.msg_id, item.sender_kid)
        cached = self._views.get(key)
        if cached is not None and _row_matches(item, cached):
            self._views.move_to_end(key)
            warning = _warning(self.agency.roster.revoked.get(item.sender_kid))
            return cached if warning is None else msgspec.structs.replace(cached, warning=warning)
        view = read_view(self.read(item))
        if isinstance(view, api.Message):
            self._views[key] = msgspec.structs.replace(view, warning=None)
            while len(self._views) > VIEWS_CACHED:
                self._views.popitem(last=False)
        return view

    def message(self, ref_text: str) -> api.Message:
        """One received message, decrypted; ``Rejected`` (exit 3) if it cannot be shown."""
        view = self.view(self.find(ref_text))
        if isinstance(view, api.Unreadable):
            raise Rejected(
                RejectCode(view.code)
                if view.code in RejectCode.__members__
                else RejectCode.E_INTERNAL,
                f"{view.msg_id} cannot be shown: {view.reason}",
            )
        return view

    def read(self, item: InboxItem) -> live.InboxMessage | live.Unreadable:
        return next(live.read_inbox(self.agency, [item]))

    def messages(self, limit: int = 1000) -> list[api.Message | api.Unreadable]:
        """The newest received messages, decrypted (for the web inbox's list and filters)."""
        return [self.view(item) for item in self.agency.store.inbox(limit=limit)]

    def search(self, text: str) -> api.SearchResult:
        needle = text.casefold()
        matches: list[api.Message] = []
        unreadable: list[api.Unreadable] = []
        for view in self.messages(limit=100_000):
            if isinstance(view, api.Unreadable):
                unreadable.append(view)
            elif needle in json.dumps(view.body, ensure_ascii=False).casefold():
                matches.append(view)
        return api.SearchResult(matches, unreadable)

    def quarantine(self, limit: int = 100) -> api.QuarantineRows:
        return api.QuarantineRows(quarantine_rows(self.agency.store.quarantined(limit=limit)))

    def sent(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {
                "msg_id": s.msg_id.hex(),
                "channel": s.channel,
                "schema": s.schema,
                "sent": iso(s.ts_ms),
                "no_forward": s.no_forward,
                "handling_code": s.handling_code,
            }
            for s in self.agency.store.sent(limit=limit)
        ]

    def lineage(self, ref_text: str) -> tuple[list[api.Message], list[api.Message]]:
        """The parents (named in its signed refs) and the children (messages naming it)
        of a received message, among the messages this agency can read.

        Only relatives are decrypted: a child is found by the refs in the stored envelopes'
        headers (a msgpack decode, no key), then opened and verified like any message. The
        web inbox asks this for every message page, in the agent's loop: decrypting the whole
        inbox twice held receiving and the feeds for ~0.5 ms per stored message."""
        target = self.message(ref_text)
        item = self.find(ref_text)
        read = self.read(item)
        parents: list[api.Message] = []
        if isinstance(read, live.InboxMessage):
            for ref in read.opened.refs:
                found = self._readable(ref.msg_id)
                if found is not None:
                    parents.append(found)
        children: list[api.Message] = []
        for candidate in self.agency.store.inbox(limit=100_000):
            if candidate.msg_id == item.msg_id or not any(
                r.msg_id == item.msg_id for r in _header_refs(candidate.envelope)
            ):
                continue
            child = self.read(candidate)
            # The signed refs, now verified, must name the target (the header was a hint).
            if isinstance(child, live.InboxMessage) and any(
                r.msg_id.hex() == target.msg_id for r in child.opened.refs
            ):
                view = read_view(child)
                if isinstance(view, api.Message):
                    children.append(view)
        return parents, children

    def _readable(self, msg_id: bytes) -> api.Message | None:
        """A received message with exactly this msg_id that this agency can read, if any."""
        received, _ = self.agency.store.find_by_prefix(msg_id.hex())
        for candidate in received:
            if candidate.msg_id == msg_id:
                view = self.view(candidate)
                if isinstance(view, api.Message):
                    return view
        return None

    def schema_document(self, kind: str) -> api.SchemaDocument:
        if kind not in live.KINDS:
            raise UsageError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(live.KINDS)}")
        schema = resolve(self.agency.registry, live.KINDS[kind])
        return api.SchemaDocument(schema.name, schema.document)

    def disclose(self, ref_text: str) -> api.Disclosure:
        item = self.find(ref_text)
        return api.Disclosure(disclosure_bytes(self.agency, item), item.msg_id.hex(), item.sender)

    def login_link(self) -> api.LoginLink:
        if self.web is None:
            raise UsageError(
                "the web inbox is not running",
                hint="start the agent with 'tfshare agent run --web'",
            )
        return self.web.login_link()

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, request: api.PublishRequest) -> api.Published:
        """Seal a message and send it on the agent's connection; with the broker away (or
        slower than ``wait_s``), it stays in the outbox and the agent sends it later.
        Without ``queue`` it is sent directly or not at all (never kept for later)."""
        draft = live.compose(
            self.agency,
            kind=request.kind,
            channel=request.channel,
            to=request.to,
            body=request.body,
            fields=request.fields,
            derive=request.derive,
        )
        if request.queue:
            return await self._queue_and_send(draft, request.wait_s)
        return await self._send_direct(draft, request.wait_s)

    async def _queue_and_send(self, draft: live.Composed, wait_s: float) -> api.Published:
        sealed, _ = live.seal_and_keep(self.agency, draft, queue=True)
        reason: str | None = None
        if self.agent.conn is None:
            reason = "the agent is not connected to the broker"
        else:
            try:
                await asyncio.wait_for(self.agent.send_outbox_now(), timeout=wait_s)
            except TimeoutError:
                reason = f"the broker did not answer within {wait_s:g} s"
            except BrokerError as exc:
                reason = exc.message
        refused = {m: why for m, why, _ in self.agency.store.outbox_refusals()}
        if sealed.msg_id in refused:
            self.agency.store.sent_drop(sealed.msg_id)
            raise BrokerRefused(
                f"the broker refused the message: {refused[sealed.msg_id]}",
                hint="it is set aside in the outbox and not sent; see 'tfshare agent status'",
            )
        still_queued = any(m == sealed.msg_id for m, _, _ in self.agency.store.outbox())
        if still_queued and reason is None:
            reason = "the broker did not take it yet"
        return api.Published(
            sealed.msg_id.hex(),
            draft.subject,
            list(sealed.recipients),
            still_queued,
            reason if still_queued else None,
            None,
            0,
            draft.channel,
            sealed.epoch,
        )

    async def _send_direct(self, draft: live.Composed, wait_s: float) -> api.Published:
        conn = self.agent.conn
        if conn is None:
            raise BrokerError(
                "the agent is not connected to the broker; the message was not sent and is "
                "not kept for later (--no-queue)",
                hint="publish it again once the agent is connected ('tfshare agent status'), "
                "or without --no-queue to keep it in the outbox until then",
            )
        sealed, mine = live.seal_and_keep(self.agency, draft, queue=False)
        try:
            seq, _ = await asyncio.wait_for(
                transport.publish(conn, draft.subject, sealed.data, msg_id=sealed.msg_id.hex()),
                timeout=wait_s,
            )
        except TimeoutError:
            raise BrokerError(
                f"the broker did not answer within {wait_s:g} s; not kept for later "
                "(--no-queue), but the broker may have stored the message",
                hint="ask a recipient whether it arrived before publishing it again",
            ) from None
        self.agency.store.sent_add(mine)
        return api.Published(
            sealed.msg_id.hex(),
            draft.subject,
            list(sealed.recipients),
            False,
            None,
            seq,
            0,
            draft.channel,
            sealed.epoch,
        )


_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_header_decoder = msgspec.msgpack.Decoder(Header)


def _header_refs(envelope: bytes) -> list[Ref]:
    """The refs a stored envelope's header names (not yet verified: a hint for ``lineage``)."""
    try:
        return _header_decoder.decode(_envelope_decoder.decode(envelope).hdr).refs
    except msgspec.DecodeError:
        return []


def epoch_keys_held(ring: EpochKeyring) -> list[api.EpochKeysHeld]:
    """Per channel, the newest epoch key held, when it started and how many older ones
    are kept: what ``agent status`` shows (never a key)."""
    held: list[api.EpochKeysHeld] = []
    for channel in ring.channels():
        newest = ring.newest(channel)
        if newest is None:
            continue
        older = sum(1 for key in ring if key.channel == channel) - 1
        held.append(api.EpochKeysHeld(channel, newest.epoch, iso(newest.starts_ms), older))
    return held


def _warning(revocation: Revocation | None) -> str | None:
    if revocation is not None and revocation.reason == "compromised":
        return live.COMPROMISED_MARK
    return None


def _row_matches(item: InboxItem, view: api.Message) -> bool:
    """Whether the stored row still claims what the verified envelope said (an altered row
    is opened again, and refused: ``live.read_inbox_item``)."""
    return (item.msg_id.hex(), item.sender, item.channel, item.schema, item.env_hash.hex()) == (
        view.msg_id,
        view.sender,
        view.channel,
        view.schema,
        view.env_hash,
    ) and item.ts_ms == view.sent_ms


__all__ = ["Desk", "LoginIssuer", "Subscription", "message_view"]
