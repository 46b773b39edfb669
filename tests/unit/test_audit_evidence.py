"""Offline proof bundles (tfshare.audit.evidence): a bundle from a real log on disk checks, and
every way a bundle can be wrong is refused with the specific code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest

from tfshare.audit import merkle
from tfshare.audit.entry import LogEntry, encode_entry
from tfshare.audit.evidence import (
    FORMAT,
    BundleCode,
    BundleError,
    CheckedBundle,
    ProofBundle,
    check_bundle,
    decode_bundle,
    encode_bundle,
    make_bundle,
)
from tfshare.audit.logstore import AuditStore
from tfshare.audit.note import Checkpoint, NoteSigner, checkpoint_origin, sign_checkpoint
from tfshare.errors import ExitCode, TrustError

TASKFORCE: Final = "nl-north"
ORIGIN: Final = checkpoint_origin(TASKFORCE)
LOG_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"evidence test key").digest())
SECOND_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"second coordinator").digest())
OTHER_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"not the log's key").digest())
VKEY: Final = LOG_KEY.verifier.format()
SIZE: Final = 13
T0: Final = 1_795_000_000_000


def envelope(i: int) -> bytes:
    return b"sealed envelope %d" % i


def gen(i: int, **changes: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "entry_type": "message",
        "msg_id": hashlib.sha256(b"msg %d" % i).digest()[:16],
        "sender": "police",
        "sender_kid": b"kid-0001",
        "taskforce": TASKFORCE,
        "channel": "ops",
        "ts_ms": T0 + i,
        "env_sha256": hashlib.sha256(envelope(i)).digest(),
        "refs": [],
        "observed_ms": T0 + i + 5,
    }
    fields.update(changes)
    return LogEntry(**fields)


def sign(size: int, root: bytes, *keys: NoteSigner, origin: str = ORIGIN) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, root), list(keys) or [LOG_KEY])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(tmp_path / "audit.db") as opened:
        opened.append([gen(i) for i in range(SIZE)])
        yield opened


@pytest.fixture
def note(store: AuditStore) -> bytes:
    return sign(SIZE, store.root())


@pytest.fixture
def bundle(store: AuditStore, note: bytes) -> ProofBundle:
    return make_bundle(store, 5, note, [VKEY], TASKFORCE)


def refused(code: BundleCode, bundle: ProofBundle | bytes, **kwargs: Any) -> BundleError:
    kwargs.setdefault("trusted_vkeys", [VKEY])
    kwargs.setdefault("taskforce", TASKFORCE)
    with pytest.raises(BundleError) as caught:
        check_bundle(bundle, **kwargs)
    assert caught.value.code == code.value, caught.value
    assert caught.value.hint
    return caught.value


def replace(bundle: ProofBundle, **changes: Any) -> ProofBundle:
    return msgspec.structs.replace(bundle, **changes)


# --- valid bundles ----------------------------------------------------------------------------


def test_a_bundle_from_the_log_checks_offline(bundle: ProofBundle, store: AuditStore) -> None:
    data = encode_bundle(bundle)
    checked = check_bundle(data, trusted_vkeys=[VKEY], taskforce=TASKFORCE)
    assert checked == CheckedBundle(
        entry=gen(5),
        index=5,
        size=SIZE,
        root=store.root(),
        origin=ORIGIN,
        signers=(ORIGIN,),
        self_asserted=False,
    )
    assert checked.trust == "trusted"
    # The struct itself, the envelope it logged, and no expectation of the task force.
    assert check_bundle(bundle, trusted_vkeys=[VKEY], taskforce=None) == checked
    assert check_bundle(data, trusted_vkeys=[VKEY], taskforce=None, envelope=envelope(5)) == (
        checked
    )


def test_the_encoding_is_a_canonical_msgpack_array(bundle: ProofBundle, store: AuditStore) -> None:
    data = encode_bundle(bundle)
    assert msgspec.msgpack.decode(data) == [
        FORMAT,
        TASKFORCE,
        encode_entry(gen(5)),
        5,
        SIZE,
        store.inclusion_proof(5, SIZE),
        bundle.checkpoint,
        [VKEY],
    ]
    assert decode_bundle(data) == bundle
    assert encode_bundle(decode_bundle(data)) == data


def test_without_trusted_keys_the_result_is_self_asserted(bundle: ProofBundle) -> None:
    checked = check_bundle(encode_bundle(bundle), trusted_vkeys=None, taskforce=TASKFORCE)
    assert checked.self_asserted
    assert checked.trust == "self-asserted"
    assert checked.entry == gen(5)


def test_every_entry_against_every_checkpoint(store: AuditStore) -> None:
    data = [encode_entry(gen(i)) for i in range(SIZE)]
    for size in range(1, SIZE + 1):
        note = sign(size, merkle.root(data[:size]))
        for index in range(size):
            bundle = make_bundle(store, index, note, [VKEY], TASKFORCE)
            checked = check_bundle(
                encode_bundle(bundle),
                trusted_vkeys=[VKEY],
                taskforce=TASKFORCE,
                envelope=envelope(index),
            )
            assert (checked.index, checked.size, checked.entry) == (index, size, gen(index))
        with pytest.raises(BundleError) as caught:
            make_bundle(store, size, note, [VKEY], TASKFORCE)
        assert caught.value.code == "E_BUNDLE_INDEX"


def test_two_coordinator_keys_under_the_log_name(store: AuditStore) -> None:
    note = sign(SIZE, store.root(), LOG_KEY, SECOND_KEY)
    second = SECOND_KEY.verifier.format()
    bundle = make_bundle(store, 0, note, [VKEY, second], TASKFORCE)
    assert bundle.vkeys == [VKEY, second]
    for trusted in ([VKEY], [second], [second, VKEY]):
        checked = check_bundle(encode_bundle(bundle), trusted_vkeys=trusted, taskforce=TASKFORCE)
        assert checked.signers == (ORIGIN,)


def test_the_bundle_lists_only_the_keys_that_signed(store: AuditStore) -> None:
    """make_bundle takes all the log's keys (every coordinator's) and keeps the signers."""
    second, other = SECOND_KEY.verifier.format(), OTHER_KEY.verifier.format()
    note = sign(SIZE, store.root(), SECOND_KEY)
    bundle = make_bundle(store, 3, note, [VKEY, second, other], TASKFORCE)
    assert bundle.vkeys == [second]
    checked = check_bundle(bundle, trusted_vkeys=[VKEY, second, other], taskforce=TASKFORCE)
    assert checked.signers == (ORIGIN,)
    refused(BundleCode.E_BUNDLE_SIGNATURE, bundle, trusted_vkeys=[VKEY, other])
    # A listed key whose signature is there but broken is not skipped: the note is refused.
    altered = note.replace(b"\n13\n", b"\n12\n", 1)
    with pytest.raises(BundleError) as caught:
        make_bundle(store, 3, altered, [VKEY, second], TASKFORCE)
    assert caught.value.code == "E_BUNDLE_SIGNATURE"


def test_trusted_keys_may_be_written_in_any_accepted_spelling(bundle: ProofBundle) -> None:
    name, hex8, key = VKEY.split("+")
    upper = f"{name}+{hex8.upper()}+{key}"
    assert check_bundle(bundle, trusted_vkeys=[upper, VKEY], taskforce=TASKFORCE).signers == (
        ORIGIN,
    )


# --- refusals --------------------------------------------------------------------------------


def test_bundle_errors_are_trust_errors() -> None:
    error = refused(BundleCode.E_BUNDLE_MALFORMED, b"")
    assert isinstance(error, TrustError)
    assert error.exit_code is ExitCode.TRUST
    assert error.bundle_code is BundleCode.E_BUNDLE_MALFORMED


def test_a_bundle_for_another_task_force(bundle: ProofBundle, store: AuditStore) -> None:
    refused(BundleCode.E_BUNDLE_TASKFORCE, bundle, taskforce="be-south")
    refused(BundleCode.E_BUNDLE_TASKFORCE, bundle, taskforce="Not A Name")
    # Relabelled: the checkpoint's origin still names nl-north.
    relabelled = replace(bundle, taskforce="be-south")
    refused(BundleCode.E_BUNDLE_TASKFORCE, relabelled, taskforce=None)
    refused(BundleCode.E_BUNDLE_TASKFORCE, relabelled, taskforce=None, trusted_vkeys=None)
    # A checkpoint (and key) of the other task force's log, with an nl-north bundle label.
    other = checkpoint_origin("be-south")
    other_key = NoteSigner(other, hashlib.sha256(b"be key").digest())
    other_note = sign(SIZE, store.root(), other_key, origin=other)
    refused(
        BundleCode.E_BUNDLE_TASKFORCE,
        replace(bundle, checkpoint=other_note, vkeys=[other_key.verifier.format()]),
        trusted_vkeys=None,
    )


def test_an_entry_of_another_task_force_in_the_log(store: AuditStore) -> None:
    store.append([gen(SIZE, taskforce="be-south")])
    note = sign(SIZE + 1, store.root())
    with pytest.raises(BundleError) as caught:
        make_bundle(store, SIZE, note, [VKEY], TASKFORCE)
    assert caught.value.code == "E_BUNDLE_TASKFORCE"


def test_an_index_past_the_size(bundle: ProofBundle, store: AuditStore, note: bytes) -> None:
    for index in (SIZE, SIZE + 1, 2**40):
        refused(BundleCode.E_BUNDLE_INDEX, replace(bundle, index=index))
        with pytest.raises(BundleError) as caught:
            make_bundle(store, index, note, [VKEY], TASKFORCE)
        assert caught.value.code == "E_BUNDLE_INDEX"
    with pytest.raises(BundleError) as caught:
        make_bundle(store, -1, note, [VKEY], TASKFORCE)
    assert caught.value.code == "E_BUNDLE_INDEX"
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, index=-1))


def test_another_index_inside_the_tree(bundle: ProofBundle) -> None:
    for index in (0, 4, 6, 12):
        refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, index=index))


def test_a_checkpoint_signed_by_an_unknown_key(store: AuditStore, bundle: ProofBundle) -> None:
    forged_note = sign(SIZE, store.root(), OTHER_KEY)
    forged = replace(bundle, checkpoint=forged_note, vkeys=[OTHER_KEY.verifier.format()])
    error = refused(BundleCode.E_BUNDLE_SIGNATURE, forged)
    assert "E_NOTE_UNKNOWN_KEY" in error.message
    # Internally sound, so without trusted keys it passes, but only as self-asserted.
    assert check_bundle(forged, trusted_vkeys=None, taskforce=TASKFORCE).self_asserted
    # The bundle's listed key must really have signed.
    refused(BundleCode.E_BUNDLE_SIGNATURE, replace(bundle, checkpoint=forged_note))
    refused(BundleCode.E_BUNDLE_SIGNATURE, replace(bundle, vkeys=[OTHER_KEY.verifier.format()]))
    refused(
        BundleCode.E_BUNDLE_SIGNATURE,
        replace(bundle, vkeys=[VKEY, OTHER_KEY.verifier.format()]),
    )
    with pytest.raises(BundleError) as caught:
        make_bundle(store, 5, forged_note, [VKEY], TASKFORCE)
    assert caught.value.code == "E_BUNDLE_SIGNATURE"


def test_an_altered_checkpoint(bundle: ProofBundle) -> None:
    altered = bundle.checkpoint.replace(b"\n13\n", b"\n12\n", 1)
    assert altered != bundle.checkpoint
    error = refused(BundleCode.E_BUNDLE_SIGNATURE, replace(bundle, checkpoint=altered))
    assert "E_NOTE_BAD_SIG" in error.message
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, checkpoint=b"no note"))


def test_bad_trusted_keys_are_refused(bundle: ProofBundle) -> None:
    for trusted in ([], ["not a key"], [VKEY[:-2]], VKEY):
        refused(BundleCode.E_BUNDLE_SIGNATURE, bundle, trusted_vkeys=trusted)


def test_bundle_keys_must_be_canonical_and_listed_once(bundle: ProofBundle) -> None:
    name, hex8, key = VKEY.split("+")
    for vkeys in ([f"{name}+{hex8.upper()}+{key}"], [VKEY, VKEY], ["garbage"], []):
        refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, vkeys=vkeys))


def test_an_envelope_that_is_not_the_logged_one(bundle: ProofBundle) -> None:
    for other in (envelope(6), envelope(5) + b"\x00", b""):
        error = refused(BundleCode.E_BUNDLE_ENVELOPE, bundle, envelope=other)
        assert "entry 5" in error.message


def test_a_changed_entry_or_proof(bundle: ProofBundle) -> None:
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, entry=encode_entry(gen(6))))
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, entry=encode_entry(gen(5, ts_ms=1))))
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, entry=b"\x90"))
    proof = list(bundle.proof)
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, proof=proof[:-1]))
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, proof=[*proof, proof[0]]))
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, proof=[bytes(32), *proof[1:]]))
    refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, proof=proof[::-1]))
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, proof=[proof[0][:31], *proof[1:]]))


def test_a_size_that_is_not_the_checkpoints(bundle: ProofBundle) -> None:
    for size in (SIZE - 1, SIZE + 1):
        error = refused(BundleCode.E_BUNDLE_PROOF, replace(bundle, size=size))
        assert "checkpoint" in error.message


def test_a_log_that_is_not_the_checkpoints(store: AuditStore, tmp_path: Path) -> None:
    foreign_root = merkle.root([encode_entry(gen(i, channel="intel")) for i in range(SIZE)])
    foreign_note = sign(SIZE, foreign_root)
    with pytest.raises(BundleError) as caught:
        make_bundle(store, 2, foreign_note, [VKEY], TASKFORCE)
    assert caught.value.code == "E_BUNDLE_PROOF"
    with AuditStore(tmp_path / "short.db") as short:
        short.append([gen(i) for i in range(SIZE - 1)])
        with pytest.raises(BundleError) as caught:
            make_bundle(short, 2, sign(SIZE, store.root()), [VKEY], TASKFORCE)
        assert caught.value.code == "E_BUNDLE_PROOF"
        assert "fewer" in caught.value.message


def test_make_bundle_refuses_bad_arguments(store: AuditStore, note: bytes) -> None:
    cases = [
        ((store, 1, note, [VKEY], "Bad Name"), BundleCode.E_BUNDLE_TASKFORCE),
        ((store, 1, note, [VKEY], "be-south"), BundleCode.E_BUNDLE_TASKFORCE),
        ((store, 1, note, [], TASKFORCE), BundleCode.E_BUNDLE_SIGNATURE),
        ((store, 1, b"\xff", [VKEY], TASKFORCE), BundleCode.E_BUNDLE_MALFORMED),
    ]
    for args, code in cases:
        with pytest.raises(BundleError) as caught:
            make_bundle(*args)
        assert caught.value.code == code.value


def test_malformed_bundle_bytes(bundle: ProofBundle) -> None:
    data = encode_bundle(bundle)
    array = msgspec.msgpack.decode(data)
    cases = {
        "empty": b"",
        "garbage": b"\xc1" * 40,
        "truncated": data[:-1],
        "trailing": data + b"\x00",
        "wrong format": msgspec.msgpack.encode(["tfshare-proof/2", *array[1:]]),
        "seven fields": msgspec.msgpack.encode(array[:7]),
        "nine fields": msgspec.msgpack.encode([*array, 0]),
        "a map": msgspec.msgpack.encode({"format": FORMAT}),
        "index as str": msgspec.msgpack.encode([*array[:3], "5", *array[4:]]),
        "too long": b"\x00" * (200 * 1024),
        "non-canonical": data.replace(b"\x05\x0d", b"\xcc\x05\x0d", 1),
    }
    assert msgspec.msgpack.decode(cases["non-canonical"]) == array
    for case, raw in cases.items():
        with pytest.raises(BundleError) as caught:
            decode_bundle(raw)
        assert caught.value.code == "E_BUNDLE_MALFORMED", case
        refused(BundleCode.E_BUNDLE_MALFORMED, raw)


def test_objects_that_are_not_bundles(bundle: ProofBundle) -> None:
    refused(BundleCode.E_BUNDLE_MALFORMED, "a string")  # type: ignore[arg-type]
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, index="5"))
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, proof=[object()]))
    refused(BundleCode.E_BUNDLE_MALFORMED, replace(bundle, size=2**64))
