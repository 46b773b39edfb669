"""The audit service: every envelope of the task force into the tamper-evident log.

Owns: the pure part (an envelope, a roster change or a registry record in, the ``LogEntry``
or the code it was refused with out; when a checkpoint is due and signing it after checking
it extends the previous one), and ``AuditService``, the asyncio loop around it (fetch from
the auditor's consumer, append, persist, then acknowledge; follow the roster and registry
buckets; answer proof requests; publish signed checkpoints).

Records (entry types of ``tfshare.audit.entry.RECORD_TYPES``: no channel, no single key):

- "roster": a signed roster version, once when the service starts (the roster it was given)
  and for every new one published in the roster bucket that ``accept_roster`` verifies
  (anchor and rollback state, as agents do). msg_id = SHA-256(signed roster bytes)[:16],
  env_sha256 = SHA-256(signed roster bytes), sender = the roster's coordinators, ts_ms =
  the roster's issued time. A roster that fails verification is not logged (log event
  ``audit_roster_refused`` with its code) and the service keeps the roster it trusts.
- "key_event": beside a roster entry, one per signing key the new roster adds (event
  "added", ts_ms = the roster's issued time) or newly revokes (event = the revocation's
  reason, "retired" or "compromised", ts_ms = the revocation time; a retirement later
  upgraded to compromised is a second event) compared with the roster before it. digest =
  SHA-256(L("tfshare/v1/key-event") || u32(taskforce) || u32(kid) || u32(event)); msg_id =
  digest[:16], env_sha256 = digest, so a key's event is logged once however often it is
  observed. sender = the coordinators whose signatures on the new roster verify (comma
  joined), sender_kid = the affected key id. Other changes (a key's validity, roles,
  channels) are in the roster entry's bytes, not in key events.
- "schema": every record in the registry bucket that ``verify_record`` accepts under the
  roster in force. msg_id = SHA-256(record bytes)[:16], env_sha256 = SHA-256(record bytes),
  sender = the approving coordinators (comma joined), sender_kid empty, ts_ms = the record's
  registration time. A record that fails (or sits under another key than its own subject and
  version) is not logged (``audit_schema_refused`` with its code); it is looked at again
  after a roster change (a new coordinator may have signed it), otherwise once per run.

The store deduplicates all of them by (type, env_sha256): a restart logs nothing twice.

Proof requests (``tfshare.audit.proofs``) arrive on each member's own
``names.proof_subject`` (the broker lets a member publish only on its own) and are answered
from the committed log and its stored signed checkpoints, only into that same member's inbox;
a bad request is answered with its code and logged (``audit_proof_request``), never allowed
to stop the loop. Each member has a share (``RateLimit``, a token bucket per requesting
agency, named by the subject the request came on, 20 a second in bursts of 40 by default):
a request over it is answered ``E_RATE_LIMITED`` without reading the log, and counted
(``audit_proofs_limited``, one event per interval), so a member that floods the service
neither starves the others' requests nor the log.

The auditor never decrypts: it checks what a party without a recipient's key can check (size,
strict decoding, task force, channel, subject, sender key and permission, signature) and logs
hashes and identifiers, never payloads. An envelope that fails is not logged as if its claimed
sender had sent it; it is acknowledged and reported. Junk - an envelope refused before its
signature verified (``JUNK_CODES``), which anyone holding NATS credentials can make - is
counted, not reported one by one: one ``audit_junk`` event per ``junk_report_s`` with the
counts by code (each one only at debug level). A "rejected" receipt of an envelope the
service never logged (so never saw verified) is junk too: not appended, counted; a rejected
receipt of a logged message, and every accepted receipt, is logged.

Equivocation: an envelope whose sender already logged another, different envelope under the
same msg_id is logged (the log records what the broker carried) and flagged: log event
``equivocation``, ``E_EQUIVOCATION`` in ``audit trace`` and ``audit report``.

Invariants:
- an envelope is acknowledged only after its entry (or the decision not to log it) is
  committed; a redelivered envelope is not appended twice (the store deduplicates);
- a checkpoint is signed only for a tree that is consistent with the last signed checkpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec
import structlog

from tfshare import transport
from tfshare.audit import proofs
from tfshare.audit.entry import RECEIPT_OF, RETRACT, LogEntry
from tfshare.audit.logstore import AuditStore, AuditStoreUnavailable, MessageFacts, ReceiptWords
from tfshare.audit.merkle import verify_consistency
from tfshare.audit.note import (
    Checkpoint,
    NoteVerifier,
    checkpoint_origin,
    key_id,
    open_checkpoint,
    sign_checkpoint,
)
from tfshare.backoff import Backoff, sleep_or_stop
from tfshare.encoding import label, u32
from tfshare.envelope import WRAP_SIZE, Header, wrap_at
from tfshare.errors import BrokerError, RejectCode, Rejected, TfshareError, TrustError
from tfshare.keys import Identity, kid_sig
from tfshare.lineage import RELATION_NAMES, Handling, handling_of, violation
from tfshare.messages import SchemaBook
from tfshare.names import (
    inbox_owner,
    parse_channel_subject,
    proof_requester,
    proof_subjects,
    schema_key,
    task_force_channels,
)
from tfshare.protocol import RECEIPTS_CHANNEL
from tfshare.registry.book import shipped
from tfshare.registry.records import VerifiedRecord, verify_record
from tfshare.replay import MemoryReplayStore
from tfshare.roster import (
    TrustedRoster,
    anchor_of,
    approvals,
    decode_signed_roster,
    roster_message,
)
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
    """The keys that may sign the task force's checkpoints, under the log's name: the signing
    keys of its active coordinators and auditors, except keys revoked as compromised. Anyone
    holding the roster can derive them.

    A key revoked as compromised is dropped whenever it was revoked: checkpoints carry no
    trustworthy signing time, so whoever holds that key could sign a fabricated log "from
    before". A retired key (rotation) still verifies the checkpoints it signed; an agency
    no longer active (removed, suspended) signs nothing the task force trusts."""
    origin = checkpoint_origin(roster.taskforce)
    compromised = {
        revocation.kid for revocation in roster.roster.revoked if revocation.reason == "compromised"
    }
    verifiers = []
    for member in roster.roster.members:
        if member.status != "active":
            continue
        if member.agency_id in roster.roster.coordinators or "auditor" in member.roles:
            for key in member.sign_keys:
                if kid_sig(key.pk) not in compromised:
                    verifiers.append(NoteVerifier.from_public_key(origin, key.pk))
    return verifiers


def is_member_inbox(roster: TrustedRoster, subject: str) -> bool:
    """Whether ``subject`` is a reply subject in the private inbox of an active member
    (``names.inbox_owner``): the only place the service sends answers."""
    owner = inbox_owner(subject)
    member = roster.members.get(owner) if owner is not None else None
    return member is not None and member.status == "active"


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
    # The alert's field is "response" (its type in the schema is response_class).
    response = body.get("response") if isinstance(body, dict) else None
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
    try:
        seen = ReceiptWords(
            receiver=opened.sender,
            msg_id=bytes.fromhex(body["msg_id"]),
            env_hash=bytes.fromhex(body["env_hash"]),
            outcome=body["outcome"],
            code=body.get("code"),
            received_ms=parse_time_ms(body["received"]),
        )
    except (ValueError, KeyError, OverflowError):
        # The schema's pattern admits what the calendar does not (February 31st, a leap
        # second): the receipt is refused like any bad body, never a crash of the batch.
        raise Rejected(
            RejectCode.E_BODY, "the receipt's fields do not parse (a date that does not exist?)"
        ) from None
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


L_KEY_EVENT: Final = label("tfshare/v1/key-event")
KEY_ADDED: Final = "added"
# A revocation's event is its reason (tfshare.roster.Reason): "retired" or "compromised".
KEY_EVENTS: Final = (KEY_ADDED, "retired", "compromised")
# The code of a registry record refused for something other than a coded trust failure
# (malformed bytes, a schema outside the profile, stored under another record's key).
E_RECORD_INVALID: Final = "E_RECORD_INVALID"


def key_event_digest(taskforce: str, kid: bytes, event: str) -> bytes:
    """SHA-256(L("tfshare/v1/key-event") || u32(taskforce) || u32(kid) || u32(event))."""
    return hashlib.sha256(
        L_KEY_EVENT + u32(taskforce.encode()) + u32(kid) + u32(event.encode())
    ).digest()


def roster_signers(data: bytes, previous: TrustedRoster, roster: TrustedRoster) -> list[str]:
    """The coordinators whose signatures on the signed roster ``data`` verify, counted
    against the coordinators of the roster before it and of the roster itself (a change of
    the coordinator set is signed by both); sorted."""
    signed, _ = decode_signed_roster(data)
    message = roster_message(signed.roster)
    found: set[str] = set()
    for trusted in (previous, roster):
        found |= approvals(message, signed.sigs, anchor_of(trusted.roster))
    return sorted(found)


def key_event_entries(
    previous: TrustedRoster, roster: TrustedRoster, signers: Sequence[str], *, now_ms: int
) -> list[LogEntry]:
    """The key events of ``roster`` compared with ``previous`` (see the module docstring):
    one per signing key added, one per key newly revoked (or upgraded to compromised)."""
    taskforce = roster.taskforce
    sender = ",".join(signers) or ",".join(sorted(roster.roster.coordinators))
    events: list[tuple[bytes, str, int]] = []
    for member in roster.roster.members:
        for key in member.sign_keys:
            kid = kid_sig(key.pk)
            if kid not in previous.sign_keys:
                events.append((kid, KEY_ADDED, roster.roster.issued_ms))
    for revocation in roster.roster.revoked:
        before = previous.revoked.get(revocation.kid)
        if before is None or before.reason != revocation.reason:
            events.append((revocation.kid, revocation.reason, revocation.at_ms))
    entries = []
    for kid, event, ts_ms in events:
        digest = key_event_digest(taskforce, kid, event)
        entries.append(
            LogEntry(
                entry_type="key_event",
                msg_id=digest[:16],
                sender=sender,
                sender_kid=kid,
                taskforce=taskforce,
                channel="",
                ts_ms=ts_ms,
                env_sha256=digest,
                refs=[],
                observed_ms=now_ms,
            )
        )
    return entries


def schema_entry(data: bytes, verified: VerifiedRecord, *, now_ms: int) -> LogEntry:
    """A registry record (verified) as a log entry: who approved which schema, when."""
    digest = hashlib.sha256(data).digest()
    return LogEntry(
        entry_type="schema",
        msg_id=digest[:16],
        sender=",".join(sorted(verified.approvals)),
        sender_kid=b"",
        taskforce=verified.record.taskforce,
        channel="",
        ts_ms=verified.record.registered_ms,
        env_sha256=digest,
        refs=[],
        observed_ms=now_ms,
    )


@dataclass(frozen=True)
class HandlingFlag:
    """A logged message whose lineage breaks the handling rules of its parent; or (relation
    "equivocation", code E_EQUIVOCATION) one whose sender logged another envelope under the
    same msg_id, that envelope's entry standing as ``parent``."""

    index: int
    child: LogEntry
    relation: str
    parent_index: int
    parent: LogEntry
    code: str  # E_NO_FORWARD, E_HANDLING_H2, E_NOT_ORIGINATOR; E_EQUIVOCATION
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


# The refusals of ``verify_envelope``: all come before or at the sender's signature, so none is
# attributable to a member; anyone with NATS credentials can produce them. Counted, not
# reported one by one (``audit_junk``).
JUNK_CODES: Final = frozenset(
    {RejectCode.E_TOO_LARGE, RejectCode.E_MALFORMED, RejectCode.E_NONCANONICAL,
     RejectCode.E_VERSION, RejectCode.E_CHANNEL, RejectCode.E_STALE, RejectCode.E_FUTURE,
     RejectCode.E_UNKNOWN_SENDER, RejectCode.E_REVOKED, RejectCode.E_NOT_AUTHORIZED,
     RejectCode.E_BAD_SIG}
)  # fmt: skip
# The junk code of a "rejected" receipt for an envelope this service never logged.
RECEIPT_OF_UNLOGGED: Final = "receipt_of_unlogged"

# A sender signed two different envelopes under one msg_id (the same "message" with different
# contents, shown to different readers perhaps): both stay in the log, the flag says so.
E_EQUIVOCATION: Final = "E_EQUIVOCATION"
EQUIVOCATION: Final = "equivocation"
# Entry types made from a sender's envelope (records have no single sender and key).
ENVELOPE_TYPES: Final = frozenset({"message", "retraction", "receipt"})


def equivocation_flags(store: AuditStore, index: int, entry: LogEntry) -> list[HandlingFlag]:
    """The other envelopes in the log with the sender and msg_id of ``entry`` (at ``index``)
    but other bytes: each one is an equivocation by that sender (relation "equivocation",
    the other entry as ``parent``). A redelivered or replayed envelope has the same bytes
    and is logged once, so it is never one."""
    if entry.entry_type not in ENVELOPE_TYPES:
        return []
    flags = []
    for other_index, other in store.find(entry.msg_id):
        if (
            other_index == index
            or other.entry_type not in ENVELOPE_TYPES
            or other.sender != entry.sender
            or other.env_sha256 == entry.env_sha256
        ):
            continue
        why = (
            f"{entry.sender} signed two different envelopes with one msg_id: entries "
            f"{min(index, other_index)} and {max(index, other_index)} (env_sha256 "
            f"{entry.env_sha256.hex()[:16]}... and {other.env_sha256.hex()[:16]}...); readers "
            "may have been shown different messages under one id"
        )
        flags.append(
            HandlingFlag(index, entry, EQUIVOCATION, other_index, other, E_EQUIVOCATION, why)
        )
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


# The answer to a member that asks for proofs faster than its share (not an AnswerCode of
# tfshare.audit.proofs yet: clients pass an unknown code on as received).
E_RATE_LIMITED: Final = proofs.AnswerCode.E_RATE_LIMITED.value


@dataclass
class RateLimit:
    """A token bucket per requester: ``rate`` requests a second on average, up to ``burst``
    at once. Keys are active members' agency names (answers go only to members' inboxes),
    so the table is as large as the roster at most."""

    rate: float = 20.0
    burst: float = 40.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("RateLimit needs rate > 0 and burst >= 1")
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str) -> bool:
        """Take one token of ``key``'s bucket; False if it is empty."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


def rate_limited_response(taskforce: str, agency: str, limit: RateLimit) -> bytes:
    """The ``tfshare-proof-response/1`` error answer to a request over ``agency``'s share."""
    message = (
        f"too many proof requests from {agency}: at most {limit.rate:g} a second "
        f"(bursts of {limit.burst:g}); try again shortly"
    )
    return proofs.encode_response(
        proofs.ProofResponse(
            proofs.RESPONSE_FORMAT, taskforce, proofs.ErrorAnswer(E_RATE_LIMITED, message[:200])
        )
    )


@dataclass
class AuditStats:
    appended: int = 0
    duplicates: int = 0
    refused: int = 0
    checkpoints: int = 0
    flagged: int = 0
    equivocations: int = 0  # envelopes logged under a msg_id their sender had used already
    # Counted, never logged: envelopes refused before their signature verified (also in
    # ``refused``), and "rejected" receipts of envelopes this service never saw verified.
    junk: int = 0
    records_refused: int = 0  # rosters and registry records that failed verification
    proofs_given: int = 0
    proofs_refused: int = 0  # proof requests answered with an error code
    proofs_limited: int = 0  # proof requests over their member's rate (E_RATE_LIMITED)
    store_failures: int = 0  # writes of the log that failed (full or failing disk) and were retried


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
    # Verifies (against the anchor and the rollback state), persists and returns a roster
    # fetched from the broker's roster bucket, as ``Agent.accept_roster``; raises a
    # TrustError for one that fails. When set, the service follows the bucket: a new roster
    # is logged (with its key events) and used from then on. None: the roster given is kept.
    accept_roster: Callable[[bytes], TrustedRoster] | None = None
    # How often the roster and registry buckets are looked at (the agent's pace).
    records_every_s: float = 2.0
    # The pause before reconnecting after a connection failed, growing while every attempt
    # fails before consuming anything (a broker away, a stream or consumer missing during a
    # leader election); back to its start once a fetch succeeded.
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    # The pause before writing again after the log could not be written (a full or failing
    # disk: ``AuditStoreUnavailable``); the batch is held, unacknowledged, meanwhile.
    store_backoff: Backoff = field(default_factory=lambda: Backoff(first=0.5, ceiling=10.0))
    # Junk (envelopes refused before their signature verified) is counted and reported in
    # one ``audit_junk`` event at most this often.
    junk_report_s: float = 60.0
    # Proof requests each member may make (token bucket per requesting agency): a member
    # flooding the service gets E_RATE_LIMITED, never the others' share or the log's time.
    proof_limit: RateLimit = field(default_factory=RateLimit)
    # How the service waits (a stop request cuts the wait short); tests observe the pauses.
    pause: Callable[[asyncio.Event, float], Awaitable[None]] = sleep_or_stop
    # The service's TLS settings for tls:// brokers (built once, from --tls-ca and the rest).
    tls: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.origin = checkpoint_origin(self.roster.taskforce)
        self.signer = IdentitySigner(self.identity, self.origin)
        self.verifiers = log_verifiers(self.roster)
        self._last_checkpoint = time.monotonic()
        self._next_records = 0.0
        self._seen_roster: bytes | None = None  # the last bucket roster refused
        # Registry keys looked at in this run: True logged, False refused (looked at again
        # after a roster change).
        self._judged: dict[str, bool] = {}
        self._fetched = False  # the current connection has fetched from the consumer
        self._junk: dict[str, int] = {}  # junk counted since the last audit_junk event
        self._junk_since = time.monotonic()
        self._limited: dict[str, int] = {}  # proof requests limited since the last report
        # The agency whose request is being answered: set by ``reply_allowed`` (which
        # transport.serve_requests calls with the reply subject just before ``answer``, with
        # no await between them), read once by ``answer_request``.
        self._requester: str | None = None

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
        junk: list[str] = []  # codes of what is counted, not logged (see _count_junk)
        refused = 0
        for position, (data, subject) in enumerate(items):
            try:
                entry, seen, known = self._entry_of(data, subject, now_ms)
            except Rejected as exc:
                refused += 1
                # Every refusal of verify_envelope comes before or at the signature check:
                # nothing in it is attributable to a member, and anyone with NATS credentials
                # can make it. Counted; one line each only at debug level.
                if exc.code in JUNK_CODES:
                    junk.append(exc.code)
                    level = log.debug
                else:  # a member's validly signed envelope (a receipt that does not open)
                    level = log.warning
                level(
                    "audit_envelope_refused",
                    code=exc.code,
                    reason=exc.message,
                    sender=exc.sender,
                    msg_id=exc.msg_id.hex() if exc.msg_id else None,
                    subject=subject,
                )
                continue
            except Exception as exc:
                # A bug of ours on one envelope must not stall the log: without this, the
                # batch is never committed nor acknowledged, and redelivered forever.
                refused += 1
                log.error("audit_envelope_failed", error=type(exc).__name__, subject=subject)
                continue
            if (
                seen is not None
                and seen.outcome != "accepted"
                and not self._logged_envelope(seen.msg_id, seen.env_hash, entries)
            ):
                # A member refused an envelope this service never saw verified: junk whose
                # signature did not verify (current agents no longer receipt it). Logging each
                # would let one outsider's junk add a permanent entry per reader.
                junk.append(RECEIPT_OF_UNLOGGED)
                log.debug(
                    "audit_receipt_of_unlogged",
                    receiver=seen.receiver,
                    msg_id=seen.msg_id.hex(),
                    code=seen.code,
                )
                continue
            entries.append(entry)
            positions.append(position)
            receipts.append(seen)
            facts.append(known)
        indices: list[int | None] = [None] * len(items)
        appended = self._append(entries, receipts, facts)
        # Counted only once the batch is committed (a failed write retries the whole batch).
        self.stats.refused += refused
        self._count_junk(junk)
        for position, index in zip(positions, appended, strict=True):
            indices[position] = index
        for entry, index in zip(entries, appended, strict=True):
            if index is None:
                continue
            if entry.entry_type != "receipt" and entry.refs:
                self._flag(index, entry)
            self._flag_equivocation(index, entry)
        return indices

    def _logged_envelope(self, msg_id: bytes, env_hash: bytes, batch: list[LogEntry]) -> bool:
        """Whether the message (msg_id, envelope hash) is in the log or in ``batch``."""
        kinds = ("message", "retraction")
        if any(e.msg_id == msg_id and e.env_sha256 == env_hash and e.entry_type in kinds
               for e in batch):  # fmt: skip
            return True
        return any(
            e.env_sha256 == env_hash and e.entry_type in kinds for _, e in self.store.find(msg_id)
        )

    def _count_junk(self, codes: list[str]) -> None:
        for code in codes:
            self._junk[code] = self._junk.get(code, 0) + 1
        self.stats.junk += len(codes)

    def report_junk(self, *, force: bool = False) -> None:
        """One ``audit_junk`` event with the junk counted since the last one (by code), and
        one ``audit_proofs_limited`` with the proof requests refused E_RATE_LIMITED (by
        agency), at most every ``junk_report_s`` (and when stopping): a flood costs a line."""
        now = time.monotonic()
        if not (self._junk or self._limited) or (
            not force and now - self._junk_since < self.junk_report_s
        ):
            return
        seconds = round(now - self._junk_since, 1)
        if self._junk:
            log.warning("audit_junk", count=sum(self._junk.values()),
                        by_code=dict(sorted(self._junk.items())), seconds=seconds)  # fmt: skip
        if self._limited:
            log.warning("audit_proofs_limited", count=sum(self._limited.values()),
                        by_agency=dict(sorted(self._limited.items())), seconds=seconds)  # fmt: skip
        self._junk, self._limited = {}, {}
        self._junk_since = now

    def _flag_equivocation(self, index: int, entry: LogEntry) -> None:
        """Report (log event ``equivocation``) an envelope whose sender already logged
        another one under its msg_id. Both stay in the log: it is the evidence."""
        for flag in equivocation_flags(self.store, index, entry):
            if flag.parent_index > index:
                continue  # judged when the later one was appended
            self.stats.equivocations += 1
            log.warning(
                "equivocation",
                code=flag.code,
                reason=flag.why,
                index=index,
                other_index=flag.parent_index,
                msg_id=entry.msg_id.hex(),
                sender=entry.sender,
                channel=entry.channel,
                other_channel=flag.parent.channel,
            )

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
        parsed = parse_channel_subject(subject) if subject is not None else None
        channel = parsed.channel if parsed is not None else None
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

    def use_roster(self, roster: TrustedRoster, roster_bytes: bytes) -> list[int | None]:
        """Log a verified new roster (its entry and its key events, in one transaction) and
        use it from now on: its readers for receipts, its keys for checkpoints. Returns the
        entries' indices (None: already logged)."""
        previous = self.roster
        now_ms = self.clock()
        entries = [roster_entry(roster, roster_bytes, now_ms=now_ms)]
        entries += key_event_entries(
            previous, roster, roster_signers(roster_bytes, previous, roster), now_ms=now_ms
        )
        indices = self._append(entries)
        self.roster = roster
        self.roster_bytes = roster_bytes
        # Checkpoints signed under the earlier roster must still open when the next one is
        # checked against them, so the earlier keys stay beside the new ones.
        # (But never a key the new roster revoked as compromised.)
        compromised = {r.kid for r in roster.roster.revoked if r.reason == "compromised"}
        distrusted = [
            NoteVerifier.from_public_key(self.origin, key.pk)
            for member in roster.roster.members
            for key in member.sign_keys
            if kid_sig(key.pk) in compromised
        ]
        self.verifiers += [v for v in log_verifiers(roster) if v not in self.verifiers]
        self.verifiers = [v for v in self.verifiers if v not in distrusted]
        # A record refused under the old roster may verify under this one.
        self._judged = {key: logged for key, logged in self._judged.items() if logged}
        log.info(
            "audit_roster_updated",
            seq=roster.seq,
            previous_seq=previous.seq,
            key_events=len(entries) - 1,
        )
        return indices

    def reply_allowed(self, subject: str, reply: str) -> bool:
        """Whether to answer a request that came on ``subject`` with reply subject ``reply``:
        only into the private inbox of the active member whose proof subject it came on
        (``proof_requester``, a subject only that member may publish on), so a member
        cannot name another's inbox and spend the other's share of the rate limit.
        Remembers that member for the rate limit."""
        requester = proof_requester(self.roster.taskforce, subject)
        allowed = (
            requester is not None
            and is_member_inbox(self.roster, reply)
            and inbox_owner(reply) == requester
        )
        self._requester = requester if allowed else None
        return allowed

    def answer_request(self, request: bytes) -> bytes:
        """Answer one proof request from the committed log (``tfshare.audit.proofs``), or
        E_RATE_LIMITED, without reading the log, if its member is over its share."""
        requester, self._requester = self._requester, None
        if requester is not None and not self.proof_limit.allow(requester):
            self.stats.proofs_limited += 1
            self._limited[requester] = self._limited.get(requester, 0) + 1
            return rate_limited_response(self.roster.taskforce, requester, self.proof_limit)
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

    async def follow_records(self, conn: transport.Connection) -> None:
        """Look at the roster and registry buckets (at most every ``records_every_s``)."""
        if time.monotonic() < self._next_records:
            return
        self._next_records = time.monotonic() + self.records_every_s
        try:
            await self.follow_roster(conn)
            await self.follow_schemas(conn)
        except (BrokerError, AuditStoreUnavailable) as exc:
            # The envelopes matter more: go on consuming, look again next time (a record
            # whose entry could not be written is not marked as judged).
            log.warning("audit_records_unavailable", reason=exc.message)

    async def follow_roster(self, conn: transport.Connection) -> None:
        """Log and use a newer roster from the bucket, once ``accept_roster`` verified it."""
        if self.accept_roster is None:
            return
        try:
            data = await transport.get_roster(conn, self.roster.taskforce, known=self._seen_roster)
        except TrustError as exc:  # the bucket's pointer or object is bad: looked at again
            log.warning("audit_roster_refused", code=exc.code, reason=exc.message)
            return
        if data is None or data in (self.roster_bytes, self._seen_roster):
            return
        try:
            roster = self.accept_roster(data)
        except TrustError as exc:  # a verdict on these bytes: not looked at again
            self._seen_roster = data
            self.stats.records_refused += 1
            log.warning("audit_roster_refused", code=exc.code, reason=exc.message)
            return
        except TfshareError as exc:
            # Not a verdict (it could not be kept: a full disk, say): tried again next time.
            log.error("roster_update_failed", code=exc.code, reason=exc.message)
            return
        self.use_roster(roster, data)

    async def follow_schemas(self, conn: transport.Connection) -> None:
        """Log every registry record in the bucket not looked at yet that verifies."""
        taskforce = self.roster.taskforce
        entries: list[LogEntry] = []
        verified_keys: list[str] = []
        for subject, version in await transport.schema_keys(conn, taskforce):
            key = schema_key(subject, version)
            if key in self._judged:
                continue
            data = await transport.get_schema_record(conn, taskforce, subject, version)
            if data is None:
                continue  # deleted since it was listed
            try:
                verified = verify_record(data, self.roster)
                if (verified.record.subject, verified.record.version) != (subject, version):
                    raise TrustError(
                        f"the record under {key} is {verified.record.subject} version "
                        f"{verified.record.version}",
                        hint="a record belongs under the key of its own subject and version",
                        code=E_RECORD_INVALID,
                    )
            except TfshareError as exc:
                self._refuse_record(key, exc.code or E_RECORD_INVALID, exc.message)
                continue
            except Exception as exc:
                # Whatever else a hostile record provokes must not stop the service.
                self._refuse_record(key, E_RECORD_INVALID, type(exc).__name__)
                continue
            verified_keys.append(key)
            entries.append(schema_entry(data, verified, now_ms=self.clock()))
        self._append(entries)
        # Only once committed: a record whose entry could not be written is looked at again.
        self._judged.update(dict.fromkeys(verified_keys, True))

    def _refuse_record(self, key: str, code: str, reason: str) -> None:
        self._judged[key] = False
        self.stats.records_refused += 1
        log.warning("audit_schema_refused", key=key, code=code, reason=reason)

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
        """Consume until ``stop`` is set; reconnect with backoff while the broker is away.

        Nothing spins: a connection that fails before its first fetch (the broker away, the
        stream or consumer missing) waits ``reconnect_backoff``, longer each time; a log that
        cannot be written (``AuditStoreUnavailable``) is retried after ``store_backoff``
        while the batch waits unacknowledged. Only what verification finds in the log itself
        (``AuditTampered``, a log that does not extend its last checkpoint) stops the
        service."""
        if not await self._until_stored(stop, "start", self.start):
            log.info("audit_stopped", **self.stats.__dict__)
            return
        backoff = self.reconnect_backoff
        agency = self.identity.agency_id
        while not stop.is_set():
            self._fetched = False
            try:
                conn = await transport.connect(
                    self.url,
                    nkey_seed=self.identity.nats_seed_encoded(),
                    agency=agency,
                    name=f"tfshare-audit-{agency}",
                    reconnect=False,
                    tls=self.tls,
                )
            except BrokerError:
                retry_s = backoff.next()
                log.warning("broker_unavailable", url=self.url, retry_s=round(retry_s, 3))
                await self.pause(stop, retry_s)
                continue
            log.info("audit_connected", agency=agency, url=self.url)
            try:
                await self._consume(conn, stop)
            except BrokerError as exc:
                log.warning("broker_lost", reason=exc.message, fetched=self._fetched)
            except TrustError as exc:
                # The stored log does not extend the last checkpoint, or verification found
                # it altered: stop signing, say so.
                log.error("audit_log_inconsistent", code=exc.code, reason=exc.message)
                raise
            except AuditStoreUnavailable as exc:
                # A read of the log failed between writes (the disk, again): nothing
                # unpersisted was acknowledged; reconnect after a pause.
                log.error("audit_store_failed", what="read", failure=exc.failure.value,
                          reason=exc.message)  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Nothing unpersisted was acknowledged: log, pause, reconnect, go on.
                log.error("audit_error", error=type(exc).__name__)
            finally:
                await conn.close()
            if stop.is_set():
                break
            # A connection that was consuming is re-established at once (after the first
            # pause); one that keeps failing before its first fetch waits longer each time.
            if self._fetched:
                backoff.reset()
            await self.pause(stop, backoff.next())
        log.info("audit_stopped", **self.stats.__dict__)

    async def _until_stored(
        self, stop: asyncio.Event, what: str, write: Callable[[], object]
    ) -> bool:
        """``write()`` (a step that writes the log), again after ``store_backoff`` for as
        long as the log cannot be written; False if ``stop`` is set first (nothing of it was
        committed). A write error is not tampering: the failing transaction was rolled back,
        and what it would have written is written once the disk is back."""
        while True:
            try:
                write()
            except AuditStoreUnavailable as exc:
                retry_s = self.store_backoff.next()
                self.stats.store_failures += 1
                log.error(
                    "audit_store_failed",
                    what=what,
                    failure=exc.failure.value,
                    reason=exc.message,
                    hint=exc.hint,
                    retry_s=round(retry_s, 3),
                )
                await self.pause(stop, retry_s)
                if stop.is_set():
                    return False
                continue
            self.store_backoff.reset()
            return True

    async def store_batch(
        self, items: list[tuple[bytes, str | None]], stop: asyncio.Event
    ) -> list[int | None] | None:
        """``ingest`` a batch, retried while the log cannot be written; None if stopped
        before it was committed (then nothing of it may be acknowledged)."""
        appended: list[list[int | None]] = []
        if await self._until_stored(stop, "append", lambda: appended.append(self.ingest(items))):
            return appended[0]
        return None

    def _checkpoint_on_stop(self) -> None:
        try:
            self.maybe_checkpoint(force=True)
        except AuditStoreUnavailable as exc:
            # Not signed now: the entries are signed at the next start.
            log.error("audit_store_failed", what="checkpoint", failure=exc.failure.value,
                      reason=exc.message)  # fmt: skip

    async def _consume(self, conn: transport.Connection, stop: asyncio.Event) -> None:
        # One consumer on every channel's stream (the roster in force: a new channel is
        # read at the next refresh), fetched in turn as an agent's are.
        consumer = transport.Consumer(
            conn,
            self.roster.taskforce,
            self.identity.agency_id,
            channels=lambda: task_force_channels(self.roster),
            audit=True,
        )
        await consumer.bind()
        # Answered between fetches, on this loop: the store is never used from two places
        # at once.
        await transport.serve_requests(
            conn,
            proof_subjects(self.roster.taskforce),
            self.answer_request,
            reply_allowed=self.reply_allowed,
        )
        # Announce the latest checkpoint on (re)connecting: the bucket may have missed it.
        published: tuple[int, bytes] | None = None
        while True:
            stopping = stop.is_set()
            if not stopping:
                await self.follow_records(conn)
                deliveries = await consumer.fetch(self.batch, self.fetch_timeout)
                self._fetched = True
                if deliveries:
                    stored = await self.store_batch([(d.data, d.subject) for d in deliveries], stop)
                    if stored is None:
                        return  # stopped before the batch was committed: redelivered later
                    for delivery in deliveries:  # only now: the entries are committed
                        await delivery.ack()
            self.report_junk(force=stopping)
            if stopping:
                # Sign what is still unsigned, so no entry waits for the next start.
                self._checkpoint_on_stop()
            elif not await self._until_stored(stop, "checkpoint", self.maybe_checkpoint):
                continue  # stopped meanwhile: the next turn signs once more, then returns
            latest = self.store.latest_checkpoint()
            if latest is not None and latest != published:
                await transport.publish_checkpoint(conn, self.roster.taskforce, latest[1])
                published = latest
            if stopping:
                return
