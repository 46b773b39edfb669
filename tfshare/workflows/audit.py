"""Coordinators' audit commands: run the audit service, verify the log, trace a message,
list overdue replies, report on the period, export an offline proof and check one.

Owns: where the audit log lives (``audit.db`` in the agency's state directory), which keys
may sign its checkpoints (from the verified roster), reading the periods the CLI is given
(``--since``/``--until``), and turning store and bundle results into what the CLI renders.
No network here except through ``AuditService``; reading commands never create a log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from tfshare import msgref
from tfshare.audit import report as reports
from tfshare.audit.disclosure import Disclosed, check_disclosure
from tfshare.audit.disclosure import disclose as make_disclosure
from tfshare.audit.entry import RELATIONS, LogEntry, encode_entry
from tfshare.audit.evidence import (
    Evidence,
    check_evidence,
    encode_bundle,
    make_bundle,
)
from tfshare.audit.logstore import AuditStore, MessageFacts, ReceiptWords, verify_store
from tfshare.audit.merkle import leaf_hash, verify_inclusion
from tfshare.audit.note import checkpoint_origin, open_checkpoint
from tfshare.audit.service import (
    AuditService,
    CheckpointPolicy,
    HandlingFlag,
    RateLimit,
    equivocation_flags,
    handling_flags,
    log_verifiers,
)
from tfshare.audit.witness import WitnessError, merge_witnessed, require_witnesses
from tfshare.errors import InputError, RejectCode, RosterRejected, TrustError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.registry.book import Registry, shipped
from tfshare.registry.schema import split_name
from tfshare.roster import Anchor, RosterState, TrustedRoster, verify_roster
from tfshare.store import InboxItem, StateStore, kept_message_key
from tfshare.workflows.filekinds import load_anchor, read_kind
from tfshare.workflows.live import Agency
from tfshare.workflows.schemas import store_for

log = structlog.get_logger("tfshare.audit")


def _now() -> int:
    return time.time_ns() // 1_000_000


def audit_db(agency: Agency) -> Path:
    return agency.store.path.parent / "audit.db"


def existing_log(agency: Agency) -> Path:
    """The agency's audit log file; an ``InputError`` if there is none (reading never
    creates one)."""
    path = audit_db(agency)
    if not path.is_file():
        raise InputError(
            f"no audit log at {str(path)!r}",
            hint="the log is kept by the coordinator running 'tfshare audit serve': give "
            "that agency's --key and --state",
        )
    return path


def open_log(agency: Agency, *, create: bool = False) -> AuditStore:
    """The agency's audit log; only the audit service (``create``) makes a new one."""
    return AuditStore(audit_db(agency) if create else existing_log(agency))


def serve(
    agency: Agency,
    *,
    url: str,
    every: int,
    interval_s: float,
    proof_rate: float = 20.0,
    proof_burst: float = 40.0,
    metrics_port: int | None = None,
    metrics_ready: Callable[[str], None] = lambda _url: None,
) -> AuditService:
    """Run the audit service until SIGINT/SIGTERM; returns it (for its counts). Each member
    may ask ``proof_rate`` proofs a second, in bursts of ``proof_burst``. With
    ``metrics_port``, Prometheus ``/metrics`` and ``/healthz`` on 127.0.0.1 beside it."""
    if proof_rate <= 0 or proof_burst < 1:
        raise UsageError(
            f"a proof rate of {proof_rate:g}/s in bursts of {proof_burst:g} answers nothing",
            hint="give a rate above 0 and a burst of at least 1",
        )
    service = AuditService(
        identity=agency.identity(),
        roster=agency.roster,
        roster_bytes=read_kind(agency.roster_path, "roster"),
        store=open_log(agency, create=True),
        url=url,
        clock=_now,
        checkpoints=CheckpointPolicy(every=every, interval_s=interval_s),
        schemas=agency.registry,
        # A new roster in the broker's bucket is verified as the agents verify it (anchor,
        # rollback state), kept, logged, and followed.
        accept_roster=agency.accept_roster,
        proof_limit=RateLimit(rate=proof_rate, burst=proof_burst),
        tls=agency.tls,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        endpoint = None
        if metrics_port is not None:
            from tfshare import metrics  # noqa: PLC0415 - prometheus only when asked for

            registry = metrics.registry_of(
                metrics.AuditCollector(
                    service.stats, service.store.path, taskforce=agency.roster.taskforce
                )
            )
            endpoint = await metrics.start(
                registry, lambda: metrics.audit_health(service.store.path), port=metrics_port
            )
            metrics_ready(endpoint.url)
        try:
            await service.run(stop)
        finally:
            if endpoint is not None:
                await endpoint.close()

    asyncio.run(main())
    return service


@dataclass(frozen=True)
class Verification:
    entries: int
    checkpoints: int


def verify(agency: Agency) -> Verification:
    """Recompute the whole log and check every checkpoint (raises, naming the first bad
    entry or checkpoint)."""
    roster = agency.roster
    report = verify_store(
        existing_log(agency), log_verifiers(roster), checkpoint_origin(roster.taskforce)
    )
    return Verification(report.entries, report.checkpoints)


@dataclass(frozen=True)
class Trace:
    """What the log says about one message."""

    index: int
    entry: LogEntry
    checkpoint_size: int
    proof_verified: bool
    parents: list[tuple[str, LogEntry | None, bytes]]  # (relation, parent entry, parent msg_id)
    children: list[tuple[str, int, LogEntry]]  # (relation, index, child entry)
    receipts: list[tuple[int, ReceiptWords]]  # (log index of the receipt, what it says)
    # Recipients, and where the auditor read the body, schema, handling and response class;
    # None for a message logged without facts.
    facts: MessageFacts | None
    # Equivocation (E_EQUIVOCATION: the sender logged other envelopes under this msg_id),
    # handling rules broken by the message itself (towards its parents) and by the messages
    # derived from it (towards it).
    flags: list[HandlingFlag]


def _msg_id(text: str) -> bytes:
    try:
        msg_id = bytes.fromhex(text)
    except ValueError:
        msg_id = b""
    if len(msg_id) != 16:
        raise UsageError(
            f"{text!r} is not a message id", hint="give the 32 hex digits 'inbox list' shows"
        )
    return msg_id


_LOGGED = "check the id; the audit service logs messages as the broker carries them"


def _entries_named(
    store: AuditStore, ref: msgref.MsgRef, keep: Callable[[LogEntry], bool]
) -> list[tuple[str, bytes, tuple[int, LogEntry]]]:
    """Candidates ``(sender, msg_id, (index, entry))`` for ``ref``, in log order: an exact
    lookup for a full msg_id, a scan of the log for a prefix."""
    full = ref.full
    found = store.find(full) if full is not None else store.entries()
    return [
        (e.sender, e.msg_id, (i, e))
        for i, e in found
        if keep(e) and ref.matches(e.sender, e.msg_id)
    ]


def _message_index(store: AuditStore, ref: msgref.MsgRef) -> tuple[int, LogEntry]:
    """The message (or retraction) ``ref`` names: the first entry of that sender's msg_id."""
    return msgref.pick(
        ref,
        _entries_named(store, ref, lambda e: e.entry_type in ("message", "retraction")),
        where="in the audit log",
        hint=_LOGGED,
    )


def trace(agency: Agency, msg_id_text: str) -> Trace:
    """The message's entry, its lineage up and down, its receipts, what the auditor knows of
    it (recipients; handling and response class where it read the body), the handling rules
    broken around it, and its inclusion in the latest signed checkpoint (checked)."""
    # Closed when done: the agent's web inbox traces in a long-running process.
    with open_log(agency) as store:
        return _trace(agency.roster, store, msg_id_text)


def _trace(roster: TrustedRoster, store: AuditStore, msg_id_text: str) -> Trace:
    index, entry = _message_index(store, msgref.parse(msg_id_text))
    msg_id = entry.msg_id
    parents: list[tuple[str, LogEntry | None, bytes]] = []
    for relation, parent_id, _parent_hash in entry.refs:
        known = [e for _, e in store.find(parent_id) if e.msg_id == parent_id]
        parents.append(
            (RELATIONS.get(relation, str(relation)), known[0] if known else None, parent_id)
        )
    children: list[tuple[str, int, LogEntry]] = []
    receipts = store.receipts_for(msg_id)
    for i, other in store.referencing(msg_id):
        if other.entry_type == "receipt":
            continue
        for relation, parent_id, _ in other.refs:
            if parent_id == msg_id:
                children.append((RELATIONS.get(relation, str(relation)), i, other))
    # Other envelopes its sender logged under the same msg_id, then the handling rules.
    flags = equivocation_flags(store, index, entry) + handling_flags(store, index, entry)
    for i, child in {i: child for _, i, child in children}.items():
        # Only the child's breaches of this message's rules: a merge child's breach of
        # another parent belongs to that parent's trace.
        flags.extend(f for f in handling_flags(store, i, child) if f.parent_index == index)
    latest = store.latest_checkpoint()
    size, verified = 0, False
    if latest is not None and latest[0] > index:
        checkpoint, _ = open_checkpoint(
            latest[1], log_verifiers(roster), origin=checkpoint_origin(roster.taskforce)
        )
        proof = store.inclusion_proof(index, checkpoint.size)
        verify_inclusion(
            leaf_hash(encode_entry(entry)), index, checkpoint.size, proof, checkpoint.root_hash
        )
        size, verified = checkpoint.size, True
    facts = store.facts_of(index)
    return Trace(index, entry, size, verified, parents, children, receipts, facts, flags)


def overdue(agency: Agency, *, now_ms: int) -> reports.OverdueReport:
    """Requests past their reply deadline at ``now_ms`` (``tfshare.audit.report``)."""
    with open_log(agency) as store:
        return reports.overdue_report(store, now_ms=now_ms)


def report(agency: Agency, *, since: str, until: str | None = None) -> reports.Report:
    """Sent, received, rejected and receipt delays per agency and channel from ``since`` to
    ``until`` (exclusive; None: no end), each a date or an RFC 3339 time."""
    since_ms = parse_when(since, "--since")
    until_ms = None if until is None else parse_when(until, "--until")
    if until_ms is not None and until_ms <= since_ms:
        raise UsageError(
            f"--until {until!r} is not after --since {since!r}",
            hint="the period runs from --since (inclusive) to --until (exclusive)",
        )
    with open_log(agency) as store:
        return reports.report(store, since_ms=since_ms, until_ms=until_ms)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_when(text: str, option: str) -> int:
    """A date (YYYY-MM-DD: midnight UTC) or an RFC 3339 date-time, in ms since the epoch.
    A time without its offset is refused: which midnight it means would be a guess."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            moment = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)
        elif _DATE_TIME.fullmatch(value):
            moment = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        else:
            raise ValueError(value)
        return (moment - _EPOCH) // dt.timedelta(milliseconds=1)
    except (ValueError, OverflowError):
        raise UsageError(
            f"{option} {text[:64]!r} is not a date or an RFC 3339 time",
            hint="give a date as YYYY-MM-DD (midnight UTC) or a time with its offset, "
            "e.g. 2026-11-18T09:30:00Z or 2026-11-18T10:30:00+01:00",
        ) from None


def prove(
    agency: Agency,
    msg_id_text: str,
    out: Path,
    *,
    cosignatures: Callable[[], list[tuple[str, bytes]]] | None = None,
) -> int:
    """Write an offline evidence bundle for the entry with that msg_id (a message, a
    retraction, a roster...; the first such entry); returns the checkpoint size.

    If the roster asks for witnesses, the bundle is made against the largest stored
    checkpoint that covers the entry and that enough witnesses co-signed, with their
    cosignatures (``cosignatures`` fetches the witnesses' published ``(agency, note)``
    pairs: the broker's witness bucket); ``audit check`` would refuse any other."""
    ref = msgref.parse(msg_id_text)
    with open_log(agency) as store:
        size, bundle = _prove(agency.roster, store, ref, cosignatures)
    write_atomic(out, bundle)
    return size


def _prove(
    roster: TrustedRoster,
    store: AuditStore,
    ref: msgref.MsgRef,
    cosignatures: Callable[[], list[tuple[str, bytes]]] | None,
) -> tuple[int, bytes]:
    index, entry = msgref.pick(
        ref,
        _entries_named(store, ref, lambda _: True),
        where="in the audit log",
        hint=f"{_LOGGED}, and a roster's id is the first 16 bytes of the SHA-256 of the "
        "roster file",
    )
    msg_id = entry.msg_id
    covering = [(size, note) for size, note in store.checkpoints() if size > index]
    if not covering:
        raise InputError(
            f"entry {msg_id.hex()} is not yet covered by a signed checkpoint",
            hint="the audit service signs one every few seconds; try again shortly",
        )
    vkeys = [v.format() for v in log_verifiers(roster)]
    size, note = covering[-1]
    if roster.roster.witness_threshold > 0:
        published = [] if cosignatures is None else cosignatures()
        witnessed = _witnessed(covering, published, roster)
        if witnessed is None:
            raise InputError(
                f"no signed checkpoint covering entry {msg_id.hex()} has the "
                f"{roster.roster.witness_threshold} witness cosignatures the roster requires "
                "yet",
                hint="the agencies' agents co-sign new checkpoints every 30 s: try again "
                "shortly (the broker must be reachable for their cosignatures), or use "
                "--from-broker",
            )
        size, note = witnessed
    bundle = make_bundle(store, index, note, vkeys, roster.taskforce)
    return size, encode_bundle(bundle)


def _witnessed(
    checkpoints: list[tuple[int, bytes]],
    published: list[tuple[str, bytes]],
    roster: TrustedRoster,
) -> tuple[int, bytes] | None:
    """The largest of ``checkpoints`` that the published cosignatures witness enough for the
    roster, with those cosignatures merged into its note; None if none is."""
    for size, stored in reversed(checkpoints):
        note = merge_published(stored, published, roster)
        try:
            require_witnesses(note, roster)
        except WitnessError:
            continue
        return size, note
    return None


def merge_published(
    note: bytes, published: Iterable[tuple[str, bytes]], roster: TrustedRoster
) -> bytes:
    """``note`` with each publishing agency's own verified cosignature merged in
    (``merge_witnessed``); an agency whose note carried anything else is logged
    (``cosignature_dropped``): a member publishing bad lines, or a damaged note."""
    merged = merge_witnessed(note, published, roster)
    for agency in merged.dropped:
        log.warning(
            "cosignature_dropped",
            agency=agency,
            reason="its published witness note carries a line that is not its own valid "
            "cosignature of this checkpoint",
        )
    return merged.note


@dataclass(frozen=True)
class CheckerAgency:
    """The checking agency's own trust (its profile, or ``--state``): the state directory
    holding its roster rollback state, and with a profile its roster file and anchor."""

    state_dir: Path
    roster_path: Path | None = None
    anchor_path: Path | None = None


@dataclass(frozen=True)
class CurrentRoster:
    """The roster evidence is judged by, and where it came from: the ``given`` roster file,
    or the ``agency``'s own (newer) roster. ``rollback_checked``: verified against the
    checking agency's rollback state, so no older roster could be passed off as current."""

    trusted: TrustedRoster
    source: Literal["given", "agency"]
    rollback_checked: bool

    @property
    def seq(self) -> int:
        return self.trusted.seq

    @property
    def issued_ms(self) -> int:
        return self.trusted.roster.issued_ms


NO_ROSTER_HINT = (
    "give --roster with the task force's current roster and --anchor with the anchor you "
    "pinned (or check with your agency's profile or --state)"
)


def checker_roster(
    roster_path: Path | None,
    anchor_path: Path | None,
    *,
    now_ms: int,
    agency: CheckerAgency | None = None,
) -> CurrentRoster:
    """The roster a checker judges evidence by.

    Offline (no ``agency``): the roster given, verified against the anchor alone; nothing is
    read or written beyond the two files, so the same files get the same verdict on any
    machine. Such a roster may be older than the current one (the anchor is pinned once),
    which the verdict must say (``rollback_checked`` False).

    With the checking agency's state: the roster given is verified against its rollback
    state (an older roster than the one it trusts: E_ROSTER_ROLLBACK), and if the agency's
    own roster is newer that one is used, so its witness threshold and revocations apply.
    The state is only read. Without any roster: a ``TrustError`` (exit 6)."""
    if agency is None:
        if roster_path is None or anchor_path is None:
            raise TrustError(
                "no current roster to check against: evidence's own keys and rosters prove "
                "nothing (anyone can sign a log of their own, a disclosure carries the "
                "roster its maker chose)",
                hint=NO_ROSTER_HINT,
            )
        trusted, _ = verify_roster(
            read_kind(roster_path, "roster"),
            anchor=load_anchor(anchor_path),
            state=None,
            now_ms=now_ms,
        )
        return CurrentRoster(trusted, "given", rollback_checked=False)
    pinned = anchor_path or agency.anchor_path
    if pinned is None:
        raise UsageError(
            "no anchor to verify the roster with", hint="give --anchor, or use your profile"
        )
    anchor = load_anchor(pinned)
    state = _rollback_state(agency.state_dir, anchor.taskforce, required=agency.roster_path is None)
    own = given = None
    if agency.roster_path is not None:
        own, _ = verify_roster(
            read_kind(agency.roster_path, "roster"), anchor=anchor, state=state, now_ms=now_ms
        )
    if roster_path is not None:
        given = _given_with_state(read_kind(roster_path, "roster"), anchor, state, own, now_ms)
    checked = state is not None or own is not None
    if given is not None and (own is None or given.seq >= own.seq):
        return CurrentRoster(given, "given", rollback_checked=checked)
    if own is not None:
        return CurrentRoster(own, "agency", rollback_checked=checked)
    raise TrustError("no current roster to check against", hint=NO_ROSTER_HINT)


def _given_with_state(
    data: bytes,
    anchor: Anchor,
    state: RosterState | None,
    own: TrustedRoster | None,
    now_ms: int,
) -> TrustedRoster:
    """A roster handed over with the evidence, verified against the agency's rollback state
    and no older than (nor conflicting with) the agency's own roster."""
    given, _ = verify_roster(data, anchor=anchor, state=state, now_ms=now_ms)
    if own is not None and (
        given.seq < own.seq or (given.seq == own.seq and given.hash != own.hash)
    ):
        raise RosterRejected(
            RejectCode.E_ROSTER_ROLLBACK,
            f"the roster given (seq {given.seq}) is older than or conflicts with the one your "
            f"agency trusts (seq {own.seq})",
            hint="whoever handed it over may be hiding a revocation or a witness threshold: "
            "check with the current roster (your agency's is used if you give none)",
        )
    return given


def _rollback_state(state_dir: Path, taskforce: str, *, required: bool) -> RosterState | None:
    """The agency's persisted roster state, read only (a checker changes nothing). None if
    there is none yet and its roster file (a profile's) can stand in."""
    path = state_dir / "state.db"
    if not path.is_file():
        if not required:
            return None
        raise InputError(
            f"no agency state at {str(state_dir)!r}",
            hint="give the state directory your agency's commands use (--state), or none to "
            "check offline",
        )
    store = StateStore(path)
    try:
        return store.roster_state(taskforce)
    finally:
        store.close()


def trusted_keys(roster: TrustedRoster, keys: list[str]) -> list[str]:
    """The verifier keys to check a bundle with: the roster's log keys, and any the checker
    adds (a key retired from the roster since, say)."""
    return [v.format() for v in log_verifiers(roster)] + keys


def check(
    bundle_path: Path,
    *,
    roster: TrustedRoster | None,
    keys: list[str] | None = None,
    taskforce: str | None = None,
    envelope: Path | None = None,
) -> Evidence:
    """Check an evidence bundle against a roster verified with the checker's anchor: the
    checkpoint is signed by the roster's log keys and co-signed by its witness threshold of
    other members, the entry is in it, and the envelope (if given) is that entry's, validly
    signed by its sender. Without a roster nothing can be trusted: a TrustError (exit 6)."""
    if roster is None:
        raise TrustError(
            "no roster to check the bundle against: a bundle's own keys prove nothing (anyone "
            "can sign a log of their own)",
            hint="give the task force's roster and the anchor you pinned: --roster FILE "
            "--anchor FILE",
        )
    if taskforce is not None and taskforce != roster.taskforce:
        raise UsageError(
            f"--taskforce {taskforce!r} is not the roster's task force {roster.taskforce!r}",
            hint="give the roster and anchor of the task force the evidence is about",
        )
    data = read_bytes(bundle_path, what="proof bundle", limit=16 * 1024 * 1024)
    env = read_bytes(envelope, what="envelope", limit=2 * 1024 * 1024) if envelope else None
    return check_evidence(
        data, roster=roster, log_keys=trusted_keys(roster, list(keys or [])), envelope=env
    )


def disclose(agency: Agency, msg_id_text: str, out: Path) -> str:
    """Write the disclosure of a message in this agency's inbox; returns its sender."""
    msg_id = _msg_id(msg_id_text)
    items = [i for i in agency.store.inbox(limit=1_000_000) if i.msg_id == msg_id]
    if not items:
        raise InputError(
            f"message {msg_id.hex()} is not in this agency's inbox",
            hint="only a recipient can disclose a message: see 'tfshare inbox list'",
        )
    write_atomic(out, disclosure_bytes(agency, items[0]))
    return items[0].sender


def disclosure_bytes(agency: Agency, item: InboxItem) -> bytes:
    """The disclosure of one received message (its message key and the evidence to check
    it), as the file ``audit disclose`` writes: with the key kept with the row when there is
    one (it stays disclosable after its epoch key or retired secret is gone)."""
    identity = agency.identity()
    return make_disclosure(
        item.envelope,
        identity=identity,
        roster=agency.roster,
        roster_bytes=read_kind(agency.roster_path, "roster"),
        now_ms=item.received_ms,
        schema_record=_schema_record(agency, item.schema),
        epochs=agency.epochs,
        kept_key=kept_message_key(identity.state_key, item),
    )


def _schema_record(agency: Agency, name: str) -> bytes:
    """The signed registry record of a schema tfshare does not ship (so a checker outside the
    task force can read the body); empty for a shipped one."""
    if shipped().lookup(name) is not None:
        return b""
    subject, version = split_name(name)
    record = store_for(agency.registry_dir, agency.roster.taskforce).get(subject, version)
    if record is None:
        raise InputError(
            f"the registry record of {name} is not in this agency's registry cache",
            hint="the agent fetches it with the first message of that type; try again then",
        )
    return record


@dataclass(frozen=True)
class CheckedDisclosure:
    disclosed: Disclosed
    current: CurrentRoster  # the roster revocations were judged under


def check_disclosure_file(
    path: Path,
    anchor: Path | None,
    registry: Registry,
    *,
    roster: Path | None = None,
    proof: Path | None = None,
    agency: CheckerAgency | None = None,
    now_ms: int | None = None,
) -> CheckedDisclosure:
    """Check a disclosure with the anchor and the current roster (``checker_roster``: the
    ``roster`` given, verified against the checking ``agency``'s rollback state if there is
    one, or that agency's own newer roster), and for a key revoked as compromised since, the
    message's evidence bundle (``proof``). Without a current roster: a ``TrustError``."""
    current = checker_roster(roster, anchor, now_ms=now_ms or _now(), agency=agency)
    pinned = anchor or (agency.anchor_path if agency is not None else None)
    assert pinned is not None  # checker_roster refused otherwise
    data = read_bytes(path, what="disclosure", limit=16 * 1024 * 1024)
    bundle = read_bytes(proof, what="proof bundle", limit=16 * 1024 * 1024) if proof else None
    disclosed = check_disclosure(
        data,
        anchor=load_anchor(pinned),
        schemas=registry,
        latest_roster=current.trusted,
        proof=bundle,
        log_keys=lambda trusted: trusted_keys(trusted, []),
    )
    return CheckedDisclosure(disclosed, current)
