"""The audit service: every envelope of the task force into the tamper-evident log.

Owns: ``Auditor``, the pure part (an envelope in, a ``LogEntry`` or the code it was refused
with out; when a checkpoint is due and signing it after checking it extends the previous one),
and ``AuditService``, the asyncio loop around it (fetch from the auditor's consumer, append,
persist, then acknowledge; answer proof requests; publish signed checkpoints).

Proof requests (``tfshare.audit.proofs``) arrive on ``broker.proof_subject`` and are answered
from the committed log and its stored signed checkpoints; a bad request is answered with its
code and logged (``audit_proof_request``), never allowed to stop the loop.

The auditor never decrypts: it checks what a party without a recipient's key can check (size,
strict decoding, task force, channel, subject, sender key and permission, signature) and logs
hashes and identifiers, never payloads. An envelope that fails is not logged as if its claimed
sender had sent it; it is reported (log event with its code) and acknowledged.

Invariants:
- an envelope is acknowledged only after its entry (or the decision not to log it) is
  committed; a redelivered envelope is not appended twice (the store deduplicates);
- a checkpoint is signed only for a tree that is consistent with the last signed checkpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import structlog

from tfshare import transport
from tfshare.audit import proofs
from tfshare.audit.entry import RECEIPT_OF, RETRACT, LogEntry
from tfshare.audit.logstore import AuditStore, MessageFacts, ReceiptWords
from tfshare.audit.merkle import verify_consistency
from tfshare.audit.note import (
    Checkpoint,
    NoteVerifier,
    checkpoint_origin,
    key_id,
    open_checkpoint,
    sign_checkpoint,
)
from tfshare.broker import proof_subject
from tfshare.envelope import WRAP_SIZE, Header, wrap_at
from tfshare.errors import BrokerError, RejectCode, Rejected, TrustError
from tfshare.keys import Identity
from tfshare.lineage import RELATION_NAMES, Handling, handling_of, violation
from tfshare.messages import SchemaBook
from tfshare.protocol import RECEIPTS_CHANNEL
from tfshare.registry.book import shipped
from tfshare.replay import MemoryReplayStore
from tfshare.roster import TrustedRoster
from tfshare.seal import Opened, ReceivePolicy, open_envelope, verify_envelope

log = structlog.get_logger("tfshare.audit")

# The auditor logs what the broker carried, however late it reads it (after an outage, a
# restart): no maximum age. The future-skew bound still applies.
AUDIT_POLICY = ReceivePolicy(max_age_ms=2**53 - 1)


class IdentitySigner:
    """Signs checkpoints with an agency's Ed25519 identity key under the log's key name (the
    origin, as C2SP recommends). The secret key never leaves the ``Identity``."""

    def __init__(self, identity: Identity, name: str) -> None:
        self._identity = identity
        self._name = name
        self._key_id = key_id(name, identity.sign_pk)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._identity.sign(message)


def log_verifiers(roster: TrustedRoster) -> list[NoteVerifier]:
    """The keys that may sign the task force's checkpoints: every current signing key of its
    coordinators and auditors, under the log's name. Anyone holding the roster can derive
    them."""
    origin = checkpoint_origin(roster.taskforce)
    verifiers = []
    for member in roster.roster.members:
        if member.agency_id in roster.roster.coordinators or "auditor" in member.roles:
            for key in member.sign_keys:
                verifiers.append(NoteVerifier.from_public_key(origin, key.pk))
    return verifiers


def message_entry(
    data: bytes, *, roster: TrustedRoster, subject: str | None, now_ms: int
) -> LogEntry:
    """The log entry of an envelope, after checks 1-5 (raises ``Rejected``)."""
    verified = verify_envelope(
        data, roster=roster, now_ms=now_ms, subject=subject, policy=AUDIT_POLICY
    )
    return _entry_of(verified.header, verified.env_hash, now_ms)


def recipients_of(hdr: Header, roster: TrustedRoster) -> tuple[str, ...]:
    """The agencies a message is addressed to, from the key ids of its wraps (readable
    without any key; a key id the roster does not know shows as hex)."""
    kids = (wrap_at(hdr.wraps, i)[0] for i in range(len(hdr.wraps) // WRAP_SIZE))
    return tuple(roster.agency_of_enc_kid.get(kid, kid.hex()) for kid in kids)


def message_record(
    data: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    schemas: SchemaBook,
    subject: str | None,
    now_ms: int,
) -> tuple[LogEntry, MessageFacts]:
    """The log entry of an envelope (checks 1-5, raises ``Rejected``) and its facts: the
    recipients, and where this auditor is one of them, the schema, handling and response
    class read from the body. A body the auditor cannot open does not stop the entry: the
    envelope verified, so the broker did carry it, and the log says so."""
    verified = verify_envelope(
        data, roster=roster, now_ms=now_ms, subject=subject, policy=AUDIT_POLICY
    )
    hdr = verified.header
    entry = _entry_of(hdr, verified.env_hash, now_ms)
    recipients = recipients_of(hdr, roster)
    if identity.agency_id not in recipients:
        return entry, MessageFacts(recipients)
    try:
        opened = open_envelope(
            data,
            identity=identity,
            roster=roster,
            replay=MemoryReplayStore(),
            schemas=schemas,
            now_ms=now_ms,
            subject=subject,
            policy=AUDIT_POLICY,
        )
    except Rejected as exc:
        log.warning(
            "audit_body_unreadable", code=exc.code, reason=exc.message, msg_id=hdr.msg_id.hex()
        )
        return entry, MessageFacts(recipients)
    assert isinstance(opened, Opened)
    handling = handling_of(opened.record)
    body = msgspec.to_builtins(opened.record)
    response = body.get("response_class") if isinstance(body, dict) else None
    return entry, MessageFacts(
        recipients,
        schema=opened.schema,
        no_forward=handling.no_forward,
        handling_code=handling.code,
        response_class=response if isinstance(response, str) else None,
    )


def _entry_of(hdr: Header, env_hash: bytes, now_ms: int) -> LogEntry:
    retracts = any(ref.relation == RETRACT for ref in hdr.refs)
    return LogEntry(
        entry_type="retraction" if retracts else "message",
        msg_id=hdr.msg_id,
        sender=hdr.sender,
        sender_kid=hdr.sender_kid,
        taskforce=hdr.taskforce,
        channel=hdr.channel,
        ts_ms=hdr.ts_ms,
        env_sha256=env_hash,
        refs=[(ref.relation, ref.msg_id, ref.env_hash) for ref in hdr.refs],
        observed_ms=now_ms,
    )


def receipt_entry(
    data: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    schemas: SchemaBook,
    subject: str | None,
    now_ms: int,
) -> tuple[LogEntry, ReceiptWords]:
    """The log entry of a receipt (opened: the auditor is a recipient of the receipts
    channel), and what it says. Raises ``Rejected`` like the receive pipeline."""
    opened = open_envelope(
        data,
        identity=identity,
        roster=roster,
        replay=MemoryReplayStore(),  # the log deduplicates; nothing to remember here
        schemas=schemas,
        now_ms=now_ms,
        subject=subject,
        policy=AUDIT_POLICY,
    )
    assert isinstance(opened, Opened)
    if opened.schema.split("/")[0] != "tf.receipt":
        raise Rejected(RejectCode.E_SCHEMA, "only receipts travel on the receipts channel")
    body = msgspec.to_builtins(opened.record)
    assert isinstance(body, dict)
    seen = ReceiptWords(
        receiver=opened.sender,
        msg_id=bytes.fromhex(body["msg_id"]),
        env_hash=bytes.fromhex(body["env_hash"]),
        outcome=body["outcome"],
        code=body.get("code"),
        received_ms=parse_time_ms(body["received"]),
    )
    entry = LogEntry(
        entry_type="receipt",
        msg_id=opened.msg_id,
        sender=opened.sender,
        sender_kid=opened.sender_kid,
        taskforce=opened.taskforce,
        channel=opened.channel,
        ts_ms=opened.ts_ms,
        env_sha256=opened.env_hash,
        refs=[(RECEIPT_OF, seen.msg_id, seen.env_hash)],
        observed_ms=now_ms,
    )
    return entry, seen


def parse_time_ms(text: str) -> int:
    """RFC 3339 (as the schema's date-time) to milliseconds since the epoch."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def roster_entry(roster: TrustedRoster, roster_bytes: bytes, *, now_ms: int) -> LogEntry:
    """A roster version as a log entry: who changed the membership, when, to which bytes."""
    digest = hashlib.sha256(roster_bytes).digest()
    return LogEntry(
        entry_type="roster",
        msg_id=digest[:16],
        sender=",".join(sorted(roster.roster.coordinators)),
        sender_kid=b"",
        taskforce=roster.taskforce,
        channel="",
        ts_ms=roster.roster.issued_ms,
        env_sha256=digest,
        refs=[],
        observed_ms=now_ms,
    )


@dataclass(frozen=True)
class HandlingFlag:
    """A logged message whose lineage breaks the handling rules of its parent."""

    index: int
    child: LogEntry
    relation: str
    parent_index: int
    parent: LogEntry
    code: str  # E_NO_FORWARD, E_HANDLING_H2, E_NOT_ORIGINATOR
    why: str


def handling_flags(store: AuditStore, index: int, entry: LogEntry) -> list[HandlingFlag]:
    """The handling rules ``entry`` (at ``index``) breaks, judged from the log: the parent's
    sender from its entry, its handling from the facts the auditor recorded (known only if
    the auditor could read the parent). A child the CLI would have refused, which arrived
    anyway (another client, an edited CLI), is flagged here."""
    flags = []
    for relation_number, parent_id, parent_hash in entry.refs:
        relation = RELATION_NAMES.get(relation_number)
        if relation is None:
            continue  # receipt-of
        for parent_index, parent in store.find(parent_id):
            if parent.env_sha256 != parent_hash or parent.entry_type == "receipt":
                continue
            facts = store.facts_of(parent_index)
            # Unread parent: the schema defaults (H1, forwardable) -- only what is known
            # is flagged; the originator-only rules need no body at all.
            handling = (
                Handling(bool(facts.no_forward), facts.handling_code or "H1")
                if facts is not None and facts.read
                else Handling()
            )
            found = violation(relation, parent_sender=parent.sender, parent=handling,
                              by=entry.sender)  # fmt: skip
            if found is not None:
                flags.append(HandlingFlag(index, entry, relation, parent_index, parent, *found))
    return flags


@dataclass
class CheckpointPolicy:
    """Sign a checkpoint once ``every`` entries are unsigned, or after ``interval_s`` with any."""

    every: int = 100
    interval_s: float = 10.0


def sign_next_checkpoint(
    store: AuditStore, signer: IdentitySigner, verifiers: list[NoteVerifier], *, now_ms: int
) -> bytes | None:
    """Sign a checkpoint of the log as it is now, after checking that it extends the last
    signed one (consistency proof from the stored tree). None if nothing is new."""
    origin = signer.name
    size = store.size
    latest = store.latest_checkpoint()
    if latest is not None:
        old_size, old_note = latest
        if old_size >= size:
            return None
        old, _ = open_checkpoint(old_note, verifiers, origin=origin)
        # Refuses to sign if someone rewrote the stored tree under the last checkpoint.
        verify_consistency(
            old.size, size, old.root_hash, store.root(), store.consistency_proof(old.size, size)
        )
    elif size == 0:
        return None
    note = sign_checkpoint(Checkpoint(origin, size, store.root()), [signer])
    store.add_checkpoint(size, note, now_ms)
    return note


@dataclass
class AuditStats:
    appended: int = 0
    duplicates: int = 0
    refused: int = 0
    checkpoints: int = 0
    flagged: int = 0
    proofs_given: int = 0
    proofs_refused: int = 0  # proof requests answered with an error code


@dataclass
class AuditService:
    """The audit service of one coordinator (or auditor) agency on one broker."""

    identity: Identity
    roster: TrustedRoster
    roster_bytes: bytes
    store: AuditStore
    url: str
    clock: Callable[[], int]
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    batch: int = 64
    fetch_timeout: float = 0.5
    schemas: SchemaBook = field(default_factory=shipped)
    stats: AuditStats = field(default_factory=AuditStats)

    def __post_init__(self) -> None:
        self.origin = checkpoint_origin(self.roster.taskforce)
        self.signer = IdentitySigner(self.identity, self.origin)
        self.verifiers = log_verifiers(self.roster)
        self._last_checkpoint = time.monotonic()

    def start(self) -> None:
        """Log the roster in force (once per version), and sign what is unsigned."""
        self._append([roster_entry(self.roster, self.roster_bytes, now_ms=self.clock())])
        self.maybe_checkpoint(force=True)

    def ingest(self, items: list[tuple[bytes, str | None]]) -> list[int | None]:
        """Check and append a batch of (envelope, subject) in one transaction; refused
        envelopes are reported, not logged. Returns each item's index (None: not appended).

        Receipts are opened (the auditor is a recipient of the receipts channel) so that
        what they say -- accepted, or rejected with which code -- is kept beside the log for
        reports; anything else is only verified, never decrypted."""
        now_ms = self.clock()
        entries: list[LogEntry] = []
        positions: list[int] = []
        receipts: list[ReceiptWords | None] = []
        facts: list[MessageFacts | None] = []
        for position, (data, subject) in enumerate(items):
            try:
                entry, seen, known = self._entry_of(data, subject, now_ms)
            except Rejected as exc:
                self.stats.refused += 1
                log.warning(
                    "audit_envelope_refused",
                    code=exc.code,
                    reason=exc.message,
                    sender=exc.sender,
                    msg_id=exc.msg_id.hex() if exc.msg_id else None,
                    subject=subject,
                )
                continue
            entries.append(entry)
            positions.append(position)
            receipts.append(seen)
            facts.append(known)
        indices: list[int | None] = [None] * len(items)
        appended = self._append(entries, receipts, facts)
        for position, index in zip(positions, appended, strict=True):
            indices[position] = index
        for entry, index in zip(entries, appended, strict=True):
            if index is not None and entry.entry_type != "receipt" and entry.refs:
                self._flag(index, entry)
        return indices

    def _flag(self, index: int, entry: LogEntry) -> None:
        """Report (log event) a message whose lineage breaks its parent's handling rules;
        it stays in the log: the log records what happened, the flag says it should not
        have."""
        for flag in handling_flags(self.store, index, entry):
            self.stats.flagged += 1
            log.warning(
                "handling_violation",
                code=flag.code,
                reason=flag.why,
                index=index,
                msg_id=entry.msg_id.hex(),
                sender=entry.sender,
                relation=flag.relation,
                parent=flag.parent.msg_id.hex(),
                parent_sender=flag.parent.sender,
            )

    def _entry_of(
        self, data: bytes, subject: str | None, now_ms: int
    ) -> tuple[LogEntry, ReceiptWords | None, MessageFacts | None]:
        channel = subject.split(".")[3] if subject and subject.count(".") >= 4 else None
        if channel == RECEIPTS_CHANNEL and self.identity.agency_id in self.roster.readers.get(
            RECEIPTS_CHANNEL, ()
        ):
            entry, seen = receipt_entry(
                data,
                identity=self.identity,
                roster=self.roster,
                schemas=self.schemas,
                subject=subject,
                now_ms=now_ms,
            )
            return entry, seen, None
        entry, known = message_record(
            data,
            identity=self.identity,
            roster=self.roster,
            schemas=self.schemas,
            subject=subject,
            now_ms=now_ms,
        )
        return entry, None, known

    def _append(
        self,
        entries: list[LogEntry],
        receipts: list[ReceiptWords | None] | None = None,
        facts: list[MessageFacts | None] | None = None,
    ) -> list[int | None]:
        if not entries:
            return []
        indices = self.store.append(entries, receipts or (), facts or ())
        for entry, index in zip(entries, indices, strict=True):
            if index is None:
                self.stats.duplicates += 1
            else:
                self.stats.appended += 1
                log.info(
                    "audit_appended",
                    index=index,
                    type=entry.entry_type,
                    msg_id=entry.msg_id.hex(),
                    sender=entry.sender,
                    channel=entry.channel,
                )
        return indices

    def answer_request(self, request: bytes) -> bytes:
        """Answer one proof request from the committed log (``tfshare.audit.proofs``)."""
        answered = proofs.handle(
            self.store, request, taskforce=self.roster.taskforce, verifiers=self.verifiers
        )
        if answered.code is None:
            self.stats.proofs_given += 1
        else:
            self.stats.proofs_refused += 1
        log.info(
            "audit_proof_request",
            kind=answered.kind,
            code=answered.code or "OK",
            index=answered.index,
            size=answered.size,
        )
        return answered.data

    def maybe_checkpoint(self, *, force: bool = False) -> bytes | None:
        latest = self.store.latest_checkpoint()
        unsigned = self.store.size - (latest[0] if latest else 0)
        due = (
            force
            or unsigned >= self.checkpoints.every
            or time.monotonic() - self._last_checkpoint >= self.checkpoints.interval_s
        )
        if unsigned <= 0 or not due:
            return None
        note = sign_next_checkpoint(self.store, self.signer, self.verifiers, now_ms=self.clock())
        self._last_checkpoint = time.monotonic()
        if note is not None:
            self.stats.checkpoints += 1
            log.info("audit_checkpoint", size=self.store.size)
        return note

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; reconnect with backoff while the broker is away."""
        self.start()
        backoff = 0.2
        agency = self.identity.agency_id
        while not stop.is_set():
            try:
                conn = await transport.connect(
                    self.url,
                    nkey_seed=self.identity.nats_seed_encoded(),
                    agency=agency,
                    name=f"tfshare-audit-{agency}",
                    reconnect=False,
                )
            except BrokerError:
                log.warning("broker_unavailable", url=self.url, retry_s=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            log.info("audit_connected", agency=agency, url=self.url)
            try:
                await self._consume(conn, stop)
            except BrokerError as exc:
                log.warning("broker_lost", reason=exc.message)
            except TrustError as exc:
                # The stored log does not extend the last checkpoint: stop signing, say so.
                log.error("audit_log_inconsistent", code=exc.code, reason=exc.message)
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Nothing unpersisted was acknowledged: log, pause, reconnect, go on.
                log.error("audit_error", error=type(exc).__name__)
                await _sleep_or_stop(stop, 1.0)
            finally:
                await conn.close()
        log.info("audit_stopped", **self.stats.__dict__)

    async def _consume(self, conn: transport.Connection, stop: asyncio.Event) -> None:
        consumer = transport.Consumer(
            conn, self.roster.taskforce, self.identity.agency_id, audit=True
        )
        await consumer.bind()
        # Answered between fetches, on this loop: the store is never used from two places
        # at once.
        await transport.serve_requests(
            conn, proof_subject(self.roster.taskforce), self.answer_request
        )
        # Announce the latest checkpoint on (re)connecting: the bucket may have missed it.
        published: tuple[int, bytes] | None = None
        while True:
            stopping = stop.is_set()
            if not stopping:
                deliveries = await consumer.fetch(self.batch, self.fetch_timeout)
                if deliveries:
                    self.ingest([(d.data, d.subject) for d in deliveries])
                    for delivery in deliveries:  # only now: the entries are committed
                        await delivery.ack()
            # Stopping: sign what is still unsigned, so no entry waits for the next start.
            self.maybe_checkpoint(force=stopping)
            latest = self.store.latest_checkpoint()
            if latest is not None and latest != published:
                await transport.publish_checkpoint(conn, self.roster.taskforce, latest[1])
                published = latest
            if stopping:
                return


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return
