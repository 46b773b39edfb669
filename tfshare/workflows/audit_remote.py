"""Proofs from the broker: any member asks the running audit service for an inclusion or a
consistency proof and checks the answer itself.

Owns: connecting as the agency (its own NATS user and inbox), one request-reply on the task
force's proof subject, and checking the answer against the log keys of the agency's own
verified roster (``tfshare.audit.proofs``); an inclusion proof can be written as the bundle
file ``audit check`` reads. Nothing the service says is taken on trust: a proof that does not
verify is refused with its ``ResponseCode``, an error answer is reported with its
``AnswerCode``. No audit log is read or written here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import msgspec

from tfshare import transport
from tfshare.audit.evidence import (
    MAX_NOTE_SIZE,
    CheckedBundle,
    check_bundle,
    decode_bundle,
    encode_bundle,
)
from tfshare.audit.note import NoteError, NoteVerifier, checkpoint_origin, open_checkpoint
from tfshare.audit.proofs import (
    AnswerRefused,
    CheckedConsistency,
    ProofRequest,
    consistency_request,
    encode_request,
    inclusion_request,
    verify_consistency_response,
    verify_inclusion_response,
)
from tfshare.audit.service import log_verifiers
from tfshare.audit.witness import WitnessError, log_signed_only, require_witnesses
from tfshare.errors import BrokerError, UsageError
from tfshare.files import read_bytes, write_atomic
from tfshare.names import proof_subject
from tfshare.roster import TrustedRoster
from tfshare.workflows.audit import merge_published
from tfshare.workflows.live import Agency

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0

_NO_SERVICE_HINT: Final = (
    "a coordinator or auditor must be running 'tfshare audit serve' on this broker (a version "
    "that answers proof requests); or ask them for the bundle ('tfshare audit prove')"
)


def request_inclusion(
    agency: Agency,
    msg_id_hex: str,
    *,
    url: str,
    timeout: float = DEFAULT_TIMEOUT,
    out: Path | None = None,
    known: Path | None = None,
) -> CheckedBundle:
    """Ask the audit service to prove that message ``msg_id_hex`` is in its signed log and
    check the answer with the agency's roster. ``out``: write the bundle there (for
    ``audit check``). ``known``: a signed checkpoint file the agency already holds; the proof
    is then asked against that checkpoint and its root must be the one held.

    Without ``known`` the proof is asked against the largest checkpoint the witnesses
    co-signed often enough for the roster's threshold (else the latest), and the witnesses'
    cosignatures from the witness bucket are merged into the bundle's checkpoint, so that
    ``audit check`` can count them.

    Raises ``UsageError`` (a bad id), ``BrokerError`` (no broker, no audit service answering,
    no answer in time; ``BrokerAuthFailed`` if the broker does not know this agency),
    ``AnswerRefused`` (the service gave no proof, with its code, e.g. E_NOT_FOUND) or
    ``ResponseRejected`` (the answer is not a valid proof, with its code)."""
    msg_id = _msg_id(msg_id_hex)
    roster = agency.roster
    verifiers = log_verifiers(roster)
    held = _held(known, agency, verifiers)

    async def ask(
        conn: transport.Connection,
    ) -> tuple[ProofRequest, bytes, list[tuple[str, bytes]]]:
        published = await published_cosignatures(conn, roster)
        size = held[0] if held is not None else _witnessed_size(published, roster)
        request = inclusion_request(roster.taskforce, msg_id=msg_id, size=size)
        try:
            data = await _request(conn, agency, request, url=url, timeout=timeout)
            verify_inclusion_response(data, request, verifiers=verifiers)
        except AnswerRefused as exc:
            if size == 0 or held is not None or exc.code != "E_PAST_SIZE":
                raise
            # The entry is newer than every witnessed checkpoint: prove it in the latest.
            request = inclusion_request(roster.taskforce, msg_id=msg_id, size=0)
            data = await _request(conn, agency, request, url=url, timeout=timeout)
        return request, data, published

    request, data, published = _run(agency, ask, url=url, timeout=timeout)
    proven = verify_inclusion_response(
        data, request, verifiers=verifiers, known=None if held is None else held[1]
    )
    bundle = decode_bundle(proven.bundle)
    witnessed = msgspec.structs.replace(
        bundle, checkpoint=merge_published(bundle.checkpoint, published, roster)
    )
    data = encode_bundle(witnessed)
    checked = check_bundle(
        data, trusted_vkeys=[v.format() for v in verifiers], taskforce=roster.taskforce
    )
    if out is not None:
        write_atomic(out, data)
    return checked


async def published_cosignatures(
    conn: transport.Connection, roster: TrustedRoster
) -> list[tuple[str, bytes]]:
    """Every active member's latest published witness note, as ``(agency, note)``: the
    bucket's key is the agency, which alone may write it (unverified: each agency's own
    cosignature line is checked on merging, ``merge_published``)."""
    published: list[tuple[str, bytes]] = []
    for member in roster.roster.members:
        if member.status == "active":
            value = await transport.get_cosignature(conn, roster.taskforce, member.agency_id)
            if value is not None:
                published.append((member.agency_id, value))
    return published


def fetch_cosignatures(
    agency: Agency, *, url: str, timeout: float = DEFAULT_TIMEOUT
) -> list[tuple[str, bytes]]:
    """Every active member's latest published witness note, fetched as ``agency``."""

    async def fetch(conn: transport.Connection) -> list[tuple[str, bytes]]:
        return await published_cosignatures(conn, agency.roster)

    return _run(agency, fetch, url=url, timeout=timeout)


def _witnessed_size(published: list[tuple[str, bytes]], roster: TrustedRoster) -> int:
    """The size of the largest log-signed checkpoint the witnesses co-signed often enough
    for the roster's threshold; 0 (the latest) if none is or none is required."""
    if roster.roster.witness_threshold == 0:
        return 0
    origin = checkpoint_origin(roster.taskforce)
    verifiers = log_verifiers(roster)
    sizes: dict[int, bytes] = {}
    for _, note in published:
        try:
            checkpoint, _ = open_checkpoint(note, verifiers, origin=origin)
        except NoteError:
            continue
        # The bare checkpoint: whatever else a member's note carries is not merged unchecked.
        sizes.setdefault(checkpoint.size, log_signed_only(note, roster.taskforce))
    for size in sorted(sizes, reverse=True):
        try:
            require_witnesses(merge_published(sizes[size], published, roster), roster)
        except WitnessError:
            continue
        return size
    return 0


def request_consistency(
    agency: Agency,
    old_size: int | None = None,
    *,
    new_size: int | None = None,
    known: Path | None = None,
    url: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckedConsistency:
    """Ask the audit service to prove that its signed tree of ``old_size`` entries is a
    prefix of its tree of ``new_size`` (default: its latest signed checkpoint). With
    ``known`` (a signed checkpoint file the agency holds) the old size is that checkpoint's
    and its root must be the one the proof starts from: a service that rewrote or forked
    its log since is caught (E_RESPONSE_FORK). Raises as ``request_inclusion``."""
    verifiers = log_verifiers(agency.roster)
    held = _held(known, agency, verifiers)
    if held is not None:
        if old_size is not None and old_size != held[0]:
            raise UsageError(
                f"the checkpoint held is of size {held[0]}, not {old_size}",
                hint="give either the old size or the checkpoint file, or matching ones",
            )
        old_size = held[0]
    if old_size is None or old_size < 1:
        raise UsageError(
            "no old tree size to prove consistency from",
            hint="give the size of a checkpoint the audit service published (1 or more), or "
            "the checkpoint file itself",
        )
    request = consistency_request(agency.roster.taskforce, old_size, new_size or 0)
    data = _ask(agency, request, url=url, timeout=timeout)
    return verify_consistency_response(
        data, request, verifiers=verifiers, known=None if held is None else held[1]
    )


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


def _held(
    path: Path | None, agency: Agency, verifiers: list[NoteVerifier]
) -> tuple[int, bytes] | None:
    """(size, note) of a checkpoint file the agency holds, verified with its roster (a note
    it cannot trust is no reference to hold the service to)."""
    if path is None:
        return None
    note = read_bytes(path, what="checkpoint", limit=MAX_NOTE_SIZE)
    checkpoint, _ = open_checkpoint(
        note, verifiers, origin=checkpoint_origin(agency.roster.taskforce)
    )
    return checkpoint.size, note


def _ask(agency: Agency, request: ProofRequest, *, url: str, timeout: float) -> bytes:
    async def ask(conn: transport.Connection) -> bytes:
        return await _request(conn, agency, request, url=url, timeout=timeout)

    return _run(agency, ask, url=url, timeout=timeout)


async def _request(
    conn: transport.Connection, agency: Agency, request: ProofRequest, *, url: str, timeout: float
) -> bytes:
    # The connection's own proof subject: the only one its agency may publish on, and the
    # one the audit service answers into that agency's inbox from.
    subject = proof_subject(agency.roster.taskforce, conn.member)
    try:
        return await transport.request(conn, subject, encode_request(request), timeout=timeout)
    except transport.NoResponders:
        raise BrokerError(
            f"no audit service is answering proof requests on {subject} at {url}",
            hint=_NO_SERVICE_HINT,
        ) from None
    except transport.NoAnswer:
        raise BrokerError(
            f"the audit service did not answer within {timeout:g} s",
            hint="it may be busy or stopping: try again, or with a longer timeout",
        ) from None


def _run(
    agency: Agency,
    work: Callable[[transport.Connection], Awaitable[T]],
    *,
    url: str,
    timeout: float,
) -> T:
    """Connect as the agency, run ``work`` with the connection, close it."""
    identity = agency.identity()

    async def main() -> T:
        conn = await transport.connect(
            url,
            nkey_seed=identity.nats_seed_encoded(),
            agency=identity.agency_id,
            name=f"tfshare-proof-{identity.agency_id}",
            reconnect=False,
            connect_timeout=min(timeout, 2.0),
            tls=agency.tls,
            js_domain=agency.js_domain,
        )
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())
