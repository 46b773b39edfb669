"""Proofs on request: the wire formats of inclusion and consistency proof requests and
answers, the service's side (``answer``: a request in, response bytes out, from the stored
log) and the client's side (``verify_inclusion_response``, ``verify_consistency_response``).

Owns: ``ProofRequest`` and its two queries, ``ProofResponse`` and its three answers, their
strict encodings, ``AnswerCode`` (why the service did not give a proof), ``ResponseCode``
(why a client refused an answer) and the errors carrying them.

Request (canonical msgpack array, at most ``MAX_REQUEST_SIZE`` bytes)::

    ["tfshare-proof-request/1", taskforce, query]
    query = ["inclusion", msg_id, index, size]
          | ["consistency", old_size, new_size]

An inclusion query names the entry by ``msg_id`` (16 bytes; ``index`` is then 0) or, with an
empty ``msg_id``, by its 0-based log ``index``. ``size`` is the tree size of a signed
checkpoint the client already holds (the proof is then against exactly that checkpoint), or 0
for the service's latest signed checkpoint. A consistency query asks for the proof that the
tree at ``old_size`` (>= 1) is a prefix of the tree at ``new_size`` (>= old_size), or of the
latest signed checkpoint if ``new_size`` is 0. Both sizes must be sizes of signed checkpoints.

Response (canonical msgpack array, at most ``MAX_RESPONSE_SIZE`` bytes)::

    ["tfshare-proof-response/1", taskforce, answer]
    answer = ["error", code, message]
           | ["inclusion", bundle]
           | ["consistency", old checkpoint note, new checkpoint note, [hash, ...]]

``bundle`` is the ``tfshare-proof/1`` evidence bundle of ``tfshare.audit.evidence`` (entry
bytes, index, tree size, audit path, signed checkpoint, verifier keys): the client checks it
offline and can keep it as the file ``audit check`` reads. The consistency answer carries the
RFC 6962 proof and both signed checkpoints. ``code`` is one of ``AnswerCode``; ``message`` is
printable ASCII for people. An error answer is not signed: it says only that this service did
not give a proof, never anything about the log.

Trust: a client accepts a proof only if every checkpoint in it verifies under the log's
verifier keys from its own verified roster (``tfshare.audit.service.log_verifiers``), the
proof leads to the signed root, and the answer is about what it asked (task force, entry,
sizes). It refuses anything else with a ``ResponseRejected`` naming a ``ResponseCode``; given
a checkpoint it already holds, it also refuses a signed root that contradicts it
(E_RESPONSE_FORK: the log was forked or rewritten after signing).

Never: read the clock or the network; put an entry's payload anywhere (entries hold hashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, Protocol

import msgspec

from tfshare.audit.entry import LogEntry
from tfshare.audit.evidence import (
    MAX_BUNDLE_SIZE,
    MAX_NOTE_SIZE,
    MAX_PROOF_HASHES,
    BundleCode,
    BundleError,
    CheckedBundle,
    Hash,
    TreeSize,
    check_bundle,
    encode_bundle,
    make_bundle,
)
from tfshare.audit.merkle import ProofError, verify_consistency
from tfshare.audit.note import Checkpoint, NoteCode, NoteError, NoteVerifier, checkpoint_origin
from tfshare.audit.note import open_checkpoint as _open_checkpoint
from tfshare.encoding import (
    DECODE_ERRORS,
    Name,
    NonCanonical,
    decode_canonical,
    encode,
    safe_reason,
)
from tfshare.errors import InputError, TfshareError, TrustError

REQUEST_FORMAT: Final = "tfshare-proof-request/1"
RESPONSE_FORMAT: Final = "tfshare-proof-response/1"
MSG_ID_SIZE: Final = 16
# A request is a few short fields: anything larger is refused before any decoding work.
MAX_REQUEST_SIZE: Final = 256
MAX_MESSAGE_LENGTH: Final = 200
# The largest answer: two checkpoint notes and a full proof, or one bundle, plus framing.
MAX_RESPONSE_SIZE: Final = max(2 * MAX_NOTE_SIZE + 33 * MAX_PROOF_HASHES, MAX_BUNDLE_SIZE) + 1024


class AnswerCode(StrEnum):
    """Why the audit service gave no proof. Stable: clients and tests match on them."""

    E_MALFORMED = "E_MALFORMED"  # the request is not a canonical tfshare-proof-request/1
    E_TASKFORCE = "E_TASKFORCE"  # the request is about another task force's log
    E_NOT_FOUND = "E_NOT_FOUND"  # no entry with that msg_id is in the log
    E_PAST_SIZE = "E_PAST_SIZE"  # an index or a tree size beyond the log (or the checkpoint)
    E_NO_CHECKPOINT = "E_NO_CHECKPOINT"  # no signed checkpoint of that size / covering it yet
    E_UNAVAILABLE = "E_UNAVAILABLE"  # the service cannot answer from its log now
    E_RATE_LIMITED = "E_RATE_LIMITED"  # this member asked faster than its share


class ResponseCode(StrEnum):
    """Why a client refused an answer. Stable: callers and tests match on them."""

    E_RESPONSE_MALFORMED = "E_RESPONSE_MALFORMED"  # not a canonical response (or bundle)
    E_RESPONSE_MISMATCH = "E_RESPONSE_MISMATCH"  # answers another question than the one asked
    E_RESPONSE_SIGNATURE = "E_RESPONSE_SIGNATURE"  # a checkpoint not signed by the log's keys
    E_RESPONSE_PROOF = "E_RESPONSE_PROOF"  # the proof does not lead to the signed root(s)
    E_RESPONSE_FORK = "E_RESPONSE_FORK"  # a signed root contradicts a checkpoint already held


_ANSWER_HINTS: Final = {
    AnswerCode.E_MALFORMED: "the request was damaged or made by another version: update tfshare",
    AnswerCode.E_TASKFORCE: "ask the audit service of the task force the log belongs to",
    AnswerCode.E_NOT_FOUND: (
        "check the message id ('tfshare inbox list'); the audit service logs a message once "
        "the broker carried it, so a message sent moments ago may not be there yet"
    ),
    AnswerCode.E_PAST_SIZE: "the log is not that large (yet): check the index or the size",
    AnswerCode.E_NO_CHECKPOINT: (
        "the service has no signed checkpoint for that: it signs one every few seconds after "
        "new entries, so try again shortly; for a size, give one of a checkpoint it published"
    ),
    AnswerCode.E_RATE_LIMITED: (
        "the audit service answers each member a limited number of proofs a second; wait a "
        "moment and ask again"
    ),
    AnswerCode.E_UNAVAILABLE: (
        "the audit service could not read its log: its operator should run 'tfshare audit "
        "verify' and look at the service's log events"
    ),
}
_GENERIC_ANSWER_HINT: Final = "the audit service gave no proof; see the code"

_RESPONSE_HINTS: Final = {
    ResponseCode.E_RESPONSE_MALFORMED: (
        "the answer is not an intact proof response: damaged in transit, or another version "
        "answered; try again, and report it if it persists"
    ),
    ResponseCode.E_RESPONSE_MISMATCH: (
        "the answer is not about what was asked: do not use it; report it to the task force's "
        "coordinators with the code"
    ),
    ResponseCode.E_RESPONSE_SIGNATURE: (
        "the checkpoint is not signed by a log key of your verified roster: the answer is not "
        "evidence; if your roster is current, report it to the coordinators"
    ),
    ResponseCode.E_RESPONSE_PROOF: (
        "the proof does not hold against the signed checkpoint: the service's log or the "
        "answer was altered; keep it and report it to the coordinators"
    ),
    ResponseCode.E_RESPONSE_FORK: (
        "the audit service signed two different trees of the same size (a split view or a "
        "rewritten log): keep both checkpoints as evidence and report it to the task force"
    ),
}


class RequestError(InputError):
    """A proof request that cannot be sent or answered; ``code`` is an ``AnswerCode``."""

    def __init__(self, code: AnswerCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _ANSWER_HINTS[code], code=code.value)
        self.answer_code = code


class AnswerRefused(InputError):
    """The audit service answered with an error instead of a proof; ``code`` is its code
    (normally an ``AnswerCode``; an unknown one is passed on as received)."""

    def __init__(self, code: str, message: str) -> None:
        known = code in AnswerCode.__members__
        super().__init__(
            message,
            hint=_ANSWER_HINTS[AnswerCode(code)] if known else _GENERIC_ANSWER_HINT,
            code=code,
        )


class ResponseRejected(TrustError):
    """A client refused an answer; ``code`` is a ``ResponseCode``."""

    def __init__(self, code: ResponseCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _RESPONSE_HINTS[code], code=code.value)
        self.response_code = code


# --- wire formats ----------------------------------------------------------------------------

MsgId = Annotated[bytes, msgspec.Meta(max_length=MSG_ID_SIZE)]
Note = Annotated[bytes, msgspec.Meta(max_length=MAX_NOTE_SIZE)]
Code = Annotated[str, msgspec.Meta(pattern=r"^E_[A-Z_]{1,40}\Z")]
Message = Annotated[str, msgspec.Meta(pattern=rf"^[ -~]{{0,{MAX_MESSAGE_LENGTH}}}\Z")]


class InclusionQuery(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag="inclusion"
):
    """Prove that an entry (by msg_id, or by index if msg_id is empty) is in a signed tree
    (of ``size``, or the latest if 0)."""

    msg_id: MsgId
    index: TreeSize
    size: TreeSize


class ConsistencyQuery(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag="consistency"
):
    """Prove that the signed tree of ``old_size`` is a prefix of the one of ``new_size`` (or
    of the latest if 0)."""

    old_size: TreeSize
    new_size: TreeSize


class ProofRequest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    format: str
    taskforce: Name
    query: InclusionQuery | ConsistencyQuery


class ErrorAnswer(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag="error"
):
    code: Code
    message: Message


class InclusionAnswer(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag="inclusion"
):
    bundle: Annotated[bytes, msgspec.Meta(max_length=MAX_BUNDLE_SIZE)]


class ConsistencyAnswer(
    msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag="consistency"
):
    old_checkpoint: Note
    new_checkpoint: Note
    proof: Annotated[list[Hash], msgspec.Meta(max_length=MAX_PROOF_HASHES)]


class ProofResponse(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    format: str
    taskforce: Name
    answer: ErrorAnswer | InclusionAnswer | ConsistencyAnswer


_request_decoder: Final = msgspec.msgpack.Decoder(ProofRequest)
_response_decoder: Final = msgspec.msgpack.Decoder(ProofResponse)


def inclusion_request(
    taskforce: str, *, msg_id: bytes | None = None, index: int | None = None, size: int = 0
) -> ProofRequest:
    """The request for an entry's inclusion proof: by ``msg_id`` or by ``index`` (exactly
    one), against the checkpoint of ``size`` (0: the service's latest)."""
    if (msg_id is None) == (index is None):
        raise RequestError(AnswerCode.E_MALFORMED, "name the entry by msg_id or by index")
    query = InclusionQuery(msg_id=msg_id or b"", index=index or 0, size=size)
    return _checked_request(ProofRequest(REQUEST_FORMAT, taskforce, query))


def consistency_request(taskforce: str, old_size: int, new_size: int = 0) -> ProofRequest:
    """The request for a consistency proof from ``old_size`` to ``new_size`` (0: latest)."""
    return _checked_request(
        ProofRequest(REQUEST_FORMAT, taskforce, ConsistencyQuery(old_size, new_size))
    )


def _checked_request(request: ProofRequest) -> ProofRequest:
    # Built requests get exactly the checks received ones do.
    return decode_request(encode_request(request))


def encode_request(request: ProofRequest) -> bytes:
    """The canonical bytes of ``request``; ``RequestError`` (E_MALFORMED) if a field is of
    the wrong type or out of range."""
    try:
        return encode(request)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(
            AnswerCode.E_MALFORMED, "the request holds a value of the wrong type"
        ) from None


def decode_request(data: bytes) -> ProofRequest:
    """Strictly decode a request: at most ``MAX_REQUEST_SIZE`` bytes, canonical msgpack, the
    format ``tfshare-proof-request/1`` and the rules of the module docstring; anything else
    raises ``RequestError`` with code E_MALFORMED (and never another exception)."""
    if type(data) is not bytes:
        raise RequestError(AnswerCode.E_MALFORMED, "a request is bytes")
    if len(data) > MAX_REQUEST_SIZE:
        raise RequestError(
            AnswerCode.E_MALFORMED, f"request is {len(data)} bytes, more than {MAX_REQUEST_SIZE}"
        )
    try:
        request = decode_canonical(data, _request_decoder)
    except DECODE_ERRORS as exc:
        reason = "not the canonical encoding" if isinstance(exc, NonCanonical) else safe_reason(exc)
        raise RequestError(AnswerCode.E_MALFORMED, f"request does not decode: {reason}") from None
    if request.format != REQUEST_FORMAT:
        raise RequestError(AnswerCode.E_MALFORMED, f"request format is not {REQUEST_FORMAT!r}")
    query = request.query
    if isinstance(query, InclusionQuery):
        if len(query.msg_id) not in (0, MSG_ID_SIZE):
            raise RequestError(AnswerCode.E_MALFORMED, "msg_id is neither empty nor 16 bytes")
        if query.msg_id and query.index != 0:
            raise RequestError(AnswerCode.E_MALFORMED, "an entry named by msg_id must have index 0")
    else:
        if query.old_size < 1:
            raise RequestError(
                AnswerCode.E_MALFORMED, "a consistency proof from the empty tree proves nothing"
            )
        if query.new_size and query.new_size < query.old_size:
            raise RequestError(AnswerCode.E_MALFORMED, "old_size is larger than new_size")
    return request


def encode_response(response: ProofResponse) -> bytes:
    return encode(response)


def decode_response(data: bytes) -> ProofResponse:
    """Strictly decode a response; ``ResponseRejected`` (E_RESPONSE_MALFORMED) otherwise."""
    if type(data) is not bytes or len(data) > MAX_RESPONSE_SIZE:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MALFORMED, "the answer is not bytes of a bounded size"
        )
    try:
        response = decode_canonical(data, _response_decoder)
    except DECODE_ERRORS as exc:
        reason = "not the canonical encoding" if isinstance(exc, NonCanonical) else safe_reason(exc)
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MALFORMED, f"the answer does not decode: {reason}"
        ) from None
    if response.format != RESPONSE_FORMAT:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MALFORMED, f"the answer's format is not {RESPONSE_FORMAT!r}"
        )
    return response


# --- the service's side ----------------------------------------------------------------------


class ProofStore(Protocol):
    """What ``answer`` reads (``tfshare.audit.logstore.AuditStore`` has it). Every method
    answers from committed data only."""

    @property
    def size(self) -> int: ...

    def entry_bytes(self, index: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]: ...

    def find(self, msg_id: bytes) -> list[tuple[int, LogEntry]]: ...

    def checkpoints(self) -> list[tuple[int, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Answered:
    """A response and what it was, for the service's log event (never the bytes)."""

    data: bytes
    kind: str  # "inclusion", "consistency", or "unknown" (the request did not decode)
    code: str | None  # None: a proof was given; else the AnswerCode
    index: int | None = None
    size: int | None = None


class _Refuse(Exception):
    def __init__(self, code: AnswerCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def answer(
    store: ProofStore, request: bytes, *, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> bytes:
    """The response bytes to ``request``, from ``store`` (see ``handle``)."""
    return handle(store, request, taskforce=taskforce, verifiers=verifiers).data


def handle(
    store: ProofStore, request: bytes, *, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> Answered:
    """Answer one request from the stored log and its stored signed checkpoints.

    Never raises: a bad request is answered E_MALFORMED, a log that cannot be read
    E_UNAVAILABLE. Proofs are only given against a stored checkpoint that verifies under
    ``verifiers`` (the log's keys), and each proof is verified before it is handed out.
    """
    try:
        parsed = decode_request(request)
    except RequestError as exc:
        return _error(taskforce, "unknown", exc.answer_code, exc.message)
    query = parsed.query
    kind = "inclusion" if isinstance(query, InclusionQuery) else "consistency"
    if parsed.taskforce != taskforce:
        return _error(
            taskforce,
            kind,
            AnswerCode.E_TASKFORCE,
            f"this is the audit log of task force {taskforce}, not {parsed.taskforce}",
        )
    try:
        if isinstance(query, InclusionQuery):
            return _inclusion(store, query, taskforce, verifiers)
        return _consistency(store, query, taskforce, verifiers)
    except _Refuse as refused:
        return _error(taskforce, kind, refused.code, refused.message)
    except TfshareError as exc:
        # A damaged or locked log, a stored checkpoint that does not verify: the service's
        # problem, reported as such (its own log event carries the code).
        return _error(
            taskforce,
            kind,
            AnswerCode.E_UNAVAILABLE,
            f"the service cannot answer from its log ({exc.code or type(exc).__name__})",
        )
    except Exception as exc:
        # Not a request's fault and not one we foresaw: still an answer, never a dead loop.
        return _error(
            taskforce,
            kind,
            AnswerCode.E_UNAVAILABLE,
            f"the service cannot answer from its log ({type(exc).__name__})",
        )


def _inclusion(
    store: ProofStore, query: InclusionQuery, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> Answered:
    size_now = store.size
    if query.msg_id:
        found = store.find(query.msg_id)
        if not found:
            raise _Refuse(AnswerCode.E_NOT_FOUND, f"no entry {query.msg_id.hex()} in the log")
        index = found[0][0]  # the first entry of that id (the log keeps them in order)
    else:
        index = query.index
        if index >= size_now:
            raise _Refuse(
                AnswerCode.E_PAST_SIZE, f"index {index} is past the log's {size_now} entries"
            )
    stored = store.checkpoints()
    if query.size:
        if query.size > size_now:
            raise _Refuse(
                AnswerCode.E_PAST_SIZE,
                f"size {query.size} is past the log's {size_now} entries",
            )
        if index >= query.size:
            raise _Refuse(
                AnswerCode.E_PAST_SIZE,
                f"entry {index} is not inside the tree of {query.size} entries",
            )
        note = dict(stored).get(query.size)
        if note is None:
            raise _Refuse(AnswerCode.E_NO_CHECKPOINT, f"no signed checkpoint of size {query.size}")
    else:
        if not stored or stored[-1][0] <= index:
            raise _Refuse(
                AnswerCode.E_NO_CHECKPOINT,
                f"entry {index} is not yet covered by a signed checkpoint",
            )
        note = stored[-1][1]
    vkeys = [verifier.format() for verifier in verifiers]
    # make_bundle checks the bundle against the log's keys before handing it out.
    bundle = make_bundle(store, index, note, vkeys, taskforce)
    return Answered(
        _respond(taskforce, InclusionAnswer(encode_bundle(bundle))),
        "inclusion",
        None,
        index=index,
        size=bundle.size,
    )


def _consistency(
    store: ProofStore, query: ConsistencyQuery, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> Answered:
    size_now = store.size
    for size in (query.old_size, query.new_size):
        if size > size_now:
            raise _Refuse(
                AnswerCode.E_PAST_SIZE, f"size {size} is past the log's {size_now} entries"
            )
    stored = store.checkpoints()
    notes = dict(stored)
    old_note = notes.get(query.old_size)
    if old_note is None:
        raise _Refuse(AnswerCode.E_NO_CHECKPOINT, f"no signed checkpoint of size {query.old_size}")
    new_size = query.new_size or stored[-1][0]
    new_note = notes.get(new_size)
    if new_note is None:
        raise _Refuse(AnswerCode.E_NO_CHECKPOINT, f"no signed checkpoint of size {new_size}")
    proof = store.consistency_proof(query.old_size, new_size)
    # Never hand out a proof that would not verify: the stored tree or checkpoints changed.
    origin = checkpoint_origin(taskforce)
    old, _ = _open_checkpoint(old_note, verifiers, origin=origin)
    new, _ = _open_checkpoint(new_note, verifiers, origin=origin)
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    return Answered(
        _respond(taskforce, ConsistencyAnswer(old_note, new_note, proof)),
        "consistency",
        None,
        size=new_size,
    )


def _error(taskforce: str, kind: str, code: AnswerCode, message: str) -> Answered:
    return Answered(_respond(taskforce, ErrorAnswer(code.value, _printable(message))), kind, code)


def _respond(taskforce: str, result: ErrorAnswer | InclusionAnswer | ConsistencyAnswer) -> bytes:
    # A request for a task force that is not a name is answered under the service's own.
    return encode_response(ProofResponse(RESPONSE_FORMAT, taskforce, result))


def _printable(text: str) -> str:
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text)
    return cleaned[:MAX_MESSAGE_LENGTH]


# --- the client's side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvenInclusion:
    """A verified inclusion answer: what it proves, and the bundle bytes (``audit check``
    reads exactly these)."""

    checked: CheckedBundle
    bundle: bytes


@dataclass(frozen=True, slots=True)
class CheckedConsistency:
    """A verified consistency answer: the old signed tree is a prefix of the new one."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    old_checkpoint: bytes
    new_checkpoint: bytes
    signers: tuple[str, ...]  # key names whose signatures on the new checkpoint verified


def _answer_of(
    data: bytes, request: ProofRequest, want: type[InclusionAnswer] | type[ConsistencyAnswer]
) -> InclusionAnswer | ConsistencyAnswer:
    response = decode_response(data)
    result = response.answer
    if isinstance(result, ErrorAnswer):
        # Unsigned, so it proves nothing either way; the code says why there is no proof
        # (E_TASKFORCE comes from the log of the task force named in the response).
        raise AnswerRefused(result.code, f"the audit service gave no proof: {result.message}")
    if response.taskforce != request.taskforce:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the answer is about task force {response.taskforce}, not {request.taskforce}",
        )
    if not isinstance(result, want):
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH, "the answer is another kind of proof than asked"
        )
    return result


_BUNDLE_CODES: Final = {
    BundleCode.E_BUNDLE_MALFORMED: ResponseCode.E_RESPONSE_MALFORMED,
    BundleCode.E_BUNDLE_TASKFORCE: ResponseCode.E_RESPONSE_MISMATCH,
    BundleCode.E_BUNDLE_SIGNATURE: ResponseCode.E_RESPONSE_SIGNATURE,
    BundleCode.E_BUNDLE_PROOF: ResponseCode.E_RESPONSE_PROOF,
    BundleCode.E_BUNDLE_INDEX: ResponseCode.E_RESPONSE_PROOF,
    BundleCode.E_BUNDLE_ENVELOPE: ResponseCode.E_RESPONSE_MISMATCH,
}

_NOTE_CODES: Final = {
    NoteCode.E_NOTE_MALFORMED: ResponseCode.E_RESPONSE_MALFORMED,
    NoteCode.E_NOTE_TOO_MANY_SIGS: ResponseCode.E_RESPONSE_MALFORMED,
    NoteCode.E_CHECKPOINT_MALFORMED: ResponseCode.E_RESPONSE_MALFORMED,
    NoteCode.E_CHECKPOINT_ORIGIN: ResponseCode.E_RESPONSE_MISMATCH,
}


def verify_inclusion_response(
    data: bytes,
    request: ProofRequest,
    *,
    verifiers: Sequence[NoteVerifier],
    known: bytes | None = None,
) -> ProvenInclusion:
    """Check an answer to an inclusion ``request`` with the log's ``verifiers`` (from the
    client's verified roster); returns what it proves, or raises ``AnswerRefused`` (the
    service gave no proof) or ``ResponseRejected`` (the answer is not a valid proof of what
    was asked). ``known`` is a signed checkpoint the client already holds of the size it
    asked for: the proof's signed root must then be its root."""
    query = request.query
    if not isinstance(query, InclusionQuery):
        raise RequestError(AnswerCode.E_MALFORMED, "not an inclusion request")
    result = _answer_of(data, request, InclusionAnswer)
    assert isinstance(result, InclusionAnswer)
    if not verifiers:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_SIGNATURE, "the roster names no key that may sign the log"
        )
    try:
        checked = check_bundle(
            result.bundle,
            trusted_vkeys=[verifier.format() for verifier in verifiers],
            taskforce=request.taskforce,
        )
    except BundleError as exc:
        raise ResponseRejected(
            _BUNDLE_CODES[exc.bundle_code], f"the proof bundle is refused: {exc}"
        ) from None
    if query.msg_id and checked.entry.msg_id != query.msg_id:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the proof is for entry {checked.entry.msg_id.hex()}, not {query.msg_id.hex()}",
        )
    if not query.msg_id and checked.index != query.index:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the proof is for index {checked.index}, not {query.index}",
        )
    if query.size and checked.size != query.size:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the proof is against a tree of {checked.size} entries, not {query.size}",
        )
    if known is not None:
        _same_tree(known, checked.size, checked.root, request.taskforce, verifiers)
    return ProvenInclusion(checked, result.bundle)


def verify_consistency_response(
    data: bytes,
    request: ProofRequest,
    *,
    verifiers: Sequence[NoteVerifier],
    known: bytes | None = None,
) -> CheckedConsistency:
    """Check an answer to a consistency ``request``: both checkpoints signed by the log's
    ``verifiers``, of the sizes asked, and the proof from the old root to the new one.
    ``known`` is a signed checkpoint the client already holds of the old size (its root must
    be the old root). Raises ``AnswerRefused`` or ``ResponseRejected`` like
    ``verify_inclusion_response``."""
    query = request.query
    if not isinstance(query, ConsistencyQuery):
        raise RequestError(AnswerCode.E_MALFORMED, "not a consistency request")
    result = _answer_of(data, request, ConsistencyAnswer)
    assert isinstance(result, ConsistencyAnswer)
    old, _ = _verified_checkpoint(result.old_checkpoint, request.taskforce, verifiers)
    new, signers = _verified_checkpoint(result.new_checkpoint, request.taskforce, verifiers)
    if old.size != query.old_size:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the old checkpoint is of size {old.size}, not {query.old_size}",
        )
    if (query.new_size and new.size != query.new_size) or new.size < old.size:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the new checkpoint is of size {new.size}, not "
            f"{query.new_size or f'at least {old.size}'}",
        )
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, result.proof)
    except ProofError as exc:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_PROOF, f"the consistency proof is refused: {exc}"
        ) from None
    if known is not None:
        _same_tree(known, old.size, old.root_hash, request.taskforce, verifiers)
    return CheckedConsistency(
        old.size,
        new.size,
        old.root_hash,
        new.root_hash,
        result.old_checkpoint,
        result.new_checkpoint,
        signers,
    )


def _verified_checkpoint(
    note: bytes, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> tuple[Checkpoint, tuple[str, ...]]:
    if not verifiers:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_SIGNATURE, "the roster names no key that may sign the log"
        )
    try:
        return _open_checkpoint(note, verifiers, origin=checkpoint_origin(taskforce))
    except NoteError as exc:
        raise ResponseRejected(
            _NOTE_CODES.get(exc.note_code, ResponseCode.E_RESPONSE_SIGNATURE),
            f"a checkpoint in the answer is refused: {exc}",
        ) from None


def _same_tree(
    known: bytes, size: int, root: bytes, taskforce: str, verifiers: Sequence[NoteVerifier]
) -> None:
    """The answer's signed root at ``size`` must be the one of the checkpoint the client
    holds (which it verifies first: a note it cannot trust proves nothing either way)."""
    held, _ = _open_checkpoint(known, verifiers, origin=checkpoint_origin(taskforce))
    if held.size != size:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_MISMATCH,
            f"the answer is about a tree of {size} entries, the checkpoint held of {held.size}",
        )
    if held.root_hash != root:
        raise ResponseRejected(
            ResponseCode.E_RESPONSE_FORK,
            f"the signed root of the tree of {size} entries differs from the checkpoint held "
            f"(held {held.root_hash.hex()[:16]}..., answered {root.hex()[:16]}...)",
        )
