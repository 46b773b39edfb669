"""Proof requests and answers (tfshare.audit.proofs): the wire formats decode strictly, the
service answers from a real log on disk with real signed checkpoints, its proofs verify with
the roster's log keys, and every way an answer can be wrong -- damaged, about something else,
signed by a stranger, from a forked log -- is refused with its specific code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tfkit import TaskForce

from tfshare.audit.entry import LogEntry
from tfshare.audit.evidence import check_bundle, decode_bundle, encode_bundle
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import NoteVerifier, checkpoint_origin
from tfshare.audit.proofs import (
    MAX_REQUEST_SIZE,
    REQUEST_FORMAT,
    RESPONSE_FORMAT,
    AnswerCode,
    AnswerRefused,
    ConsistencyAnswer,
    ErrorAnswer,
    InclusionAnswer,
    InclusionQuery,
    ProofRequest,
    ProofResponse,
    RequestError,
    ResponseCode,
    ResponseRejected,
    answer,
    consistency_request,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    handle,
    inclusion_request,
    verify_consistency_response,
    verify_inclusion_response,
)
from tfshare.audit.service import IdentitySigner, log_verifiers, sign_next_checkpoint
from tfshare.errors import ExitCode
from tfshare.keys import Identity

TASKFORCE: Final = "nl-north"
ORIGIN: Final = checkpoint_origin(TASKFORCE)
T0: Final = 1_795_000_000_000
CHECKPOINTS: Final = (3, 7, 10)  # signed sizes; entries 10 and 11 are not signed yet
SIZE: Final = 12


def gen(i: int, fork: bool = False) -> LogEntry:
    tag = b"fork %d" if fork else b"msg %d"
    return LogEntry(
        entry_type="message",
        msg_id=hashlib.sha256(tag % i).digest()[:16],
        sender="police",
        sender_kid=b"kid-0001",
        taskforce=TASKFORCE,
        channel="alerts",
        ts_ms=T0 + i,
        env_sha256=hashlib.sha256(b"envelope " + tag % i).digest(),
        refs=[],
        observed_ms=T0 + i + 5,
    )


def build_log(path: Path, signer: Identity, *, fork: bool = False) -> AuditStore:
    """A real log on disk: SIZE entries, signed checkpoints at CHECKPOINTS by ``signer``
    (each checked to extend the previous one, as the service does)."""
    store = AuditStore(path)
    log_key = IdentitySigner(signer, ORIGIN)
    verifiers = [NoteVerifier.from_public_key(ORIGIN, signer.sign_pk)]
    done = 0
    for size in (*CHECKPOINTS, SIZE):
        store.append([gen(i, fork) for i in range(done, size)])
        done = size
        if size in CHECKPOINTS:
            assert sign_next_checkpoint(store, log_key, verifiers, now_ms=T0 + size) is not None
    return store


@pytest.fixture(scope="module")
def log(taskforce: TaskForce, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditStore]:
    store = build_log(tmp_path_factory.mktemp("proofs") / "audit.db", taskforce.ids["coord"])
    yield store
    store.close()


@pytest.fixture(scope="module")
def keys(taskforce: TaskForce) -> list[NoteVerifier]:
    """The log's keys as every member derives them from the verified roster."""
    return log_verifiers(taskforce.trusted())


def ask(store: AuditStore, request: ProofRequest, keys: list[NoteVerifier]) -> bytes:
    return answer(store, encode_request(request), taskforce=TASKFORCE, verifiers=keys)


def note_at(store: AuditStore, size: int) -> bytes:
    return dict(store.checkpoints())[size]


# --- wire formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        inclusion_request(TASKFORCE, msg_id=b"\x01" * 16),
        inclusion_request(TASKFORCE, msg_id=b"\x01" * 16, size=7),
        inclusion_request(TASKFORCE, index=0),
        inclusion_request(TASKFORCE, index=2**64 - 1, size=2**64 - 1),
        consistency_request(TASKFORCE, 1),
        consistency_request(TASKFORCE, 3, 7),
        consistency_request(TASKFORCE, 7, 7),
    ],
)
def test_requests_round_trip(request_: ProofRequest) -> None:
    data = encode_request(request_)
    assert len(data) <= MAX_REQUEST_SIZE
    assert decode_request(data) == request_
    assert encode_request(decode_request(data)) == data


def test_request_wire_format_is_the_documented_array() -> None:
    """["tfshare-proof-request/1", taskforce, ["inclusion", msg_id, index, size]] and
    [..., ["consistency", old_size, new_size]]: what docs/AUDIT-LOG.md describes."""
    by_id = msgspec.msgpack.decode(encode_request(inclusion_request(TASKFORCE, msg_id=b"m" * 16)))
    assert by_id == [REQUEST_FORMAT, TASKFORCE, ["inclusion", b"m" * 16, 0, 0]]
    by_index = msgspec.msgpack.decode(encode_request(inclusion_request(TASKFORCE, index=5, size=7)))
    assert by_index == [REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", 5, 7]]
    consistency = msgspec.msgpack.decode(encode_request(consistency_request(TASKFORCE, 3)))
    assert consistency == [REQUEST_FORMAT, TASKFORCE, ["consistency", 3, 0]]


def raw(*items: Any) -> bytes:
    return msgspec.msgpack.encode(list(items))


MALFORMED: Final = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "a map": msgspec.msgpack.encode({"format": REQUEST_FORMAT}),
    "wrong format": raw("tfshare-proof-request/2", TASKFORCE, ["consistency", 3, 0]),
    "unknown query": raw(REQUEST_FORMAT, TASKFORCE, ["deletion", 3, 0]),
    "bad taskforce name": raw(REQUEST_FORMAT, "NL North", ["consistency", 3, 0]),
    "short msg_id": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"\x01" * 5, 0, 0]),
    "long msg_id": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"\x01" * 17, 0, 0]),
    "msg_id and index": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"\x01" * 16, 4, 0]),
    "negative index": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", -1, 0]),
    "float size": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", 1, 2.0]),
    "nil size": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", 1, None]),
    "text msg_id": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", "a" * 16, 0, 0]),
    "missing field": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", 1]),
    "extra field": raw(REQUEST_FORMAT, TASKFORCE, ["inclusion", b"", 1, 0, 0]),
    "extra top-level field": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 3, 0], 1),
    "consistency from 0": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 0, 5]),
    "old after new": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 7, 3]),
    # 3 written as a uint16: decodes to the same request, but is not its one encoding.
    "non-canonical": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 1, 0]).replace(
        b"\xabconsistency\x01", b"\xabconsistency\xcd\x00\x01"
    ),
    "trailing bytes": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 3, 0]) + b"\x00",
    "oversized": raw(REQUEST_FORMAT, TASKFORCE, ["consistency", 3, 0], "x" * MAX_REQUEST_SIZE),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_are_refused_with_E_MALFORMED(
    name: str, log: AuditStore, keys: list[NoteVerifier]
) -> None:
    data = MALFORMED[name]
    with pytest.raises(RequestError) as caught:
        decode_request(data)
    assert caught.value.code == "E_MALFORMED"
    assert caught.value.exit_code == ExitCode.ERROR
    # ... and the service answers it with that code instead of failing.
    answered = handle(log, data, taskforce=TASKFORCE, verifiers=keys)
    assert answered.code == AnswerCode.E_MALFORMED
    response = decode_response(answered.data)
    assert isinstance(response.answer, ErrorAnswer)
    assert response.answer.code == "E_MALFORMED"


def test_a_request_that_cannot_be_sent_is_refused_before_sending() -> None:
    with pytest.raises(RequestError) as caught:
        inclusion_request(TASKFORCE, msg_id=b"\x01" * 16, index=3)
    assert caught.value.code == "E_MALFORMED"
    with pytest.raises(RequestError):
        inclusion_request(TASKFORCE, msg_id=b"short")
    with pytest.raises(RequestError):
        consistency_request(TASKFORCE, 0)
    with pytest.raises(RequestError):
        consistency_request(TASKFORCE, 5, 2)
    with pytest.raises(RequestError):
        inclusion_request(TASKFORCE, index=2**64)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_are_refused_with_a_code(data: bytes) -> None:
    try:
        request = decode_request(data)
    except RequestError as exc:
        assert exc.code == "E_MALFORMED"
    else:
        assert encode_request(request) == data


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=20)
    | st.sampled_from([REQUEST_FORMAT, TASKFORCE, "inclusion", "consistency"]),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)


@given(
    st.lists(values, max_size=5)
    | st.tuples(st.just(REQUEST_FORMAT), st.just(TASKFORCE), st.lists(values, max_size=5)).map(list)
)
def test_any_msgpack_value_decodes_or_is_refused_with_a_code(value: list[Any]) -> None:
    try:
        request = decode_request(msgspec.msgpack.encode(value))
    except RequestError as exc:
        assert exc.code == "E_MALFORMED"
    else:
        assert request.format == REQUEST_FORMAT


@given(st.binary(max_size=300))
def test_the_service_answers_any_bytes_without_raising(data: bytes) -> None:
    # A module-scoped store cannot be a hypothesis argument; an empty log on no disk path is
    # not what is tested here: the answer to junk never reaches the store.
    response = decode_response(answer(_EmptyLog(), data, taskforce=TASKFORCE, verifiers=[]))
    assert response.format == RESPONSE_FORMAT
    assert isinstance(response.answer, ErrorAnswer)


class _EmptyLog:
    size = 0

    def entry_bytes(self, index: int) -> bytes:
        raise AssertionError

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        raise AssertionError

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        raise AssertionError

    def find(self, msg_id: bytes) -> list[tuple[int, LogEntry]]:
        return []

    def checkpoints(self) -> list[tuple[int, bytes]]:
        return []


# --- answers that verify ---------------------------------------------------------------------


def test_inclusion_by_msg_id_against_the_latest_checkpoint_verifies(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    request = inclusion_request(TASKFORCE, msg_id=gen(4).msg_id)
    proven = verify_inclusion_response(ask(log, request, keys), request, verifiers=keys)
    assert proven.checked.entry == gen(4)
    assert (proven.checked.index, proven.checked.size) == (4, 10)
    assert proven.checked.root == log.root_at(10)
    assert not proven.checked.self_asserted
    assert proven.checked.signers == (ORIGIN,)
    # The bundle is the offline evidence format: 'audit check' accepts exactly these bytes.
    vkeys = [k.format() for k in keys]
    assert check_bundle(proven.bundle, trusted_vkeys=vkeys, taskforce=TASKFORCE).index == 4


def test_inclusion_by_index_and_at_a_held_checkpoint_verifies(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    request = inclusion_request(TASKFORCE, index=2, size=3)
    proven = verify_inclusion_response(
        ask(log, request, keys), request, verifiers=keys, known=note_at(log, 3)
    )
    assert (proven.checked.index, proven.checked.size) == (2, 3)
    assert proven.checked.entry == gen(2)


def test_consistency_between_signed_checkpoints_verifies(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    for old, new, expect in ((3, 7, 7), (3, 0, 10), (7, 10, 10), (7, 7, 7)):
        request = consistency_request(TASKFORCE, old, new)
        checked = verify_consistency_response(
            ask(log, request, keys), request, verifiers=keys, known=note_at(log, old)
        )
        assert (checked.old_size, checked.new_size) == (old, expect)
        assert (checked.old_root, checked.new_root) == (log.root_at(old), log.root_at(expect))
        assert checked.new_checkpoint == note_at(log, expect)
        assert checked.signers == (ORIGIN,)


def test_response_wire_format_is_the_documented_array(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    data = ask(log, consistency_request(TASKFORCE, 3, 7), keys)
    fmt, taskforce, (kind, old, new, proof) = msgspec.msgpack.decode(data)
    assert (fmt, taskforce, kind) == (RESPONSE_FORMAT, TASKFORCE, "consistency")
    assert (old, new) == (note_at(log, 3), note_at(log, 7))
    assert proof == log.consistency_proof(3, 7)
    data = ask(log, inclusion_request(TASKFORCE, index=1), keys)
    fmt, taskforce, (kind, bundle) = msgspec.msgpack.decode(data)
    assert kind == "inclusion" and decode_bundle(bundle).index == 1
    data = ask(log, inclusion_request(TASKFORCE, index=99), keys)
    assert msgspec.msgpack.decode(data)[2][:2] == ["error", "E_PAST_SIZE"]


# --- what the service refuses, with its code -------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (inclusion_request(TASKFORCE, msg_id=b"\x42" * 16), AnswerCode.E_NOT_FOUND),
        (inclusion_request(TASKFORCE, index=SIZE), AnswerCode.E_PAST_SIZE),
        (inclusion_request(TASKFORCE, index=1000), AnswerCode.E_PAST_SIZE),
        (inclusion_request(TASKFORCE, index=1, size=SIZE + 1), AnswerCode.E_PAST_SIZE),
        (inclusion_request(TASKFORCE, index=5, size=3), AnswerCode.E_PAST_SIZE),
        (inclusion_request(TASKFORCE, index=SIZE - 1), AnswerCode.E_NO_CHECKPOINT),
        (inclusion_request(TASKFORCE, index=1, size=5), AnswerCode.E_NO_CHECKPOINT),
        (inclusion_request("nl-south", index=1), AnswerCode.E_TASKFORCE),
        (consistency_request(TASKFORCE, SIZE + 1), AnswerCode.E_PAST_SIZE),
        (consistency_request(TASKFORCE, 3, SIZE + 5), AnswerCode.E_PAST_SIZE),
        (consistency_request(TASKFORCE, 4), AnswerCode.E_NO_CHECKPOINT),
        (consistency_request(TASKFORCE, 3, 8), AnswerCode.E_NO_CHECKPOINT),
        (consistency_request(TASKFORCE, 11), AnswerCode.E_NO_CHECKPOINT),
    ],
)
def test_the_service_refuses_with_the_specific_code(
    request_: ProofRequest, code: AnswerCode, log: AuditStore, keys: list[NoteVerifier]
) -> None:
    answered = handle(log, encode_request(request_), taskforce=TASKFORCE, verifiers=keys)
    assert answered.code == code
    verify = (
        verify_inclusion_response
        if isinstance(request_.query, InclusionQuery)
        else verify_consistency_response
    )
    with pytest.raises(AnswerRefused) as caught:
        verify(answered.data, request_, verifiers=keys)
    assert caught.value.code == code.value
    assert caught.value.hint  # people are told what to do


def test_an_empty_log_has_no_checkpoint_to_prove_against(
    tmp_path: Path, keys: list[NoteVerifier]
) -> None:
    with AuditStore(tmp_path / "empty.db") as empty:
        answered = handle(
            empty,
            encode_request(inclusion_request(TASKFORCE, index=0)),
            taskforce=TASKFORCE,
            verifiers=keys,
        )
    assert answered.code == AnswerCode.E_PAST_SIZE


def test_a_log_whose_checkpoints_do_not_verify_is_unavailable_not_a_crash(
    taskforce: TaskForce, log: AuditStore
) -> None:
    """The service's keys do not match its stored checkpoints (a roster change it missed, a
    swapped file): it answers E_UNAVAILABLE and hands out nothing unverified."""
    stranger = log_verifiers_of(taskforce.ids["outsider"])
    for request_ in (inclusion_request(TASKFORCE, index=1), consistency_request(TASKFORCE, 3)):
        answered = handle(log, encode_request(request_), taskforce=TASKFORCE, verifiers=stranger)
        assert answered.code == AnswerCode.E_UNAVAILABLE


def log_verifiers_of(identity: Identity) -> list[NoteVerifier]:
    return [NoteVerifier.from_public_key(ORIGIN, identity.sign_pk)]


# --- answers a client refuses, with its code -------------------------------------------------


def flipped(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def test_a_flipped_bit_anywhere_in_an_answer_is_refused(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    """Every single bit of an inclusion and a consistency answer, flipped: never accepted,
    always a ResponseRejected with one of the documented codes."""
    inclusion = inclusion_request(TASKFORCE, msg_id=gen(5).msg_id)
    consistency = consistency_request(TASKFORCE, 3, 10)
    cases = [
        (inclusion, ask(log, inclusion, keys), verify_inclusion_response),
        (consistency, ask(log, consistency, keys), verify_consistency_response),
    ]
    codes: set[str] = set()
    for request_, data, verify in cases:
        verify(data, request_, verifiers=keys)
        for bit in range(8 * len(data)):
            with pytest.raises(ResponseRejected) as caught:
                verify(flipped(data, bit), request_, verifiers=keys)
            codes.add(str(caught.value.code))
            assert caught.value.exit_code == ExitCode.TRUST
    assert codes <= {code.value for code in ResponseCode}
    assert {"E_RESPONSE_MALFORMED", "E_RESPONSE_PROOF", "E_RESPONSE_SIGNATURE"} <= codes


def reject_code(
    data: bytes, request_: ProofRequest, keys: list[NoteVerifier], known: bytes | None = None
) -> str:
    verify = (
        verify_inclusion_response
        if isinstance(request_.query, InclusionQuery)
        else verify_consistency_response
    )
    with pytest.raises(ResponseRejected) as caught:
        verify(data, request_, verifiers=keys, known=known)
    return str(caught.value.code)


def test_an_answer_about_something_else_is_E_RESPONSE_MISMATCH(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    """Valid, signed proofs -- of another entry, index, size, kind or task force -- are
    not answers to the question asked."""
    other_entry = ask(log, inclusion_request(TASKFORCE, msg_id=gen(4).msg_id), keys)
    assert reject_code(other_entry, inclusion_request(TASKFORCE, msg_id=gen(2).msg_id), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    other_index = ask(log, inclusion_request(TASKFORCE, index=4), keys)
    assert reject_code(other_index, inclusion_request(TASKFORCE, index=2), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    latest = ask(log, inclusion_request(TASKFORCE, index=2), keys)
    assert reject_code(latest, inclusion_request(TASKFORCE, index=2, size=3), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    to_latest = ask(log, consistency_request(TASKFORCE, 3), keys)
    assert reject_code(to_latest, consistency_request(TASKFORCE, 3, 7), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    assert reject_code(to_latest, consistency_request(TASKFORCE, 7), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    assert reject_code(to_latest, inclusion_request(TASKFORCE, index=1), keys) == (
        "E_RESPONSE_MISMATCH"
    )
    south = inclusion_request("nl-south", index=1)
    assert reject_code(latest, south, keys) == "E_RESPONSE_MISMATCH"


def test_an_answer_signed_by_a_key_outside_the_roster_is_E_RESPONSE_SIGNATURE(
    taskforce: TaskForce, tmp_path: Path, keys: list[NoteVerifier]
) -> None:
    """An agency that is no coordinator or auditor (here: the outsider) runs a log of its own
    under the task force's log name: its proofs are internally sound, and refused."""
    rogue_key = taskforce.ids["outsider"]
    with build_log(tmp_path / "rogue.db", rogue_key) as rogue:
        own = log_verifiers_of(rogue_key)
        for request_ in (inclusion_request(TASKFORCE, index=1), consistency_request(TASKFORCE, 3)):
            data = ask(rogue, request_, own)
            assert reject_code(data, request_, keys) == "E_RESPONSE_SIGNATURE"


def test_a_forked_log_is_E_RESPONSE_FORK_against_a_checkpoint_held(
    taskforce: TaskForce, tmp_path: Path, log: AuditStore, keys: list[NoteVerifier]
) -> None:
    """The legitimate key signs a second, different log (a split view): each answer from it
    verifies on its own, but not against the checkpoint a member already holds."""
    held = note_at(log, 3)
    with build_log(tmp_path / "fork.db", taskforce.ids["coord"], fork=True) as fork:
        consistency = consistency_request(TASKFORCE, 3)
        data = ask(fork, consistency, keys)
        verify_consistency_response(data, consistency, verifiers=keys)  # sound on its own
        assert reject_code(data, consistency, keys, known=held) == "E_RESPONSE_FORK"
        inclusion = inclusion_request(TASKFORCE, index=1, size=3)
        data = ask(fork, inclusion, keys)
        assert reject_code(data, inclusion, keys, known=held) == "E_RESPONSE_FORK"


def test_a_proof_that_does_not_lead_to_the_signed_root_is_E_RESPONSE_PROOF(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    consistency = consistency_request(TASKFORCE, 3, 10)
    response = decode_response(ask(log, consistency, keys))
    assert isinstance(response.answer, ConsistencyAnswer)
    wrong = [hashlib.sha256(b"not a node").digest(), *response.answer.proof[1:]]
    forged = encode_response(
        msgspec.structs.replace(
            response, answer=msgspec.structs.replace(response.answer, proof=wrong)
        )
    )
    assert reject_code(forged, consistency, keys) == "E_RESPONSE_PROOF"
    shorter = response.answer.proof[:-1]
    forged = encode_response(
        msgspec.structs.replace(
            response, answer=msgspec.structs.replace(response.answer, proof=shorter)
        )
    )
    assert reject_code(forged, consistency, keys) == "E_RESPONSE_PROOF"

    inclusion = inclusion_request(TASKFORCE, index=6)
    response = decode_response(ask(log, inclusion, keys))
    assert isinstance(response.answer, InclusionAnswer)
    bundle = decode_bundle(response.answer.bundle)
    moved = msgspec.structs.replace(bundle, entry=log.entry_bytes(7))  # another entry's bytes
    forged = encode_response(
        msgspec.structs.replace(response, answer=InclusionAnswer(encode_bundle(moved)))
    )
    assert reject_code(forged, inclusion_request(TASKFORCE, index=6), keys) == "E_RESPONSE_PROOF"


def test_junk_is_E_RESPONSE_MALFORMED_and_an_error_answer_is_no_proof(
    keys: list[NoteVerifier],
) -> None:
    request_ = inclusion_request(TASKFORCE, index=1)
    for junk in (b"", b"\x00" * 10, raw(RESPONSE_FORMAT, TASKFORCE, ["inclusion"])):
        assert reject_code(junk, request_, keys) == "E_RESPONSE_MALFORMED"
    # An unknown error code from a newer service is passed on as it came.
    refusal = encode_response(
        ProofResponse(RESPONSE_FORMAT, TASKFORCE, ErrorAnswer("E_SOMETHING_NEW", "no"))
    )
    with pytest.raises(AnswerRefused) as caught:
        verify_inclusion_response(refusal, request_, verifiers=keys)
    assert caught.value.code == "E_SOMETHING_NEW"
    # Error messages are printable ASCII only: nothing a terminal would interpret.
    escape = raw(RESPONSE_FORMAT, TASKFORCE, ["error", "E_NOT_FOUND", "\x1b[2Jgone"])
    assert reject_code(escape, request_, keys) == "E_RESPONSE_MALFORMED"


def test_no_log_keys_in_the_roster_means_nothing_verifies(
    log: AuditStore, keys: list[NoteVerifier]
) -> None:
    for request_ in (inclusion_request(TASKFORCE, index=1), consistency_request(TASKFORCE, 3)):
        assert reject_code(ask(log, request_, keys), request_, []) == "E_RESPONSE_SIGNATURE"
